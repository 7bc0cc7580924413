package jepsen

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/anishathalye/porcupine"
)

// Counts are op results.
type Counts struct {
	OK   int `json:"ok"`
	Fail int `json:"fail"`
	// CompareFailed counts the fails that are a compare-and-swap's
	// legitimate "no" (included in Fail).
	CompareFailed int `json:"compare_failed,omitempty"`
	Info          int `json:"info"`
	Total         int `json:"total"`
	// Availability is the fraction of ops the system answered: ok, plus
	// compare-and-swaps refused because the comparison failed.
	Availability float64 `json:"availability"`
}

func (c *Counts) add(o *Op) {
	switch o.Type {
	case OK:
		c.OK++
	case Fail:
		c.Fail++
		if isCompareFailed(o) {
			c.CompareFailed++
		}
	default:
		c.Info++
	}
	c.Total++
	c.Availability = float64(c.OK+c.CompareFailed) / float64(c.Total)
}

// OpCounts breaks a history down.
type OpCounts struct {
	Total int `json:"total"`
	// ByCategory: "read linearizable", "read bounded", ..., "write put",
	// "write cas", "write append", "write add", "scan <level>".
	ByCategory map[string]*Counts `json:"by_category"`
}

// Summary is summary.json.
type Summary struct {
	Verdict  string `json:"verdict"`
	Nodes    int    `json:"nodes"`
	Duration string `json:"duration"`
	Seed     uint64 `json:"seed"`
	Clients  int    `json:"clients"`
	// Workloads run (register, watch, lease).
	Workloads []string `json:"workloads,omitempty"`
	Nemeses   []string `json:"nemeses"`
	Notes     []string `json:"notes,omitempty"`
	// Checkers: the verdict of each checker, in order.
	Checkers []*CheckResult `json:"checkers"`
	Ops      OpCounts       `json:"ops"`
	// Availability per phase ("healthy", a fault family such as
	// "partition", or "composed") and category.
	Availability map[string]map[string]*Counts `json:"availability_by_phase"`
	Faults       []Fault                       `json:"faults"`
	// Recovery says how long the nodes took to report ready after the
	// final heal (not a checker: a liveness observation).
	Recovery  string         `json:"recovery"`
	Timelines []string       `json:"timelines,omitempty"`
	Canary    *CanarySummary `json:"canary,omitempty"`
	// Ranges is set by Run (not by the crash loop, which counts its own).
	Ranges  *RangeCounts        `json:"ranges,omitempty"`
	Proxies map[string][2]int64 `json:"proxy_bytes_forwarded_dropped,omitempty"`
}

// RangeCounts are the cluster's user ranges (the meta range left out).
type RangeCounts struct {
	// AtStart: listed by the routing table when the workload started
	// (after any pre-split). AtEnd: reported by a node or listed by the
	// routing table after the heal. Compared: those of AtEnd whose
	// replicas the replicas checker compared at one applied index.
	AtStart  int `json:"at_start"`
	AtEnd    int `json:"at_end"`
	Compared int `json:"compared"`
}

func (rc *RangeCounts) String() string {
	if rc == nil {
		return "ranges not counted"
	}
	return fmt.Sprintf("%d ranges at the end (%d at the start), %d compared across their replicas", rc.AtEnd, rc.AtStart, rc.Compared)
}

// category names an op for the counts.
func category(o *Op) string {
	switch {
	case o.F == OpGet:
		return "read " + o.Level
	case o.F == OpScan:
		return "scan " + o.Level
	case o.F == OpTransfer || o.F == OpReadAll || o.F == OpListTxn:
		return "txn " + o.F
	}
	return "write " + o.F
}

// phase names the faults active when the op started.
func phase(h *History, o *Op) string {
	var names []string
	for _, f := range h.Faults {
		if f.Start <= o.Start && o.Start < f.End {
			names = append(names, f.Name)
		}
	}
	if len(names) == 0 {
		return "healthy"
	}
	sort.Strings(names)
	names = dedupe(names)
	return strings.Join(names, "+")
}

