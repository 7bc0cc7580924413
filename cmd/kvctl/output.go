package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"github.com/dialkv/dialkv/api/client"
	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

type format string

const (
	formatSimple format = "simple"
	formatJSON   format = "json"
	formatTable  format = "table"
)

func parseFormat(s string) (format, error) {
	switch f := format(strings.ToLower(s)); f {
	case formatSimple, formatJSON, formatTable:
		return f, nil
	}
	return "", usagef("unknown output format %q (want simple, json or table)", s)
}

// writeJSONLine writes v as one line of JSON without HTML escaping: the
// output is for terminals and jq, and rpctypes.Bytes prints <, > and & as
// typed only when its encoder does not escape them again.
func writeJSONLine(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// readResult is the JSON shape of one key returned by get or scan.
type readResult struct {
	Key          rpctypes.Bytes `json:"key"`
	Value        rpctypes.Bytes `json:"value"`
	Revision     uint64         `json:"revision"`
	ServedBy     string         `json:"served_by"`
	RangeID      uint64         `json:"range_id"`
	AppliedIndex uint64         `json:"applied_index"`
	Consistency  string         `json:"consistency"`
	StalenessMS  int64          `json:"staleness_ms"`
	SessionToken string         `json:"session_token"`
	// Explain is there when the read asked for it (get --explain).
	Explain *readExplain `json:"explain,omitempty"`
}

// readExplain is the JSON shape of a read's explanation.
type readExplain struct {
	ReplicaRole     string `json:"replica_role"`
	ChosenBecause   string `json:"chosen_because"`
	StalenessReason string `json:"staleness_reason"`
	Locality        string `json:"locality,omitempty"`
}

func newReadResult(kv *kvpb.KeyValue, h *kvpb.ReadHeader) readResult {
	var explain *readExplain
	if e := h.GetExplain(); e != nil {
		explain = &readExplain{ReplicaRole: e.GetReplicaRole(), ChosenBecause: e.GetChosenBecause(),
			StalenessReason: e.GetStalenessReason(), Locality: e.GetLocality()}
	}
	return readResult{
		Explain:      explain,
		Key:          kv.GetKey(),
		Value:        kv.GetValue(),
		Revision:     kv.GetRevision(),
		ServedBy:     h.GetServedBy(),
		RangeID:      h.GetRangeId(),
		AppliedIndex: h.GetAppliedIndex(),
		Consistency:  client.ConsistencyName(h.GetConsistency()),
		StalenessMS:  h.GetStalenessMs(),
		SessionToken: h.GetSessionToken(),
	}
}

// writeResult is the JSON shape of an acknowledged put, del or cas.
type writeResult struct {
	Key          rpctypes.Bytes `json:"key"`
	Deleted      *bool          `json:"deleted,omitempty"` // del only
	Revision     uint64         `json:"revision"`
	ServedBy     string         `json:"served_by"`
	RangeID      uint64         `json:"range_id"`
	SessionToken string         `json:"session_token"`
}

func newWriteResult(key []byte, h *kvpb.WriteHeader) writeResult {
	return writeResult{
		Key:          key,
		Revision:     h.GetRevision(),
		ServedBy:     h.GetServedBy(),
		RangeID:      h.GetRangeId(),
		SessionToken: h.GetSessionToken(),
	}
}

// table writes aligned columns. Cells are sanitised so that a tab or a
// newline in the data cannot break the layout or a grep over it.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		if i > 0 {
			_, _ = io.WriteString(t.tw, "\t")
		}
		_, _ = io.WriteString(t.tw, printable(c))
	}
	_, _ = io.WriteString(t.tw, "\n")
}

// flush returns the first write error; tabwriter remembers it.
func (t *table) flush() error {
	if err := t.tw.Flush(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// printable returns s when it is valid UTF-8 without control characters,
// and its Go-quoted form otherwise.
func printable(s string) string {
	if !utf8.ValidString(s) || strings.ContainsFunc(s, unicode.IsControl) {
		return strconv.Quote(s)
	}
	return s
}

func u64(n uint64) string { return strconv.FormatUint(n, 10) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
