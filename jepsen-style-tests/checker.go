package jepsen

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Key spaces of the workloads. Checkers tell registers, lists and sets
// apart by these prefixes.
const (
	RegisterPrefix = "r/" // put / get / cas on unique values
	ListPrefix     = "l/" // append by compare-and-swap; reads return the whole list
	SetPrefix      = "s/" // one unique key per added element; read by scan
)

// Checker names, in report order.
const (
	CheckLinearizable = "linearizable"
	CheckBounded      = "bounded"
	CheckSession      = "session"
	CheckStale        = "stale"
	CheckDurability   = "durability"
	CheckHonesty      = "error-honesty"
)

// Checkers lists every checker in report order.
var Checkers = []string{CheckLinearizable, CheckBounded, CheckSession, CheckStale, CheckDurability, CheckHonesty}

// Verdicts.
const (
	Pass    = "pass"
	Failed  = "fail"
	Unknown = "unknown" // the checker could not decide (porcupine timed out)
)

// Violation is one broken promise, with the ops that show it.
type Violation struct {
	Key string `json:"key,omitempty"`
	Msg string `json:"msg"`
	Ops []int  `json:"ops"` // op indices in the history
}

// CheckResult is one checker's verdict.
type CheckResult struct {
	Checker    string      `json:"checker"`
	Verdict    string      `json:"verdict"`
	Checked    int         `json:"checked"` // ops (or keys) examined
	Violations []Violation `json:"violations,omitempty"`
	// ViolationCount counts every violation; Violations keeps the first
	// maxViolations.
	ViolationCount int      `json:"violation_count,omitempty"`
	Notes          []string `json:"notes,omitempty"`
	// Known counts the violations tolerated as known issues, by issue.
	Known map[string]int `json:"known_issues_tolerated,omitempty"`
	Took  string         `json:"took"`

	// lin holds porcupine's answers per failing or unknown key, for the
	// timelines.
	lin map[string]*linResult
	// timeline, when set, writes the checker's own timeline (the bank's
	// porcupine answer over the whole bank).
	timeline func(path string) error
}

const maxViolations = 50

func newResult(name string) *CheckResult { return &CheckResult{Checker: name, Verdict: Pass} }

func (r *CheckResult) fail(key, msg string, ops ...*Op) {
	r.Verdict = Failed
	r.ViolationCount++
	if len(r.Violations) >= maxViolations {
		return
	}
	v := Violation{Key: key, Msg: msg}
	for _, o := range ops {
		if o != nil {
			v.Ops = append(v.Ops, o.Index)
		}
	}
	r.Violations = append(r.Violations, v)
}

// tolerate records a violation matching a known issue's signature as a
// note instead of a failure.
func (r *CheckResult) tolerate(issue, msg string) {
	if r.Known == nil {
		r.Known = map[string]int{}
	}
	if r.Known[issue] == 0 {
		r.note("known issue %s tolerated, first: %s", issue, msg)
	}
	r.Known[issue]++
}

func (r *CheckResult) note(format string, args ...any) {
	if len(r.Notes) < 20 {
		r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
	}
}

// Failing reports whether the verdict is not a pass.
func (r *CheckResult) Failing() bool { return r.Verdict != Pass }

// CheckOptions tunes Check.
type CheckOptions struct {
	// LinearizableTimeout bounds porcupine on one key (default 30s); a
	// key that takes longer is reported unknown.
	LinearizableTimeout time.Duration
	// KnownIssues names server bugs (see KnownIssueDocs) whose exact
	// signature is reported as a note instead of failing the checker, so
	// that a run can still catch everything else until they are fixed.
	KnownIssues []string
	// LeaseExpiryBound is how long past its TTL a lease not kept alive may
	// live (default 3s; see checkLease).
	LeaseExpiryBound time.Duration
}

// Known server bugs a run may be told to tolerate (CheckOptions.KnownIssues,
// jepsen --known-issues). Each matches one narrow signature only.
const (
	// KnownUninitializedReplica: a replica just created on a node (the
	// placement driver re-adding it) serves a stale read before it has
	// any state: the key absent at applied index 0, after the same node
	// served it. Fixed in 3c40bb0; see testdata/uninitialized-replica-read.*.
	KnownUninitializedReplica = "uninitialized-replica-reads"
	// KnownRaftWALTruncation: a node whose Raft log had a suffix
	// truncated panics on restart with "sealed segment has no index
	// block" (raft-wal v0.4.0). Fixed in 3c40bb0; see
	// TestRepro_RestartAfterLogSuffixTruncation.
	KnownRaftWALTruncation = "raft-wal-tail-truncation"
)

// KnownIssueDocs describes each known issue.
var KnownIssueDocs = map[string]string{
	KnownUninitializedReplica: "a freshly re-created replica serves stale reads from empty state (key absent, applied index 0)",
	KnownRaftWALTruncation:    `a node panics on restart with "sealed segment has no index block" after a log suffix truncation`,
}

func (o CheckOptions) known(issue string) bool {
	for _, k := range o.KnownIssues {
		if k == issue {
			return true
		}
	}
	return false
}