func dedupe(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func summarize(h *History, results []*CheckResult, cfg Config, kinds, notes []string) *Summary {
	s := &Summary{
		Verdict: Pass, Nodes: cfg.Nodes, Duration: cfg.Duration.String(), Seed: cfg.Seed, Clients: cfg.Clients, Workloads: cfg.Workloads,
		Nemeses: kinds, Notes: notes, Checkers: results, Faults: h.Faults,
		Ops:          OpCounts{ByCategory: map[string]*Counts{}},
		Availability: map[string]map[string]*Counts{},
	}
	for _, r := range results {
		if r.Verdict == Failed {
			s.Verdict = Failed
		} else if r.Verdict == Unknown && s.Verdict == Pass {
			s.Verdict = Unknown
		}
	}
	for _, o := range h.ClientOps() {
		if o.Process < 0 {
			continue
		}
		cat := category(o)
		s.Ops.Total++
		if s.Ops.ByCategory[cat] == nil {
			s.Ops.ByCategory[cat] = &Counts{}
		}
		s.Ops.ByCategory[cat].add(o)
		ph := phase(h, o)
		if s.Availability[ph] == nil {
			s.Availability[ph] = map[string]*Counts{}
		}
		if s.Availability[ph][cat] == nil {
			s.Availability[ph][cat] = &Counts{}
		}
		s.Availability[ph][cat].add(o)
	}
	return s
}

// Table renders availability (answered/total) per category (rows) and
// phase (columns) as text.
func (s *Summary) Table() string {
	var b strings.Builder
	cats := map[string]bool{}
	for _, m := range s.Availability {
		for c := range m {
			cats[c] = true
		}
	}
	phases := sortedKeys(s.Availability)
	sort.SliceStable(phases, func(i, j int) bool { return phases[i] == "healthy" && phases[j] != "healthy" })
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "\t")
	for _, ph := range phases {
		fmt.Fprintf(tw, "%s\t", ph)
	}
	fmt.Fprintln(tw)
	for _, c := range sortedKeys(cats) {
		fmt.Fprintf(tw, "%s\t", c)
		for _, ph := range phases {
			if n := s.Availability[ph][c]; n != nil {
				fmt.Fprintf(tw, "%d/%d %3.0f%%\t", n.OK+n.CompareFailed, n.Total, 100*n.Availability)
			} else {
				fmt.Fprint(tw, "-\t")
			}
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	return b.String()
}

// CheckerLines renders each checker's verdict, one line each.
func (s *Summary) CheckerLines() string {
	var b strings.Builder
	for _, r := range s.Checkers {
		fmt.Fprintf(&b, "  %-14s %-7s checked %d", r.Checker, r.Verdict, r.Checked)
		if r.ViolationCount > 0 {
			fmt.Fprintf(&b, ", %d violations (first: %s: %s)", r.ViolationCount, r.Violations[0].Key, r.Violations[0].Msg)
		}
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "; %s", n)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// writeArtefacts writes summary.json and, for each checker that found
// violations, HTML timelines of the first few offending keys.
func writeArtefacts(rep *Report, logf func(string, ...any)) error {
	var err error
	rep.Summary.Timelines, err = writeTimelines(rep.Out, rep.History, rep.Results)
	if err != nil {
		logf("jepsen: timelines: %v", err)
	}
	b, err := json.MarshalIndent(rep.Summary, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(rep.Out, "summary.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	table := rep.Summary.Table()
	ranges := ""
	if rep.Summary.Ranges != nil {
		ranges = fmt.Sprintf("ranges: %s\n", rep.Summary.Ranges)
	}
	text := fmt.Sprintf("checkers:\n%s\n%srecovery: %s\n\navailability by phase (answered/total; a compare-and-swap refused on its comparison counts as answered):\n%s", rep.Summary.CheckerLines(), ranges, rep.Summary.Recovery, table)
	if err := os.WriteFile(filepath.Join(rep.Out, "summary.txt"), []byte(text), 0o644); err != nil {
		return err
	}
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		logf("%s", line)
	}
	return nil
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// maxTimelines bounds the timelines per checker.
const maxTimelines = 5

// writeTimelines renders porcupine's visualisation of each offending key
// (at most maxTimelines per checker), with the fault periods marked and,
// for the weaker levels, the violating ops flagged.
func writeTimelines(out string, h *History, results []*CheckResult) ([]string, error) {
	var files []string
	var errs []string
	ix := newIndex(h)
	for _, r := range results {
		if r.Verdict == Pass {
			continue
		}
		if r.timeline != nil {
			name := fmt.Sprintf("timeline-%s.html", r.Checker)
			if err := r.timeline(filepath.Join(out, name)); err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", name, err))
			} else {
				files = append(files, name)
			}
			continue
		}
		done := map[string]bool{}
		keys := []string{}
		for _, v := range r.Violations {
			if v.Key != "" && !done[v.Key] {
				done[v.Key] = true
				keys = append(keys, v.Key)
			}
		}
		if r.Checker == CheckLinearizable {
			for _, key := range sortedKeys(r.lin) {
				if !done[key] {
					done[key] = true
					keys = append(keys, key)
				}
			}
		}
		for n, key := range keys {
			if n == maxTimelines {
				break
			}
			name := fmt.Sprintf("timeline-%s-%s.html", r.Checker, unsafeChars.ReplaceAllString(strings.TrimSuffix(key, "/"), "_"))
			var err error
			if lr := r.lin[key]; lr != nil {
				err = visualizeLinear(filepath.Join(out, name), h, lr)
			} else {
				err = visualizeKey(filepath.Join(out, name), h, ix, key, r)
			}
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", name, err))
				continue
			}
			files = append(files, name)
		}
	}
	if len(errs) > 0 {
		return files, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return files, nil
}

// faultAnnotations marks the fault periods on a timeline.
func faultAnnotations(h *History) []porcupine.Annotation {
	var out []porcupine.Annotation
	for _, f := range h.Faults {
		out = append(out, porcupine.Annotation{
			Tag: "nemesis", Start: f.Start, End: f.End,
			Description: f.Name, Details: f.Desc,
			BackgroundColor: "#ffd9a8",
		})
	}
	for _, o := range h.Ops {
		if o.F == OpRestart {
			out = append(out, porcupine.Annotation{Tag: "nemesis", Start: o.Start, End: o.Start,
				Description: "restart " + o.Node, Details: o.Value, BackgroundColor: "#c8e6ff"})
		}
	}
	return out
}

func visualizeLinear(path string, h *History, lr *linResult) error {
	info := lr.info
	info.AddAnnotations(faultAnnotations(h))
	return porcupine.VisualizePath(registerModel, info, path)
}

// vizModel accepts every op: it only lays a key's ops out on a timeline.
var vizModel = porcupine.Model{
	Init:                      func() any { return "" },
	Step:                      func(state, input, output any) (bool, any) { return true, state },
	DescribeOperation:         func(input, output any) string { return input.(string) },
	DescribeState:             func(any) string { return "" },
	DescribeOperationMetadata: func(info any) string { return info.(string) },
}

// visualizeKey lays out every op on key (any level) with the violations
// of r flagged.
func visualizeKey(path string, h *History, ix *index, key string, r *CheckResult) error {
	var ops []porcupine.Operation
	flagged := map[int]string{}
	for _, v := range r.Violations {
		if v.Key == key {
			for _, i := range v.Ops {
				flagged[i] = v.Msg
			}
		}
	}
	set := keyKind(key) == "set"
	for _, o := range ix.ops {
		_, isFlagged := flagged[o.Index]
		if o.Key != key && !(set && o.F == OpScan) && !isFlagged {
			continue
		}
		desc := fmt.Sprintf("%s %s", o.F, o.Level)
		switch {
		case o.F == OpGet && o.Missing:
			desc += " -> <absent>"
		case o.F == OpGet:
			desc += " -> " + short(o.Value)
		case o.F == OpScan:
			desc += fmt.Sprintf(" -> %d elements", len(o.Elements))
		default:
			desc += " " + short(o.Value) + " " + o.Type
		}
		end := o.End
		if o.Type == Info {
			end = ix.end
		}
		ops = append(ops, porcupine.Operation{ClientId: clientID(o.Process), Input: desc, Output: nil, Call: o.Start, Return: end, Metadata: o.String()})
	}
	_, info := porcupine.CheckOperationsVerbose(vizModel, ops, 0)
	ann := faultAnnotations(h)
	byIndex := map[int]*Op{}
	for i := range h.Ops {
		byIndex[h.Ops[i].Index] = &h.Ops[i]
	}
	for i, msg := range flagged {
		o := byIndex[i]
		if o == nil {
			continue
		}
		ann = append(ann, porcupine.Annotation{ClientId: clientID(o.Process), Start: o.Start, End: o.End,
			Description: "VIOLATION (" + r.Checker + ")", Details: msg + "\n" + o.String(), BackgroundColor: "#ff8a8a"})
	}
	info.AddAnnotations(ann)
	return porcupine.VisualizePath(vizModel, info, path)
}
