package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/dialkv/dialkv/api/client"
	"github.com/dialkv/dialkv/api/kvpb"
)

// exportPage is how many keys one scan page asks for: large enough that
// the round trips do not dominate, small enough that --timeout can bound
// each page.
const exportPage = 1000

// maxSkippedNamed bounds the skipped keys named one by one on stderr; the
// count covers the rest.
const maxSkippedNamed = 20

func (a *app) exportCmd() *cobra.Command {
	var prefix, output string
	cmd := &cobra.Command{
		Use:   "export [--prefix P] [--output FILE]",
		Short: "Write every key as the KEY<TAB>VALUE lines import reads",
		Long: `Write every key (or every key starting with --prefix) with its value as a
KEY<TAB>VALUE line ending in '\n', in key order, to stdout or --output FILE:
exactly what "kvctl import" reads. The scan follows every range's pages, one
page of up to 1000 keys at a time, each a linearizable read bounded by
--timeout; the export is not a point-in-time snapshot of the whole key
space (writes during it may or may not be in it).

A key containing a tab or a newline, or a value containing a newline, has
no KEY<TAB>VALUE line: it is skipped and named on stderr, the rest is
written, and the export exits with code 1.

A progress bar (keys and bytes so far) is drawn on stderr when it is a
terminal. Ends with "exported N keys (B bytes) in D" on stderr. --output
writes to a temporary file next to FILE and renames it once the scan is
done, so FILE is never half-written; it is created with mode 0600.`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			return a.runExport(cmd.Context(), []byte(prefix), output)
		}),
	}
	cmd.Flags().StringVar(&prefix, "prefix", "", "export only the keys starting with P")
	cmd.Flags().StringVarP(&output, "output", "o", "", "write to FILE instead of stdout")
	return cmd
}

// exportStats counts what an export wrote and skipped.
type exportStats struct {
	keys, bytes, skipped int64
}

func (a *app) runExport(ctx context.Context, prefix []byte, output string) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	defer c.Close()

	out := a.env.stdout
	var tmp *os.File
	if output != "" && output != "-" {
		tmp, err = os.CreateTemp(filepath.Dir(output), "."+filepath.Base(output)+".*.tmp")
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		defer func() {
			if tmp != nil {
				tmp.Close()
				os.Remove(tmp.Name())
			}
		}()
		out = tmp
	}

	var bar *progressbar.ProgressBar
	if a.env.stderrTTY {
		bar = progressbar.NewOptions64(-1,
			progressbar.OptionSetWriter(a.env.stderr),
			progressbar.OptionSetDescription("exporting"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("keys"),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
	}

	start := time.Now()
	w := bufio.NewWriterSize(out, 256<<10)
	var st exportStats
	scanErr := a.exportScan(ctx, c, prefix, func(kv *kvpb.KeyValue) error {
		key, value := kv.GetKey(), kv.GetValue()
		if bytes.ContainsAny(key, "\t\n") || bytes.IndexByte(value, '\n') >= 0 {
			st.skipped++
			if st.skipped <= maxSkippedNamed {
				fmt.Fprintf(a.env.stderr, "warning: skipped key %q: a key with a tab or newline, or a value with a newline, has no KEY<TAB>VALUE line\n", key)
			}
			return nil
		}
		n, err := fmt.Fprintf(w, "%s\t%s\n", key, value)
		if err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		st.keys++
		st.bytes += int64(n)
		return nil
	}, func() {
		if bar != nil {
			bar.Describe(fmt.Sprintf("exporting (%s)", humanBytes(st.bytes)))
			_ = bar.Set64(st.keys)
		}
	})
	if bar != nil {
		_ = bar.Finish()
	}
	if err := w.Flush(); err != nil && scanErr == nil {
		scanErr = fmt.Errorf("write output: %w", err)
	}
	if scanErr != nil {
		return fmt.Errorf("export: %w (%d keys written before stopping)", scanErr, st.keys)
	}
	if tmp != nil {
		if err := tmp.Sync(); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		if err := tmp.Close(); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		if err := os.Rename(tmp.Name(), output); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		tmp = nil
	}
	fmt.Fprintf(a.env.stderr, "exported %d keys (%s) in %v\n", st.keys, humanBytes(st.bytes), time.Since(start).Round(time.Millisecond))
	if st.skipped > 0 {
		return codedError{exitError, fmt.Errorf("export: %d keys have no KEY<TAB>VALUE line and were skipped (the first %d are named above); the other %d were written",
			st.skipped, min(st.skipped, maxSkippedNamed), st.keys)}
	}
	return nil
}

// exportScan calls fn for every key with prefix in key order, one page at
// a time, each page bounded by --timeout; page runs after each page. The
// loop is bounded: every page either ends the scan or moves its start
// strictly forward through a finite key space.
func (a *app) exportScan(ctx context.Context, c *client.Client, prefix []byte, fn func(*kvpb.KeyValue) error, page func()) error {
	req := &kvpb.ScanRequest{Start: prefix, End: prefixEnd(prefix), Limit: exportPage}
	for {
		pctx, cancel := context.WithTimeout(ctx, a.timeout)
		resp, err := c.Scan(pctx, req)
		cancel()
		if err != nil {
			return err
		}
		for _, kv := range resp.GetKvs() {
			if err := fn(kv); err != nil {
				return err
			}
		}
		page()
		if !resp.GetMore() {
			return nil
		}
		next := resp.GetNextKey()
		if bytes.Compare(next, req.Start) <= 0 {
			return fmt.Errorf("scan: the server's next page starts at %q, not after %q", next, req.Start)
		}
		if len(req.End) > 0 && bytes.Compare(next, req.End) >= 0 {
			return nil
		}
		req.Start = next
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// prefixEnd is the first key after every key starting with p: nil (the
// end of the key space) for an empty p or one of only 0xff bytes.
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// humanBytes is n in B, KiB, MiB or GiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 3; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGT"[exp])
}
