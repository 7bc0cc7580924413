package jepsen

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Result types of an operation, as in Jepsen.
const (
	// OK: the operation happened, with the recorded result.
	OK = "ok"
	// Fail: the operation definitely did not happen (a write the server
	// proved it did not apply; any read that errored).
	Fail = "fail"
	// Info: unknown; a write that may or may not have been applied.
	Info = "info"
)

// Operation kinds.
const (
	OpPut    = "put"    // register: write Value to Key
	OpGet    = "get"    // register or list: read Key at Level
	OpCAS    = "cas"    // register: write Value if Key holds Expected
	OpAdd    = "add"    // set: create Key (unique) with Value
	OpScan   = "scan"   // set: read every element under Key (a prefix)
	OpAppend = "append" // list: CAS Key from Expected to Expected+" "+Value
	OpFault  = "fault"  // nemesis: a fault starts (Type info) or ends (Type ok)
	// OpRestart: the nemesis started a new process for Node (after a
	// kill, or a rejoin with an empty data directory). Reads served by the
	// node before and after come from different incarnations.
	OpRestart = "restart"
)

// Read levels as recorded.
const (
	Linearizable = "linearizable"
	Bounded      = "bounded"
	Session      = "session"
	Stale        = "stale"
)

// Levels are the read levels in display order.
var Levels = []string{Linearizable, Bounded, Session, Stale}

// NemesisProcess is the Process of fault events; FinalProcess reads the
// final state after the heal.
const (
	NemesisProcess = -1
	FinalProcess   = -2
)

// Op is one line of history.jsonl: one client operation, from invocation
// to completion, or one fault event.
type Op struct {
	Index   int    `json:"index"`
	Process int    `json:"process"`        // client id; -1 nemesis, -2 final reads
	Node    string `json:"node,omitempty"` // the node the request was sent to
	API     string `json:"api,omitempty"`  // grpc or http
	F       string `json:"op"`
	Key     string `json:"key,omitempty"`
	// Value: written (put, add, append's element, cas's new value) or read
	// (get; absent with Missing).
	Value    string `json:"value,omitempty"`
	Missing  bool   `json:"missing,omitempty"`  // a read found no key
	Expected string `json:"expected,omitempty"` // cas and append: the value compared against
	// Elements is a scan's result, sorted.
	Elements []string `json:"elements,omitempty"`
	Level    string   `json:"level,omitempty"`
	// MaxStaleness of a bounded read, in milliseconds.
	MaxStaleness int64 `json:"max_staleness_ms,omitempty"`
	// Start and End are nanoseconds on the harness's monotonic clock
	// since the run started.
	Start int64  `json:"start"`
	End   int64  `json:"end"`
	Type  string `json:"type"`
	Error string `json:"error,omitempty"`
	// ServedBy, RangeID, AppliedIndex, Revision and StalenessMs come from
	// the response: the replica that answered, the range, its applied
	// index (reads), the key's revision (reads) or the write's revision.
	// Indexes and revisions are positions in one range's log: they are
	// compared only within a range.
	ServedBy     string `json:"served_by,omitempty"`
	RangeID      uint64 `json:"range,omitempty"`
	AppliedIndex uint64 `json:"applied_index,omitempty"`
	Revision     uint64 `json:"revision,omitempty"`
	StalenessMs  *int64 `json:"staleness_ms,omitempty"`
	// SessionIn is the token a read was sent with; SessionOut the token
	// the response carried.
	SessionIn  string `json:"session_in,omitempty"`
	SessionOut string `json:"session_out,omitempty"`
	// The watch and lease workloads (watch_workload.go, lease_workload.go):
	// From is the cursor a watch was asked to resume after, Cursor the one
	// a watch message carried (or a stream's last), Events the events it
	// delivered; Lease a lease id (a grant's answer, a put's lease), TTL
	// its seconds.
	From   string       `json:"from,omitempty"`
	Cursor string       `json:"cursor,omitempty"`
	Events []WatchEvent `json:"events,omitempty"`
	Lease  int64        `json:"lease,omitempty"`
	TTL    int64        `json:"ttl,omitempty"`
	// The transaction workloads (bank_workload.go, append_workload.go):
	// TxnID is the id the client gave the transaction; Compared the
	// values its compares expected (key -> value), Writes what its success
	// branch writes (bank: the new balances; append: the element appended
	// to each list), Reads what it read (key -> value, "" for a missing
	// key; nil when the answer was lost). Succeeded: the compares held (on
	// an ok transaction; absent: they did not). Resolved says how an
	// unknown outcome was learnt: "COMMITTED" or "ABORTED" from
	// TxnStatus(abort_if_pending), End being when it answered.
	TxnID     string            `json:"txn_id,omitempty"`
	Compared  map[string]string `json:"compared,omitempty"`
	Writes    map[string]string `json:"writes,omitempty"`
	Reads     map[string]string `json:"reads,omitempty"`
	Succeeded bool              `json:"succeeded,omitempty"`
	Resolved  string            `json:"resolved,omitempty"`
	// Planted marks the canary's mislabelled reads. Checkers never look
	// at it; only the canary's own verdict does.
	Planted bool `json:"planted,omitempty"`
}

