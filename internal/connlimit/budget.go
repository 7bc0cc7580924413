package connlimit

import (
	"errors"
	"fmt"
)

const (
	// MinReserve is the fewest descriptors kept away from clients: the
	// peer port's connections (a few per range and peer), every range's
	// log segments and bolt files, the runtime's own, and headroom for
	// snapshots and range splits.
	MinReserve = 256
	// RefusalSlots is how many refused connections one Listener may be
	// answering at once (see Listener); they are descriptors too.
	RefusalSlots = 16
)

// Budget is how a process's descriptors are shared between its client
// ports and everything else.
type Budget struct {
	// Limit is the process's RLIMIT_NOFILE.
	Limit int
	// PerPort is how many connections each client port may hold.
	PerPort int
	// Reserve is what is left for the peer port, the disk and the runtime
	// when every client port is full and refusing: at least MinReserve.
	Reserve int
}

// ErrTooFewDescriptors is returned by Plan when the descriptor limit cannot
// hold the requested client connections and the reserve.
var ErrTooFewDescriptors = errors.New("connlimit: too few file descriptors")

// Plan shares limit descriptors between ports client ports and the
// reserve. With perPort 0 the cap is derived: half of the limit (at least
// MinReserve) is kept in reserve, because the peer port and the disk need
// more descriptors as a node hosts more ranges, and the other half is split
// evenly between the client ports. An explicit perPort is accepted as long
// as MinReserve descriptors remain.
func Plan(limit, ports, perPort int) (Budget, error) {
	if ports < 1 || perPort < 0 {
		return Budget{}, fmt.Errorf("connlimit: plan for %d ports of %d connections: invalid", ports, perPort)
	}
	if perPort == 0 {
		reserve := max(MinReserve, limit/2)
		perPort = (limit-reserve)/ports - RefusalSlots
		if perPort < 1 {
			return Budget{}, fmt.Errorf("%w: a limit of %d leaves no connections for %d client ports after the %d kept for Raft and disk",
				ErrTooFewDescriptors, limit, ports, reserve)
		}
	}
	reserve := limit - ports*(perPort+RefusalSlots)
	if perPort > limit || reserve < MinReserve {
		return Budget{}, fmt.Errorf("%w: %d client ports of %d connections (and %d being refused each) leave %d of the limit of %d for Raft and disk, fewer than %d",
			ErrTooFewDescriptors, ports, perPort, RefusalSlots, reserve, limit, MinReserve)
	}
	return Budget{Limit: limit, PerPort: perPort, Reserve: reserve}, nil
}
