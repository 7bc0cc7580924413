package shard

import (
	"context"
	"time"

	"github.com/hashicorp/raft"
)

// leadershipConfirmer is a transport that confirms the leadership of many
// ranges with one message per peer (link.RangeTransport, from link
// version 2; its confirm.go says why a yes is proof enough). A read round
// asks it first and falls back to raft.VerifyLeader's heartbeats when it
// says no: a peer of an older release, one not reachable, a follower that
// has not heard of this leader yet.
type leadershipConfirmer interface {
	ConfirmLeadership(ctx context.Context, term uint64, peers []raft.ServerAddress, need int) (bool, error)
	SetLeadershipCheck(fn func(leader raft.ServerAddress, term uint64) bool)
}

// confirmByLink reports whether a quorum of the range's voters, this
// replica included, is in term and follows this replica, asked after the
// round began. The quorum is VerifyLeader's: a majority of the voters of
// the latest configuration. A membership change under way or begun
// meanwhile (which hashicorp/raft allows one at a time, so the latest
// configuration is the only one a rival could count on otherwise) makes
// it say no and the caller fall back.
//
// It waits at most linkConfirmWait, so that a peer that hangs (a paused
// process, a network dropping everything) leaves the fallback the rest of
// the round. Rounds confirmed here do not count as rounds for the
// heartbeats' laziness (heartbeatsMayWait): no heartbeat is waited for.
func (s *Shard) confirmByLink(ctx context.Context, inst *instance, term uint64) bool {
	if s.confirmer == nil {
		return false
	}
	r := inst.raft
	gen := s.memberGen.Load()
	if gen%2 == 1 || r.State() != raft.Leader {
		return false
	}
	peers, need, ok := s.quorumPeers(r)
	if !ok {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, linkConfirmWait)
	defer cancel()
	yes, err := s.confirmer.ConfirmLeadership(ctx, term, peers, need)
	// The instance asked for must still be the one leading in term: a
	// replica that slept and woke meanwhile runs another.
	return err == nil && yes && s.memberGen.Load() == gen &&
		r.State() == raft.Leader && r.CurrentTerm() == term && s.inst.Load() == inst && !stopped(inst)
}

// linkConfirmWait bounds the link's part of a read round (answers take a
// round trip on the link; a loaded two-core machine answers within a few
// milliseconds).
const linkConfirmWait = 250 * time.Millisecond

func stopped(inst *instance) bool {
	select {
	case <-inst.stop:
		return true
	default:
		return false
	}
}

// quorumPeers returns the other voters' addresses and how many of them
// must answer yes; ok is false when this replica is no voter of the
// latest configuration (a leader being removed: VerifyLeader decides).
func (s *Shard) quorumPeers(r *raft.Raft) (peers []raft.ServerAddress, need int, ok bool) {
	f := r.GetConfiguration()
	if f.Error() != nil {
		return nil, 0, false
	}
	voters := 0
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage != raft.Voter {
			continue
		}
		voters++
		if string(srv.ID) == s.nodeID {
			ok = true
			continue
		}
		peers = append(peers, srv.Address)
	}
	return peers, voters / 2, ok
}

// followsLeader answers a peer's leadership question: whether this
// replica is awake, a follower in term, and follows leader. It runs on
// the link's reader and only loads state.
func (s *Shard) followsLeader(leader raft.ServerAddress, term uint64) bool {
	if s.asleep.Load() {
		return false
	}
	inst := s.inst.Load()
	if inst == nil {
		return false
	}
	r := inst.raft
	if r.CurrentTerm() != term || r.State() != raft.Follower {
		return false
	}
	if addr, _ := r.LeaderWithID(); addr != leader {
		return false
	}
	// A stopped instance's state is frozen (a heartbeat that raced its
	// Shutdown may even have set it back to Follower) while the instance
	// that replaced it may have voted in a later term: only the running
	// one's answer counts.
	return !stopped(inst) && s.inst.Load() == inst && !s.asleep.Load()
}