// IsRead reports whether the op only reads.
func (o *Op) IsRead() bool { return o.F == OpGet || o.F == OpScan }

// IsWrite reports whether the op may change state.
func (o *Op) IsWrite() bool {
	return o.F == OpPut || o.F == OpCAS || o.F == OpAdd || o.F == OpAppend
}

func (o *Op) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "#%d p%d %s", o.Index, o.Process, o.F)
	if o.Key != "" {
		fmt.Fprintf(&b, " %s", o.Key)
	}
	if o.F == OpCAS || o.F == OpAppend {
		fmt.Fprintf(&b, " %q->%q", o.Expected, o.Value)
	} else if o.Missing {
		b.WriteString(" <missing>")
	} else if o.Value != "" {
		fmt.Fprintf(&b, " %q", o.Value)
	}
	if o.F == OpScan {
		fmt.Fprintf(&b, " %d elements", len(o.Elements))
	}
	if o.Level != "" {
		b.WriteString(" @" + o.Level)
		if o.MaxStaleness > 0 {
			fmt.Fprintf(&b, "(%dms)", o.MaxStaleness)
		}
	}
	fmt.Fprintf(&b, " %s [%s, %s]", o.Type, fmtNanos(o.Start), fmtNanos(o.End))
	if o.Node != "" {
		fmt.Fprintf(&b, " via %s/%s", o.Node, o.API)
	}
	if o.ServedBy != "" {
		fmt.Fprintf(&b, " served_by %s", o.ServedBy)
	}
	if o.Revision != 0 {
		fmt.Fprintf(&b, " rev %d", o.Revision)
	}
	if o.AppliedIndex != 0 {
		fmt.Fprintf(&b, " applied %d", o.AppliedIndex)
	}
	if o.Error != "" {
		fmt.Fprintf(&b, " error %q", o.Error)
	}
	return b.String()
}

// mustJSON encodes v, which cannot fail for the types of this package.
func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// fmtNanos renders a history timestamp as seconds with milliseconds.
func fmtNanos(ns int64) string {
	return strconv.FormatFloat(float64(ns)/1e9, 'f', 3, 64) + "s"
}

// Fault is one fault period: from Start to End (0 while it lasts).
type Fault struct {
	Name  string `json:"name"`  // the nemesis, e.g. "partition"
	Desc  string `json:"desc"`  // what exactly, e.g. "isolate n2"
	Start int64  `json:"start"` // ns since the run started
	End   int64  `json:"end"`
}

// Recorder collects a history and streams it to a JSON-lines file as ops
// complete. Its methods are safe for concurrent use.
type Recorder struct {
	base time.Time

	mu     sync.Mutex
	ops    []Op
	faults []Fault
	w      *bufio.Writer
	f      *os.File
	err    error
}

// NewRecorder starts the run's clock now. With a non-empty path every
// completed op is appended to that file (history.jsonl).
func NewRecorder(path string) (*Recorder, error) {
	r := &Recorder{base: time.Now()}
	if path != "" {
		f, err := os.Create(path)
		if err != nil {
			return nil, fmt.Errorf("jepsen: history: %w", err)
		}
		r.f, r.w = f, bufio.NewWriterSize(f, 64<<10)
	}
	return r, nil
}

// Now is the harness's monotonic clock: nanoseconds since the run started.
func (r *Recorder) Now() int64 { return int64(time.Since(r.base)) }

