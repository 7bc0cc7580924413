package connlimit

import (
	"errors"
	"testing"
)

func TestPlan_SharesTheLimitAndKeepsTheReserve(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		limit, ports, perPort int
		want                  Budget
		wantErr               error
	}{
		{"derived, 1024", 1024, 2, 0, Budget{Limit: 1024, PerPort: 240, Reserve: 512}, nil},
		{"derived, 20000", 20000, 2, 0, Budget{Limit: 20000, PerPort: 4984, Reserve: 10000}, nil},
		{"derived, one port", 20000, 1, 0, Budget{Limit: 20000, PerPort: 9984, Reserve: 10000}, nil},
		{"derived, a small limit keeps MinReserve", 400, 2, 0, Budget{Limit: 400, PerPort: 56, Reserve: 256}, nil},
		{"derived, just enough", 300, 2, 0, Budget{Limit: 300, PerPort: 6, Reserve: 256}, nil},
		{"derived, too small a limit", 280, 2, 0, Budget{}, ErrTooFewDescriptors},
		{"derived, smaller than the reserve", 100, 2, 0, Budget{}, ErrTooFewDescriptors},
		{"explicit, fits", 1024, 2, 200, Budget{Limit: 1024, PerPort: 200, Reserve: 592}, nil},
		{"explicit, exactly MinReserve left", 1024, 2, 368, Budget{Limit: 1024, PerPort: 368, Reserve: 256}, nil},
		{"explicit, eats into the reserve", 1024, 2, 369, Budget{}, ErrTooFewDescriptors},
		{"explicit, past the limit", 1024, 2, 1 << 62, Budget{}, ErrTooFewDescriptors},
		{"negative cap", 1024, 2, -1, Budget{}, nil},
		{"no ports", 1024, 0, 0, Budget{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Plan(tc.limit, tc.ports, tc.perPort)
			if tc.want == (Budget{}) {
				if err == nil {
					t.Fatalf("Plan(%d, %d, %d) = %+v, want an error", tc.limit, tc.ports, tc.perPort, got)
				}
				if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
					t.Fatalf("Plan: %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Plan(%d, %d, %d) = %+v, %v; want %+v", tc.limit, tc.ports, tc.perPort, got, err, tc.want)
			}
			if used := got.Reserve + tc.ports*(got.PerPort+RefusalSlots); used != tc.limit {
				t.Fatalf("reserve and client ports add up to %d, not the limit %d", used, tc.limit)
			}
		})
	}
}