// Check runs every checker on h.
func Check(h *History, opts CheckOptions) []*CheckResult {
	if opts.LinearizableTimeout == 0 {
		opts.LinearizableTimeout = 30 * time.Second
	}
	ix := newIndex(h)
	ix.opts = opts
	run := func(name string, f func(*index, *CheckResult)) *CheckResult {
		start := time.Now()
		r := newResult(name)
		f(ix, r)
		r.Took = time.Since(start).Round(time.Millisecond).String()
		return r
	}
	results := []*CheckResult{
		run(CheckLinearizable, func(ix *index, r *CheckResult) { checkLinearizable(ix, r, opts.LinearizableTimeout) }),
		run(CheckBounded, checkBounded),
		run(CheckSession, checkSession),
		run(CheckStale, checkStale),
		run(CheckDurability, checkDurability),
		run(CheckHonesty, checkHonesty),
	}
	if hasAuthEvents(h) {
		results = append(results, run(CheckAuth, checkAuth))
	}
	if hasOp(h, OpWatch) {
		results = append(results, run(CheckWatch, checkWatch))
	}
	if hasOp(h, OpLeaseGrant) {
		results = append(results, run(CheckLease, checkLease))
	}
	if hasOp(h, OpBankInit) || hasOp(h, OpTransfer) {
		results = append(results, run(CheckBank, func(ix *index, r *CheckResult) { checkBank(ix, r, opts.LinearizableTimeout) }))
	}
	if hasOp(h, OpListTxn) {
		results = append(results, run(CheckAppend, checkAppend))
	}
	return results
}

// index is what the checkers share: the history's client ops and lookups
// built once.
type index struct {
	h   *History
	ops []*Op // client ops by start time
	end int64 // the history's last completion

	// writer maps key\x00value to the register write (put or cas) or set
	// add that wrote it; every written value is unique.
	writer map[string]*Op
	// appendOf maps list key\x00element to its append.
	appendOf map[string]*Op
	// final maps a register or list key to its final (post-heal) read.
	final map[string]*Op
	// finalScan is the final read of the set, nil if it failed.
	finalScan *Op
	// restarts maps a node id to the times its process was restarted.
	restarts map[string][]int64
	opts     CheckOptions
}

func newIndex(h *History) *index {
	ix := &index{h: h, ops: h.ClientOps(), end: h.End(), writer: map[string]*Op{}, appendOf: map[string]*Op{},
		final: map[string]*Op{}, restarts: map[string][]int64{}}
	for _, o := range ix.ops {
		switch o.F {
		case OpPut, OpCAS, OpAdd:
			ix.writer[o.Key+"\x00"+o.Value] = o
		case OpAppend:
			ix.appendOf[o.Key+"\x00"+o.Value] = o
		}
		if o.Process == FinalProcess && o.Type == OK {
			switch o.F {
			case OpGet:
				ix.final[o.Key] = o
			case OpScan:
				ix.finalScan = o
			}
		}
	}
	for i := range h.Ops {
		if o := &h.Ops[i]; o.F == OpRestart {
			ix.restarts[o.Node] = append(ix.restarts[o.Node], o.Start)
		}
	}
	return ix
}

// incarnation is the number of restarts of node before t: reads served by
// one incarnation come from one process's state.
func (ix *index) incarnation(node string, t int64) int {
	n := 0
	for _, r := range ix.restarts[node] {
		if r < t {
			n++
		}
	}
	return n
}

// listElems splits a list value into its elements.
func listElems(v string) []string {
	if v == "" {
		return nil
	}
	return strings.Fields(v)
}

// isPrefix reports whether list a is a prefix of list b.
func isPrefix(a, b []string) bool {
	if len(a) > len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// precedes reports whether write a certainly took effect before write b:
// a completed before b was invoked, or both were acknowledged and a's
// revision is lower.
func (ix *index) precedes(a, b *Op) bool {
	if a == nil || b == nil || a == b {
		return false
	}
	if a.Type == OK && a.End < b.Start {
		return true
	}
	return a.Type == OK && b.Type == OK && ix.olderRevision(a, b)
}

// olderRevision reports whether a's revision is known to be below b's.
// Revisions are positions in the log of the range where the write was
// applied, and a range split moves keys into a new range whose log starts
// again from zero: two revisions compare only when both were produced in
// the same range.
func (ix *index) olderRevision(a, b *Op) bool {
	ra, oka := ix.revRange(a)
	rb, okb := ix.revRange(b)
	return oka && okb && ra == rb && a.Revision != 0 && b.Revision != 0 && a.Revision < b.Revision
}

// revRange is the range whose log produced op's revision: a write's own
// range; for a read, the range of the acknowledged write of the value it
// returned (which may be a parent range, before a split).
func (ix *index) revRange(op *Op) (uint64, bool) {
	if op.IsWrite() {
		return op.RangeID, op.Type == OK && op.Revision != 0
	}
	if op.F != OpGet || op.Missing || op.Revision == 0 {
		return 0, false
	}
	var w *Op
	switch keyKind(op.Key) {
	case "list":
		if els := listElems(op.Value); len(els) > 0 {
			w = ix.appendOf[op.Key+"\x00"+els[len(els)-1]]
		}
	default:
		w = ix.writer[op.Key+"\x00"+op.Value]
	}
	if w == nil || w.Type != OK || w.Revision != op.Revision {
		return 0, false
	}
	return w.RangeID, true
}

// okReads returns the ok reads (gets and scans), optionally of one level.
func (ix *index) okReads(level string) []*Op {
	var out []*Op
	for _, o := range ix.ops {
		if o.IsRead() && o.Type == OK && (level == "" || o.Level == level) {
			out = append(out, o)
		}
	}
	return out
}

// keyKind classifies a key by prefix.
func keyKind(key string) string {
	switch {
	case strings.HasPrefix(key, RegisterPrefix):
		return "register"
	case strings.HasPrefix(key, ListPrefix):
		return "list"
	case strings.HasPrefix(key, SetPrefix):
		return "set"
	}
	return "other"
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
