package rpctypes

import "testing"

func TestParseLocality(t *testing.T) {
	tests := []struct {
		in      string
		want    string // String() of the result
		wantErr bool
	}{
		{in: "", want: ""},
		{in: "  ", want: ""},
		{in: "zone=a", want: "zone=a"},
		{in: "region=eu,zone=a", want: "region=eu,zone=a"},
		{in: " region=eu , zone=a ", want: "region=eu,zone=a"},
		{in: "region=eu,zone=a,rack=r1", want: "region=eu,zone=a,rack=r1"},
		{in: "region", wantErr: true},
		{in: "region=", wantErr: true},
		{in: "=eu", wantErr: true},
		{in: "region=eu,,zone=a", wantErr: true},
		{in: "region=eu,", wantErr: true},
		{in: "region=eu,region=us", wantErr: true},
		{in: "region=e=u", wantErr: true},
		{in: "my region=eu", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			l, err := ParseLocality(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseLocality(%q) = %v, want an error", tt.in, l)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseLocality(%q): %v", tt.in, err)
			}
			if got := l.String(); got != tt.want {
				t.Fatalf("ParseLocality(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestLocalitySharedAndPrefix(t *testing.T) {
	must := func(s string) Locality {
		l, err := ParseLocality(s)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	tests := []struct {
		a, b string
		want int
	}{
		{"region=eu,zone=a", "region=eu,zone=a", 2},
		{"region=eu,zone=a", "region=eu,zone=a,rack=3", 2},
		{"region=eu,zone=a", "region=eu,zone=b", 1},
		{"region=eu,zone=a", "region=us,zone=a", 0},
		{"region=eu,zone=a", "zone=a", 0},
		{"region=eu,zone=a", "", 0},
		{"", "", 0},
	}
	for _, tt := range tests {
		if got := must(tt.a).Shared(must(tt.b)); got != tt.want {
			t.Errorf("%q shares %d tiers with %q, want %d", tt.a, got, tt.b, tt.want)
		}
		if got := must(tt.b).Shared(must(tt.a)); got != tt.want {
			t.Errorf("%q shares %d tiers with %q, want %d", tt.b, got, tt.a, tt.want)
		}
	}
	l := must("region=eu,zone=a")
	for n, want := range []string{"", "region=eu", "region=eu,zone=a", "region=eu,zone=a"} {
		if got := l.Prefix(n); got != want {
			t.Errorf("Prefix(%d) = %q, want %q", n, got, want)
		}
	}
}
