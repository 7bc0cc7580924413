package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/dialkv/dialkv/api/client"
)

// maxImportLine bounds one input line; the server rejects far smaller
// values, this only bounds memory.
const maxImportLine = 64 << 20

func (a *app) importCmd() *cobra.Command {
	var concurrency int
	cmd := &cobra.Command{
		Use:   "import [FILE|-]",
		Short: "Write KEY<TAB>VALUE lines from a file or stdin",
		Long: `Write every KEY<TAB>VALUE line of FILE (or stdin, with "-" or no argument).
A line ends at '\n'; the key is everything before the first tab and the value
everything after it, byte for byte. Empty lines are skipped; a line without a
tab or with an empty key is malformed (exit code 2).

A regular FILE is validated in full before anything is written. Stdin is
streamed: a malformed line stops the import there, and the lines before it
may already have been written.

Up to --concurrency puts are in flight at once; --timeout bounds each put.
A progress bar is drawn on stderr when it is a terminal. Prints
"imported N keys in D (R keys/s)".`,
		Args: cobra.MaximumNArgs(1),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			if concurrency < 1 {
				return usagef("--concurrency must be at least 1, got %d", concurrency)
			}
			path := "-"
			if len(args) == 1 {
				path = args[0]
			}
			return a.runImport(cmd.Context(), path, concurrency)
		}),
	}
	cmd.Flags().IntVar(&concurrency, "concurrency", 32, "puts in flight at once")
	return cmd
}

func (a *app) runImport(ctx context.Context, path string, concurrency int) error {
	src := a.env.stdin
	total := int64(-1) // unknown: the bar shows a spinner
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		defer f.Close()
		src = f
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			n, err := readRecords(f, func(record) bool { return true })
			if err != nil {
				return fmt.Errorf("import %s: %w", path, err)
			}
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return fmt.Errorf("import %s: %w", path, err)
			}
			total = int64(n)
		}
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	defer c.Close()

	var bar *progressbar.ProgressBar
	if a.env.stderrTTY {
		bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(a.env.stderr),
			progressbar.OptionSetDescription("importing"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("keys"),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
	}

	start := time.Now()
	imp := &importer{client: c, timeout: a.timeout, bar: bar, stop: make(chan struct{})}
	recs := make(chan record)
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() { imp.work(ctx, recs) })
	}
	_, readErr := readRecords(src, func(r record) bool {
		select {
		case recs <- r:
			return true
		case <-imp.stop:
		case <-ctx.Done():
		}
		return false
	})
	close(recs)
	wg.Wait()
	elapsed := time.Since(start)
	if bar != nil {
		_ = bar.Finish()
	}

	n := imp.acked.Load()
	if err := errors.Join(imp.failure(), readErr, ctx.Err()); err != nil {
		return fmt.Errorf("import: %w (%d keys written before stopping)", err, n)
	}
	return a.printImport(n, elapsed)
}

// record is one parsed input line.
type record struct {
	line       int
	key, value []byte
}

// readRecords parses src and passes each record to emit until emit returns
// false. It returns the number of records emitted; a malformed line is a
// usage error naming it.
func readRecords(src io.Reader, emit func(record) bool) (int, error) {
	sc := bufio.NewScanner(src)
	sc.Buffer(make([]byte, 0, 64<<10), maxImportLine)
	sc.Split(splitLF)
	n, line := 0, 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if len(b) == 0 {
			continue
		}
		key, value, ok := bytes.Cut(b, []byte{'\t'})
		switch {
		case !ok:
			return n, usagef("line %d: want KEY<TAB>VALUE, found no tab", line)
		case len(key) == 0:
			return n, usagef("line %d: empty key", line)
		}
		if !emit(record{line: line, key: bytes.Clone(key), value: bytes.Clone(value)}) {
			return n, nil
		}
		n++
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return n, usagef("line %d: longer than %d bytes", line+1, maxImportLine)
		}
		return n, fmt.Errorf("read input: %w", err)
	}
	return n, nil
}

// splitLF is bufio.ScanLines without its removal of a trailing '\r': the
// value's bytes are kept exactly.
func splitLF(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// importer runs the puts. The first failure stops new puts; the ones in
// flight finish so the count of written keys is exact.
type importer struct {
	client  *client.Client
	timeout time.Duration
	bar     *progressbar.ProgressBar
	acked   atomic.Int64

	stop     chan struct{}
	stopOnce sync.Once
	err      error // set once, before stop is closed
}

func (imp *importer) work(ctx context.Context, recs <-chan record) {
	for r := range recs {
		select {
		case <-imp.stop:
			continue // drain
		default:
		}
		if ctx.Err() != nil {
			continue
		}
		err := imp.put(ctx, r)
		if err != nil {
			imp.fail(fmt.Errorf("line %d (key %q): %w", r.line, r.key, err))
			continue
		}
		imp.acked.Add(1)
		if imp.bar != nil {
			_ = imp.bar.Add(1)
		}
	}
}

// importRetries bounds how often one line is re-sent after an
// indeterminate outcome.
const importRetries = 5

// put writes one record. An import writes each key its given value, so
// re-sending a put whose outcome is unknown (leadership moved while it
// committed) cannot change the result: unlike an application's write,
// the import retries it.
func (imp *importer) put(ctx context.Context, r record) error {
	var err error
	for attempt := 0; attempt <= importRetries; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, imp.timeout)
		_, err = imp.client.Put(pctx, r.key, r.value)
		cancel()
		if err == nil || !client.IsIndeterminate(err) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

func (imp *importer) fail(err error) {
	imp.stopOnce.Do(func() {
		imp.err = err
		close(imp.stop)
	})
}

func (imp *importer) failure() error {
	select {
	case <-imp.stop:
		return imp.err
	default:
		return nil
	}
}

func (a *app) printImport(n int64, elapsed time.Duration) error {
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(n) / s
	}
	w := a.env.stdout
	switch a.out() {
	case formatJSON:
		return writeJSONLine(w, struct {
			Imported      int64   `json:"imported"`
			ElapsedMS     int64   `json:"elapsed_ms"`
			KeysPerSecond float64 `json:"keys_per_second"`
		}{n, elapsed.Milliseconds(), math.Round(rate)})
	case formatTable:
		t := newTable(w, "IMPORTED", "ELAPSED", "KEYS/S")
		t.row(fmt.Sprint(n), elapsed.Round(time.Millisecond).String(), fmt.Sprintf("%.0f", rate))
		return t.flush()
	}
	if _, err := fmt.Fprintf(w, "imported %d keys in %v (%.0f keys/s)\n", n, elapsed.Round(time.Millisecond), rate); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}
