package harness

import (
	"net"
	"slices"
	"strings"
	"testing"
)

func TestParseEphemeralLow_CapsAndFallsBackTo32768(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"32768\t60999\n", 32768},
		{"20000 60999", 20000},
		{"40000 60999", 32768}, // above 32768: stay below it on any kernel
		{"", 32768},
		{"1024", 32768},
		{"x 60999", 32768},
		{"-5 60999", 32768},
	} {
		if got := parseEphemeralLow(tc.in); got != tc.want {
			t.Errorf("parseEphemeralLow(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func checkLocalPort(t *testing.T, addr net.Addr) int {
	t.Helper()
	a := addr.(*net.TCPAddr)
	if a.IP.String() != Host {
		t.Fatalf("bound %v, want %s", a, Host)
	}
	if high := EphemeralPortLow(); a.Port < LowestPort || a.Port >= high {
		t.Fatalf("port %d outside [%d, %d)", a.Port, LowestPort, high)
	}
	return a.Port
}

func TestListenLocal_BindsLoopbackBelowTheEphemeralRange(t *testing.T) {
	for range 50 {
		ln, err := ListenLocal()
		if err != nil {
			t.Fatal(err)
		}
		checkLocalPort(t, ln.Addr())
		ln.Close()
	}
}

func TestFreePorts_AreDistinctFreeAndBelowTheEphemeralRange(t *testing.T) {
	ports, err := FreePorts(40)
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 40 {
		t.Fatalf("%d ports, want 40", len(ports))
	}
	high := EphemeralPortLow()
	seen := map[int]bool{}
	for _, p := range ports {
		if p < LowestPort || p >= high || seen[p] {
			t.Fatalf("ports %v: %d is out of [%d, %d) or repeated", ports, p, LowestPort, high)
		}
		seen[p] = true
	}
	// The listeners were released: the ports can be bound again (unless
	// another process took one meanwhile, which is rare enough to ignore).
	ln, err := net.Listen("tcp", Addr(ports[0]))
	if err != nil {
		t.Fatalf("port %d was not released: %v", ports[0], err)
	}
	ln.Close()
}

func TestMemberPorts_FollowKvdClustersPlan(t *testing.T) {
	for _, tc := range []struct {
		base, member, count int
		want                []int
	}{
		{7000, 1, 3, []int{7010, 7011, 7012}},
		{7000, 3, 3, []int{7030, 7031, 7032}},
		{27100, 2, 2, []int{27120, 27121}},
	} {
		if got := MemberPorts(tc.base, tc.member, tc.count); !slices.Equal(got, tc.want) {
			t.Errorf("MemberPorts(%d, %d, %d) = %v, want %v", tc.base, tc.member, tc.count, got, tc.want)
		}
	}
}

func TestPlanPorts_ChecksRangeAndFreedom(t *testing.T) {
	base, err := FreePortBase(4, 3)
	if err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", Addr(base+41)) // member 4's second port
	if err != nil {
		t.Skipf("port %d taken by another process meanwhile: %v", base+41, err)
	}
	defer busy.Close()
	high := EphemeralPortLow()
	for _, tc := range []struct {
		name                     string
		base, first, last, count int
		want                     [][]int
		wantErr                  string
	}{
		{name: "free members", base: base, first: 1, last: 2, count: 3, want: [][]int{{base + 10, base + 11, base + 12}, {base + 20, base + 21, base + 22}}},
		{name: "one member", base: base, first: 3, last: 3, count: 3, want: [][]int{{base + 30, base + 31, base + 32}}},
		{name: "busy port", base: base, first: 3, last: 4, count: 3, wantErr: "not free"},
		{name: "into the ephemeral range", base: high - 20, first: 1, last: 2, count: 3, wantErr: "outside"},
		{name: "privileged", base: 500, first: 1, last: 1, count: 1, wantErr: "outside"},
		{name: "no members", base: base, first: 2, last: 1, count: 3, wantErr: "bad port plan"},
		{name: "member zero", base: base, first: 0, last: 1, count: 3, wantErr: "bad port plan"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PlanPorts(tc.base, tc.first, tc.last, tc.count)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v (another process may have taken a port meanwhile)", err)
			}
			if !slices.EqualFunc(got, tc.want, slices.Equal) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestFreePortBase_PlansFitBelowTheEphemeralRange(t *testing.T) {
	high := EphemeralPortLow()
	for _, tc := range []struct {
		members, count int
		wantErr        bool
	}{
		{1, 1, false},
		{3, 3, false},
		{9, 3, false},
		{9, 2, false},
		{0, 3, true},
		{3, 0, true},
		{3, 11, true}, // would overlap the next member's ports
	} {
		base, err := FreePortBase(tc.members, tc.count)
		if tc.wantErr {
			if err == nil {
				t.Errorf("FreePortBase(%d, %d) = %d, want an error", tc.members, tc.count, base)
			}
			continue
		}
		if err != nil {
			t.Errorf("FreePortBase(%d, %d): %v", tc.members, tc.count, err)
			continue
		}
		lastPort := base + PortStride*tc.members + tc.count - 1
		if base < LowestPort || base%baseStep != 0 || lastPort >= high {
			t.Errorf("FreePortBase(%d, %d) = %d: last port %d, want a base in [%d, …) with every port below %d", tc.members, tc.count, base, lastPort, LowestPort, high)
		}
	}
}
