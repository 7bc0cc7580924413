package rpctypes

import (
	"fmt"
	"strings"
)

// Locality is where a node (kvd --locality, NodeInfo.locality) or a client
// runs: ordered tiers from the widest down, "region=eu,zone=a". Servers
// place replicas by it and clients pick the nearest replica by it, so both
// must read it alike. Two localities are nearer the more leading tiers
// they share; a tier compared out of order means nothing ("zone=a" in two
// regions are different zones).
type Locality []LocalityTier

// LocalityTier is one KEY=VALUE of a Locality.
type LocalityTier struct {
	Key, Value string
}

func (t LocalityTier) String() string { return t.Key + "=" + t.Value }

// ParseLocality parses "region=eu,zone=a"; "" is no locality (nil). Every
// tier must be KEY=VALUE with both non-empty and without spaces, '=' or
// ',', and no key may appear twice.
func ParseLocality(s string) (Locality, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var l Locality
	seen := map[string]bool{}
	for part := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("locality tier %q: want KEY=VALUE, both non-empty (e.g. region=eu,zone=a)", part)
		}
		if strings.ContainsAny(k, " \t\n") || strings.ContainsAny(v, "= \t\n") {
			return nil, fmt.Errorf("locality tier %q: no spaces, and one '=' only", part)
		}
		if seen[k] {
			return nil, fmt.Errorf("locality %q: tier %q appears twice", s, k)
		}
		seen[k] = true
		l = append(l, LocalityTier{Key: k, Value: v})
	}
	return l, nil
}

// String is the locality's text, as ParseLocality reads it.
func (l Locality) String() string {
	parts := make([]string, len(l))
	for i, t := range l {
		parts[i] = t.String()
	}
	return strings.Join(parts, ",")
}

// Shared returns how many leading tiers l and o have in common: 2 for
// "region=eu,zone=a" and "region=eu,zone=a,rack=3", 1 with
// "region=eu,zone=b", 0 with "region=us,zone=a" or with no locality.
func (l Locality) Shared(o Locality) int {
	n := 0
	for n < len(l) && n < len(o) && l[n] == o[n] {
		n++
	}
	return n
}

// Prefix is the text of l's first n tiers (all of them when l has fewer).
func (l Locality) Prefix(n int) string {
	return l[:min(n, len(l))].String()
}
