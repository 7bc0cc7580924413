package cluster

import (
	"fmt"
	"net"
	"slices"
	"testing"

	"github.com/dialkv/dialkv/harness"
)

func TestFreePortBase_StaysBelowTheEphemeralRange(t *testing.T) {
	base, err := FreePortBase(3)
	if err != nil {
		t.Fatal(err)
	}
	if high := harness.EphemeralPortLow(); base < harness.LowestPort || base+10*MaxNodes+2 >= high {
		t.Fatalf("base %d: want one from %d with every member's ports below %d", base, harness.LowestPort, high)
	}
}

func TestSlotPorts_PlansOneMemberAndSeesABusyPort(t *testing.T) {
	base, err := FreePortBase(3)
	if err != nil {
		t.Fatal(err)
	}
	pp, err := slotPorts(base, 3, 4, 3)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{base + 40, base + 41, base + 42}; len(pp) != 1 || !slices.Equal(pp[0], want) {
		t.Fatalf("member 4 of base %d: ports %v, want [%v]", base, pp, want)
	}
	// Either this listener holds the port, or another process took it
	// meanwhile: busy either way.
	if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+41)); err == nil {
		defer ln.Close()
	}
	if _, err := slotPorts(base, 3, 4, 3); err == nil {
		t.Fatalf("port %d is bound, yet member 4's ports were planned", base+41)
	}
	// The other members' ports are not checked for a single slot.
	if _, err := slotPorts(base, 0, 1, 3); err != nil {
		t.Fatalf("member 1: %v", err)
	}
}
