package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dialkv/dialkv/api/client"
	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

func (a *app) watchCmd() *cobra.Command {
	var (
		prefix    string
		from      string
		prevValue bool
		progress  bool
	)
	cmd := &cobra.Command{
		Use:   "watch KEY | --prefix P [--from CURSOR] [--prev-value] [--progress]",
		Short: "Print the writes to a key or a prefix as they commit",
		Long: `Print every committed write to KEY, or to the keys starting with --prefix,
until interrupted (or for --timeout, when given) or until the watch ends
with an error. Per range, writes come in the order they committed, once
each; kvctl resumes on another node when the one serving the watch fails.

simple prints "PUT KEY VALUE" and "DELETE KEY" lines, a delete made by a
lease's end with its cause: "DELETE KEY (LEASE_EXPIRED lease 7)". With
--progress, a "CURSOR C" line follows every message: resume from C with
--from to miss nothing and repeat nothing. table prints as simple.

json prints one object per event: type ("put" or "delete"), key, value
(puts), range_id, index, cause and lease (deletes by a lease), prev_value
(with --prev-value, when there was one), and cursor on the last event of
each message (where a resume may start). With --progress, progress
messages print as {"type": "progress", "cursor": C, "ranges": [...]}.

A cursor older than what the cluster retains exits 1 with COMPACTED:
re-read the keys, then watch from now.`,
		Args: cobra.MaximumNArgs(1),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			opts := client.WatchOptions{Prefix: []byte(prefix), From: from, PrevValue: prevValue}
			switch {
			case len(args) == 1 && cmd.Flags().Changed("prefix"):
				return usagef("watch: give KEY or --prefix, not both")
			case len(args) == 1:
				opts.Key = []byte(args[0])
			case prefix == "":
				return usagef("watch: give a KEY or a non-empty --prefix")
			}
			if _, err := rpctypes.ParseWatchCursor(from); err != nil {
				return usagef("--from: %v", err)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			defer c.Close()
			// A watch runs until interrupted; --timeout bounds it only
			// when given.
			ctx := cmd.Context()
			if cmd.Flags().Changed("timeout") {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, a.timeout)
				defer cancel()
			}
			return a.watch(ctx, c, opts, progress)
		}),
	}
	cmd.Flags().StringVar(&prefix, "prefix", "", "watch the keys starting with P")
	cmd.Flags().StringVar(&from, "from", "", "resume after CURSOR (a cursor an earlier watch printed)")
	cmd.Flags().BoolVar(&prevValue, "prev-value", false, "include each event's previous value (json: prev_value)")
	cmd.Flags().BoolVar(&progress, "progress", false, "print the cursor after every message (json: progress objects)")
	return cmd
}

// watch prints the watch until it ends. Its context ending (an interrupt,
// --timeout) is a normal end.
func (a *app) watch(ctx context.Context, c *client.Client, opts client.WatchOptions, progress bool) error {
	for m, err := range c.Watch(ctx, opts) {
		if err != nil {
			if stoppedBy(ctx, err) {
				return nil
			}
			return err
		}
		if err := printWatch(a.env.stdout, a.out(), m, progress); err != nil {
			return err
		}
	}
	return nil
}

// stoppedBy reports whether err ended a command that runs until
// interrupted or --timeout because of that: the interrupt, or the
// deadline, which the client may report just before it passes (no retry
// fits in the time left).
func stoppedBy(ctx context.Context, err error) bool {
	_, timed := ctx.Deadline()
	return (ctx.Err() != nil && errors.Is(err, context.Canceled)) || (timed && errors.Is(err, context.DeadlineExceeded))
}

// watchEvent is the JSON of one event, as `kvctl watch -w json` prints it
// and GET /v1/watch sends it.
type watchEvent struct {
	Type      string          `json:"type"`
	Key       rpctypes.Bytes  `json:"key"`
	Value     *rpctypes.Bytes `json:"value,omitempty"`
	PrevValue *rpctypes.Bytes `json:"prev_value,omitempty"`
	RangeID   uint64          `json:"range_id"`
	Index     uint64          `json:"index"`
	Cause     string          `json:"cause,omitempty"`
	Lease     int64           `json:"lease,omitempty"`
	Cursor    string          `json:"cursor,omitempty"`
}

