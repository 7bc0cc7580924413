package jepsen

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// The linearizability checker feeds porcupine, key by key, every write on
// register and list keys together with the reads recorded as linearizable
// (and the final reads after the heal). A write whose outcome is unknown
// (info) is given a completion after the end of the history, so porcupine
// may place it anywhere after its invocation, including after everything
// else, where it is as good as not applied: "possibly applied". A
// compare-and-swap that failed its comparison is an observation that the
// key held something else at some point during the call.

// regInput is one operation on a string register; "" is the absent key.
type regInput struct {
	op       string // put, get, cas
	value    string // put/cas: the new value
	expected string // cas: the compared value ("" = absent)
}

// regOutput is what the operation returned.
type regOutput struct {
	value   string // get: the value read ("" = absent)
	swapped bool   // cas: the comparison held
	unknown bool   // the write's outcome is unknown
}

var registerModel = porcupine.Model{
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(string), input.(regInput), output.(regOutput)
		switch in.op {
		case "put":
			return true, in.value
		case "get":
			return out.value == s, s
		case "cas":
			switch {
			case out.unknown:
				if s == in.expected {
					return true, in.value
				}
				return true, s
			case out.swapped:
				return s == in.expected, in.value
			default:
				return s != in.expected, s
			}
		}
		return false, s
	},
	Equal: func(a, b any) bool { return a.(string) == b.(string) },
	DescribeOperation: func(input, output any) string {
		in, out := input.(regInput), output.(regOutput)
		switch in.op {
		case "put":
			if out.unknown {
				return fmt.Sprintf("put(%s) -> ?", short(in.value))
			}
			return fmt.Sprintf("put(%s)", short(in.value))
		case "get":
			return fmt.Sprintf("get() -> %s", showValue(out.value))
		default:
			res := "fail"
			if out.unknown {
				res = "?"
			} else if out.swapped {
				res = "ok"
			}
			return fmt.Sprintf("cas(%s, %s) -> %s", showValue(in.expected), short(in.value), res)
		}
	},
	DescribeState: func(state any) string { return showValue(state.(string)) },
	DescribeOperationMetadata: func(info any) string {
		if s, ok := info.(string); ok {
			return s
		}
		return ""
	},
}

func showValue(v string) string {
	if v == "" {
		return "<absent>"
	}
	return short(v)
}

// short keeps a list value readable in the timeline: its length and last
// elements.
func short(v string) string {
	els := listElems(v)
	if len(els) > 3 {
		return fmt.Sprintf("[%d: …%s]", len(els), strings.Join(els[len(els)-2:], " "))
	}
	return v
}

// linResult is porcupine's answer for one key.
type linResult struct {
	result porcupine.CheckResult
	info   porcupine.LinearizationInfo
	ops    []porcupine.Operation
}

// linOps converts the history of one key to porcupine operations.
// Processes are mapped to dense client ids.
func linOps(ix *index, ops []*Op) []porcupine.Operation {
	var out []porcupine.Operation
	infEnd := ix.end + int64(time.Second)
	for _, o := range ops {
		var in regInput
		var res regOutput
		switch {
		case o.F == OpPut && o.Type != Fail:
			in = regInput{op: "put", value: o.Value}
		case o.F == OpCAS && (o.Type != Fail || isCompareFailed(o)):
			in = regInput{op: "cas", value: o.Value, expected: o.Expected}
			res.swapped = o.Type == OK
		case o.F == OpAppend && (o.Type != Fail || isCompareFailed(o)):
			in = regInput{op: "cas", value: appendValue(o.Expected, o.Value), expected: o.Expected}
			res.swapped = o.Type == OK
		case o.F == OpGet && o.Type == OK && o.Level == Linearizable:
			in = regInput{op: "get"}
			res.value = o.Value
		default:
			continue
		}
		end := o.End
		if o.Type == Info {
			res.unknown = true
			end = infEnd
		}
		out = append(out, porcupine.Operation{
			ClientId: clientID(o.Process),
			Input:    in,
			Output:   res,
			Call:     o.Start,
			Return:   end,
			Metadata: o.String(),
		})
	}
	return out
}

// clientID maps a history process to a porcupine client id (they must be
// non-negative): the final reader becomes client 0, clients shift by one.
func clientID(process int) int {
	if process < 0 {
		return 0
	}
	return process + 1
}

func isCompareFailed(o *Op) bool {
	return o.Type == Fail && strings.Contains(o.Error, "COMPARE_FAILED")
}

// appendValue is the list after appending elem to list.
func appendValue(list, elem string) string {
	if list == "" {
		return elem
	}
	return list + " " + elem
}

func checkLinearizable(ix *index, r *CheckResult, timeout time.Duration) {
	byKey := map[string][]*Op{}
	for _, o := range ix.ops {
		if k := keyKind(o.Key); k == "register" || k == "list" {
			byKey[o.Key] = append(byKey[o.Key], o)
		}
	}
	keys := sortedKeys(byKey)
	results := make([]*linResult, len(keys))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2)
	for i, key := range keys {
		ops := linOps(ix, byKey[key])
		r.Checked += len(ops)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res, info := porcupine.CheckOperationsVerbose(registerModel, ops, timeout)
			results[i] = &linResult{result: res, info: info, ops: ops}
		}()
	}
	wg.Wait()
	r.lin = map[string]*linResult{}
	var unknown []string
	for i, key := range keys {
		lr := results[i]
		switch lr.result {
		case porcupine.Illegal:
			r.lin[key] = lr
			var involved []*Op
			for _, o := range byKey[key] {
				if o.Level == Linearizable || o.IsWrite() {
					involved = append(involved, o)
				}
			}
			// Name the ops porcupine could not place: those in none of
			// the longest partial linearizations.
			placed := map[int]bool{}
			longest := 0
			for _, part := range lr.info.PartialLinearizations() {
				for _, lin := range part {
					longest = max(longest, len(lin))
				}
			}
			for _, part := range lr.info.PartialLinearizations() {
				for _, lin := range part {
					if len(lin) == longest {
						for _, id := range lin {
							placed[id] = true
						}
					}
				}
			}
			msg := fmt.Sprintf("not linearizable: %d operations, at most %d can be linearized in order", len(lr.ops), longest)
			r.fail(key, msg, firstUnplaced(lr, placed, involved)...)
		case porcupine.Unknown:
			r.lin[key] = lr
			unknown = append(unknown, fmt.Sprintf("%s (%d ops)", key, len(lr.ops)))
		}
	}
	if len(unknown) > 0 {
		r.note("porcupine timed out (%v) on %d keys: %s; `jepsen --recheck HISTORY --linearizable-timeout D` checks again with more time", timeout, len(unknown), strings.Join(unknown, ", "))
		if r.Verdict == Pass {
			r.Verdict = Unknown
		}
	}
	r.note("%d keys, %d operations", len(keys), r.Checked)
}

// firstUnplaced returns up to 5 history ops that porcupine could not fit
// into its longest linearization, matching porcupine operations back to
// the history by their metadata.
func firstUnplaced(lr *linResult, placed map[int]bool, involved []*Op) []*Op {
	byDesc := map[string]*Op{}
	for _, o := range involved {
		byDesc[o.String()] = o
	}
	var out []*Op
	for id, op := range lr.ops {
		if placed[id] {
			continue
		}
		if o := byDesc[op.Metadata.(string)]; o != nil && o.IsRead() {
			out = append(out, o)
			if len(out) == 5 {
				break
			}
		}
	}
	return out
}