// Add records a completed op, assigning its index.
func (r *Recorder) Add(op Op) {
	r.mu.Lock()
	defer r.mu.Unlock()
	op.Index = len(r.ops)
	r.ops = append(r.ops, op)
	if r.w != nil && r.err == nil {
		b, err := json.Marshal(op)
		if err == nil {
			b = append(b, '\n')
			_, err = r.w.Write(b)
		}
		r.err = err
	}
}

// FaultStart records that a fault begins now and returns its id for
// FaultEnd.
func (r *Recorder) FaultStart(name, desc string) int {
	now := r.Now()
	r.mu.Lock()
	id := len(r.faults)
	r.faults = append(r.faults, Fault{Name: name, Desc: desc, Start: now})
	r.mu.Unlock()
	r.Add(Op{Process: NemesisProcess, F: OpFault, Key: name, Value: desc, Start: now, End: now, Type: Info})
	return id
}

// FaultEnd records that fault id is over.
func (r *Recorder) FaultEnd(id int) {
	now := r.Now()
	r.mu.Lock()
	f := &r.faults[id]
	if f.End != 0 {
		r.mu.Unlock()
		return
	}
	f.End = now
	name, desc := f.Name, f.Desc
	r.mu.Unlock()
	r.Add(Op{Process: NemesisProcess, F: OpFault, Key: name, Value: "end " + desc, Start: now, End: now, Type: OK})
}

// Restarted records that node's process was (re)started now.
func (r *Recorder) Restarted(node, why string) {
	now := r.Now()
	r.Add(Op{Process: NemesisProcess, F: OpRestart, Node: node, Value: why, Start: now, End: now, Type: OK})
}

// History returns a copy of the ops and faults recorded so far. Faults
// still open are closed at the current time in the copy.
func (r *Recorder) History() *History {
	now := r.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	h := &History{Ops: append([]Op(nil), r.ops...), Faults: append([]Fault(nil), r.faults...)}
	for i := range h.Faults {
		if h.Faults[i].End == 0 {
			h.Faults[i].End = now
		}
	}
	return h
}

// Close flushes and closes the history file.
func (r *Recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.w == nil {
		return r.err
	}
	if err := r.w.Flush(); err != nil && r.err == nil {
		r.err = err
	}
	if err := r.f.Close(); err != nil && r.err == nil {
		r.err = err
	}
	r.w = nil
	return r.err
}

// History is a completed run's operations and fault periods.
type History struct {
	Ops    []Op
	Faults []Fault
}

// ReadHistory parses a history.jsonl; fault periods are rebuilt from its
// fault events.
func ReadHistory(rd io.Reader) (*History, error) {
	h := &History{}
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	open := map[string]int{}
	for line := 1; sc.Scan(); line++ {
		if len(strings.TrimSpace(sc.Text())) == 0 {
			continue
		}
		var op Op
		if err := json.Unmarshal(sc.Bytes(), &op); err != nil {
			return nil, fmt.Errorf("jepsen: history line %d: %w", line, err)
		}
		h.Ops = append(h.Ops, op)
		if op.F == OpFault {
			if op.Type == Info {
				open[op.Key+"\x00"+op.Value] = len(h.Faults)
				h.Faults = append(h.Faults, Fault{Name: op.Key, Desc: op.Value, Start: op.Start})
			} else if i, ok := open[op.Key+"\x00"+strings.TrimPrefix(op.Value, "end ")]; ok {
				h.Faults[i].End = op.Start
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var last int64
	for _, op := range h.Ops {
		last = max(last, op.End)
	}
	for i := range h.Faults {
		if h.Faults[i].End == 0 {
			h.Faults[i].End = last
		}
	}
	return h, nil
}

// ClientOps returns the client operations (no nemesis events), sorted by
// start time.
func (h *History) ClientOps() []*Op {
	out := make([]*Op, 0, len(h.Ops))
	for i := range h.Ops {
		if h.Ops[i].Process != NemesisProcess {
			out = append(out, &h.Ops[i])
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start < out[j].Start })
	return out
}

// End is the latest completion time in the history.
func (h *History) End() int64 {
	var last int64
	for _, op := range h.Ops {
		last = max(last, op.End)
	}
	return last
}

// FaultsAt returns the names of the faults active at t, sorted.
func (h *History) FaultsAt(t int64) []string {
	var out []string
	for _, f := range h.Faults {
		if f.Start <= t && t < f.End {
			out = append(out, f.Name)
		}
	}
	sort.Strings(out)
	return out
}
