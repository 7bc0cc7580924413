package rpctypes

import (
	"strings"

	"github.com/dialkv/dialkv/api/kvpb"
)

// consistencyNames are the level names used everywhere: HTTP
// ?consistency=, kvctl --consistency, JSON output, metrics labels.
var consistencyNames = map[kvpb.Consistency]string{
	kvpb.Consistency_CONSISTENCY_LINEARIZABLE: "linearizable",
	kvpb.Consistency_CONSISTENCY_BOUNDED:      "bounded",
	kvpb.Consistency_CONSISTENCY_SESSION:      "session",
	kvpb.Consistency_CONSISTENCY_STALE:        "stale",
}

// LookupConsistency maps a level name, in any case, to its enum value. The
// empty name is linearizable, the default. ok is false for an unknown name.
func LookupConsistency(name string) (c kvpb.Consistency, ok bool) {
	name = strings.ToLower(name)
	if name == "" {
		return kvpb.Consistency_CONSISTENCY_LINEARIZABLE, true
	}
	for c, n := range consistencyNames {
		if n == name {
			return c, true
		}
	}
	return kvpb.Consistency_CONSISTENCY_UNSPECIFIED, false
}

// ConsistencyName names a level; UNSPECIFIED is served as linearizable and
// is named so. ok is false for a value outside the enum.
func ConsistencyName(c kvpb.Consistency) (name string, ok bool) {
	if c == kvpb.Consistency_CONSISTENCY_UNSPECIFIED {
		return "linearizable", true
	}
	name, ok = consistencyNames[c]
	return name, ok
}