// watchProgress is a progress message in JSON (with --progress).
type watchProgress struct {
	Type   string       `json:"type"` // progress
	Cursor string       `json:"cursor"`
	Ranges []watchRange `json:"ranges"`
}

type watchRange struct {
	RangeID      uint64 `json:"range_id"`
	ServedBy     string `json:"served_by"`
	AppliedIndex uint64 `json:"applied_index"`
	StalenessMS  int64  `json:"staleness_ms"`
}

func eventType(t kvpb.EventType) string {
	switch t {
	case kvpb.EventType_EVENT_TYPE_PUT:
		return "put"
	case kvpb.EventType_EVENT_TYPE_DELETE:
		return "delete"
	}
	return strings.ToLower(strings.TrimPrefix(t.String(), "EVENT_TYPE_"))
}

// deleteCause is LEASE_EXPIRED or LEASE_REVOKED, "" for a client's
// delete.
func deleteCause(c kvpb.DeleteCause) string {
	if c == kvpb.DeleteCause_DELETE_CAUSE_UNSPECIFIED {
		return ""
	}
	return strings.TrimPrefix(c.String(), "DELETE_CAUSE_")
}

func newWatchEvent(ev *kvpb.Event, cursor string) watchEvent {
	out := watchEvent{Type: eventType(ev.GetType()), Key: ev.GetKey(), RangeID: ev.GetRangeId(), Index: ev.GetIndex(), Cursor: cursor}
	if ev.GetType() == kvpb.EventType_EVENT_TYPE_PUT {
		v := rpctypes.Bytes(ev.GetValue())
		out.Value = &v
	}
	if ev.GetPrevExists() {
		v := rpctypes.Bytes(ev.GetPrevValue())
		out.PrevValue = &v
	}
	if out.Cause = deleteCause(ev.GetCause()); out.Cause != "" {
		out.Lease = ev.GetLease()
	}
	return out
}

// printWatch prints one watch message. Only the last event of a message
// carries its cursor: within a message the next event may share an index
// (a lease's deletes), so no earlier place is known to be a safe resume.
func printWatch(w io.Writer, f format, m *kvpb.WatchResponse, progress bool) error {
	evs := m.GetEvents()
	if f == formatJSON {
		if len(evs) == 0 {
			if !progress {
				return nil
			}
			p := watchProgress{Type: "progress", Cursor: m.GetCursor(), Ranges: make([]watchRange, len(m.GetRanges()))}
			for i, r := range m.GetRanges() {
				p.Ranges[i] = watchRange{RangeID: r.GetRangeId(), ServedBy: r.GetServedBy(), AppliedIndex: r.GetAppliedIndex(), StalenessMS: r.GetStalenessMs()}
			}
			return writeJSONLine(w, p)
		}
		for i, ev := range evs {
			cursor := ""
			if i == len(evs)-1 {
				cursor = m.GetCursor()
			}
			if err := writeJSONLine(w, newWatchEvent(ev, cursor)); err != nil {
				return err
			}
		}
		return nil
	}
	var b strings.Builder
	for _, ev := range evs {
		switch ev.GetType() {
		case kvpb.EventType_EVENT_TYPE_PUT:
			fmt.Fprintf(&b, "PUT %s %s\n", ev.GetKey(), ev.GetValue())
		default:
			fmt.Fprintf(&b, "%s %s", strings.ToUpper(eventType(ev.GetType())), ev.GetKey())
			if c := deleteCause(ev.GetCause()); c != "" {
				fmt.Fprintf(&b, " (%s lease %d)", c, ev.GetLease())
			}
			b.WriteByte('\n')
		}
	}
	if progress {
		fmt.Fprintf(&b, "CURSOR %s\n", m.GetCursor())
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}
