package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dialkv/dialkv/api/client"
	"github.com/dialkv/dialkv/api/kvpb"
)

// maxStdinValue bounds a value read from stdin; the server's own limit is
// lower, this only keeps a runaway pipe from exhausting memory.
const maxStdinValue = 64 << 20

func (a *app) putCmd() *cobra.Command {
	var lease int64
	cmd := &cobra.Command{
		Use:   "put KEY [VALUE] [--lease ID]",
		Short: "Write a value (read from stdin when VALUE is absent)",
		Long: `Write VALUE under KEY. Without VALUE, the value is all of stdin, byte for
byte (a trailing newline is kept). Prints OK. With --lease, the key is
deleted when the lease (lease grant) expires or is revoked; a lease that
has ended exits 4 and writes nothing.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			if lease < 0 {
				return usagef("--lease %d: lease ids are positive", lease)
			}
			key := []byte(args[0])
			var value []byte
			if len(args) == 2 {
				value = []byte(args[1])
			} else {
				v, err := io.ReadAll(io.LimitReader(a.env.stdin, maxStdinValue+1))
				if err != nil {
					return fmt.Errorf("read value from stdin: %w", err)
				}
				if len(v) > maxStdinValue {
					return fmt.Errorf("value on stdin is larger than %d bytes", maxStdinValue)
				}
				value = v
			}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Put(ctx, key, value, client.WithLease(lease))
				if err != nil {
					return err
				}
				return a.printWrite(key, resp.GetHeader(), nil)
			})
		}),
	}
	cmd.Flags().Int64Var(&lease, "lease", 0, "attach KEY to lease ID (0: none)")
	return cmd
}

func (a *app) getCmd() *cobra.Command {
	var (
		rf      readFlags
		explain bool
	)
	cmd := &cobra.Command{
		Use:   "get KEY [--explain]",
		Short: "Read a value",
		Long: `Print the value of KEY. The simple format prints the raw bytes, adding a
newline only when stdout is a terminal, so "kvctl get k > file" is exact.
A missing key exits with code 4.

--explain asks the replica that answers to explain itself: which node
served the read and in what role (leader, follower), its locality, why the
read went to it (the nearest replica by --locality, the first endpoint
that holds a replica, forwarded to the leader for a linearizable read) and
why the staleness of the answer is within what was asked. simple prints
the value on a line of its own, then the explanation; json adds an
"explain" object (replica_role, chosen_because, staleness_reason,
locality); table adds the explanation under the row.`,
		Args: cobra.ExactArgs(1),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			opts, err := rf.options()
			if err != nil {
				return err
			}
			if explain {
				opts = append(opts, client.WithExplain())
			}
			key := []byte(args[0])
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Get(ctx, key, opts...)
				if err != nil {
					return err
				}
				return a.printGet(resp)
			})
		}),
	}
	rf.register(cmd)
	cmd.Flags().BoolVar(&explain, "explain", false, "say which replica answered, why it was chosen and why its staleness is within what was asked")
	return cmd
}

func (a *app) printGet(resp *kvpb.GetResponse) error {
	kv, h := resp.GetKv(), resp.GetHeader()
	w := a.env.stdout
	switch a.out() {
	case formatJSON:
		return writeJSONLine(w, newReadResult(kv, h))
	case formatTable:
		t := newTable(w, "KEY", "VALUE", "REVISION", "SERVED_BY", "RANGE", "APPLIED", "CONSISTENCY", "STALENESS_MS")
		t.row(string(kv.GetKey()), string(kv.GetValue()), u64(kv.GetRevision()), h.GetServedBy(),
			u64(h.GetRangeId()), u64(h.GetAppliedIndex()), client.ConsistencyName(h.GetConsistency()),
			strconv.FormatInt(h.GetStalenessMs(), 10))
		if err := t.flush(); err != nil {
			return err
		}
		return writeExplain(w, h)
	}
	value := kv.GetValue()
	if a.env.stdoutTTY || h.GetExplain() != nil {
		// With an explanation after it, the value ends its own line.
		value = append(value[:len(value):len(value)], '\n')
	}
	if _, err := w.Write(value); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return writeExplain(w, h)
}

// writeExplain prints a read's explanation, if it has one, as aligned
// "name: text" lines.
func writeExplain(w io.Writer, h *kvpb.ReadHeader) error {
	e := h.GetExplain()
	if e == nil {
		return nil
	}
	served := h.GetServedBy() + " (" + e.GetReplicaRole()
	if loc := e.GetLocality(); loc != "" {
		served += ", locality " + loc
	}
	served += ")"
	lines := [][2]string{
		{"served by", served},
		{"range", fmt.Sprintf("%d, applied index %d", h.GetRangeId(), h.GetAppliedIndex())},
		{"consistency", client.ConsistencyName(h.GetConsistency())},
		{"chosen because", e.GetChosenBecause()},
		{"staleness", e.GetStalenessReason()},
	}
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "%-15s %s\n", l[0]+":", printable(l[1]))
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

func (a *app) delCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "del KEY",
		Aliases: []string{"delete"},
		Short:   "Delete a key (prints 1 if it existed, else 0)",
		Args:    cobra.ExactArgs(1),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			key := []byte(args[0])
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Delete(ctx, key)
				if err != nil {
					return err
				}
				deleted := resp.GetDeleted()
				return a.printWrite(key, resp.GetHeader(), &deleted)
			})
		}),
	}
}

func (a *app) casCmd() *cobra.Command {
	var (
		expect        string
		expectMissing bool
	)
	cmd := &cobra.Command{
		Use:   "cas KEY NEW_VALUE (--expect VALUE | --expect-missing)",
		Short: "Compare and swap: write NEW_VALUE only if KEY holds the expected value",
		Long: `Write NEW_VALUE under KEY only if KEY currently holds --expect VALUE, or, with
--expect-missing, only if KEY does not exist. A failed comparison exits with
code 5. A cas whose outcome is unknown is not retried and exits with code 3.`,
		Args: cobra.ExactArgs(2),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			req := &kvpb.CompareAndSwapRequest{
				Key:           []byte(args[0]),
				NewValue:      []byte(args[1]),
				ExpectedValue: []byte(expect),
				ExpectMissing: expectMissing,
			}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.CompareAndSwap(ctx, req)
				if err != nil {
					return err
				}
				return a.printWrite(req.GetKey(), resp.GetHeader(), nil)
			})
		}),
	}
	cmd.Flags().StringVar(&expect, "expect", "", "the value KEY must hold (may be empty)")
	cmd.Flags().BoolVar(&expectMissing, "expect-missing", false, "require KEY to be absent")
	cmd.MarkFlagsMutuallyExclusive("expect", "expect-missing")
	cmd.MarkFlagsOneRequired("expect", "expect-missing")
	return cmd
}

// printWrite prints an acknowledged write; deleted is set for del only.
func (a *app) printWrite(key []byte, h *kvpb.WriteHeader, deleted *bool) error {
	w := a.env.stdout
	switch a.out() {
	case formatJSON:
		r := newWriteResult(key, h)
		r.Deleted = deleted
		return writeJSONLine(w, r)
	case formatTable:
		header := []string{"KEY", "REVISION", "SERVED_BY", "RANGE", "SESSION_TOKEN"}
		row := []string{string(key), u64(h.GetRevision()), h.GetServedBy(), u64(h.GetRangeId()), h.GetSessionToken()}
		if deleted != nil {
			header = append(header, "DELETED")
			row = append(row, yesNo(*deleted))
		}
		t := newTable(w, header...)
		t.row(row...)
		return t.flush()
	}
	line := "OK"
	if deleted != nil {
		line = "0"
		if *deleted {
			line = "1"
		}
	}
	if _, err := fmt.Fprintln(w, line); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

func (a *app) scanCmd() *cobra.Command {
	var (
		rf     readFlags
		prefix string
		limit  uint32
	)
	cmd := &cobra.Command{
		Use:   "scan [--prefix P | START [END]] [--limit N]",
		Short: "List keys in order",
		Long: `List the keys in [START, END) in bytewise order, or the keys starting with
--prefix, following pages until the end or --limit keys (0: all).

simple prints KEY<TAB>VALUE lines with raw bytes. json prints one object per
key (key, value, revision and the header of the page that served it:
served_by, range_id, applied_index, consistency, staleness_ms,
session_token) and nothing else. table prints KEY, VALUE, REVISION.`,
		Args: cobra.MaximumNArgs(2),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("prefix") && len(args) > 0 {
				return usagef("scan: --prefix and START/END are mutually exclusive")
			}
			opts, err := rf.options()
			if err != nil {
				return err
			}
			req := &kvpb.ScanRequest{Prefix: []byte(prefix), Limit: limit}
			if len(args) > 0 {
				req.Start = []byte(args[0])
			}
			if len(args) > 1 {
				req.End = []byte(args[1])
			}
			return a.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				return a.scan(ctx, c, req, opts)
			})
		}),
	}
	cmd.Flags().StringVar(&prefix, "prefix", "", "list the keys starting with P")
	cmd.Flags().Uint32Var(&limit, "limit", 0, "stop after N keys (0: no limit)")
	rf.register(cmd)
	return cmd
}

func (a *app) scan(ctx context.Context, c *client.Client, req *kvpb.ScanRequest, opts []client.ReadOption) error {
	w := a.env.stdout
	var header *kvpb.ReadHeader
	opts = append(opts, client.WithPageHeader(func(h *kvpb.ReadHeader) { header = h }))
	switch a.out() {
	case formatJSON:
		return c.ScanAll(ctx, req, func(kv *kvpb.KeyValue) error {
			return writeJSONLine(w, newReadResult(kv, header))
		}, opts...)
	case formatTable:
		t := newTable(w, "KEY", "VALUE", "REVISION")
		err := c.ScanAll(ctx, req, func(kv *kvpb.KeyValue) error {
			t.row(string(kv.GetKey()), string(kv.GetValue()), u64(kv.GetRevision()))
			return nil
		}, opts...)
		return errors.Join(err, t.flush())
	}
	return c.ScanAll(ctx, req, func(kv *kvpb.KeyValue) error {
		line := make([]byte, 0, len(kv.GetKey())+len(kv.GetValue())+2)
		line = append(append(append(append(line, kv.GetKey()...), '\t'), kv.GetValue()...), '\n')
		if _, err := w.Write(line); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		return nil
	}, opts...)
}

// readFlags are the consistency flags of get and scan.
type readFlags struct {
	consistency  string
	maxStaleness time.Duration
	sessionToken string
}

func (rf *readFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&rf.consistency, "consistency", "linearizable", "linearizable, bounded, session or stale")
	f.DurationVar(&rf.maxStaleness, "max-staleness", 0, "oldest acceptable state, for --consistency bounded")
	f.StringVar(&rf.sessionToken, "session-token", "", "token of an earlier write or read, for --consistency session")
}

func (rf *readFlags) options() ([]client.ReadOption, error) {
	level, err := client.ParseConsistency(rf.consistency)
	if err != nil {
		return nil, usageError{fmt.Errorf("--consistency: %w", err)}
	}
	switch {
	case rf.maxStaleness < 0:
		return nil, usagef("--max-staleness must not be negative")
	case level == kvpb.Consistency_CONSISTENCY_BOUNDED && rf.maxStaleness == 0:
		return nil, usagef("--consistency bounded needs --max-staleness")
	case level != kvpb.Consistency_CONSISTENCY_BOUNDED && rf.maxStaleness != 0:
		return nil, usagef("--max-staleness applies to --consistency bounded only")
	}
	opts := []client.ReadOption{client.WithConsistency(level)}
	if rf.maxStaleness > 0 {
		opts = append(opts, client.WithMaxStaleness(rf.maxStaleness))
	}
	if rf.sessionToken != "" {
		opts = append(opts, client.WithSessionToken(rf.sessionToken))
	}
	return opts, nil
}
