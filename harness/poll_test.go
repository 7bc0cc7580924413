package harness

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestPoll_StopsAtTheFirstAnswer(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name      string
		answers   []any // per call: bool or error; the last repeats
		timeout   time.Duration
		wantCalls int
		wantErr   error
	}{
		{"holds at once", []any{true}, time.Second, 1, nil},
		{"holds on the third poll", []any{false, false, true}, 5 * time.Second, 3, nil},
		{"fails at once", []any{boom}, time.Second, 1, boom},
		{"fails after two polls", []any{false, false, boom}, 5 * time.Second, 3, boom},
		{"never holds", []any{false}, 300 * time.Millisecond, -1, ErrNotYet},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			start := time.Now()
			err := Poll(context.Background(), tc.timeout, 50*time.Millisecond, func(ctx context.Context) (bool, error) {
				a := tc.answers[min(calls, len(tc.answers)-1)]
				calls++
				if ctx.Err() != nil {
					t.Errorf("call %d got an ended context", calls)
				}
				if e, ok := a.(error); ok {
					return false, e
				}
				return a.(bool), nil
			})
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if errors.Is(tc.wantErr, ErrNotYet) && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err %v does not wrap context.DeadlineExceeded", err)
			}
			if tc.wantCalls >= 0 && calls != tc.wantCalls {
				t.Fatalf("%d calls, want %d", calls, tc.wantCalls)
			}
			if errors.Is(tc.wantErr, ErrNotYet) {
				if took := time.Since(start); took < tc.timeout || took > tc.timeout+2*time.Second {
					t.Fatalf("gave up after %v, want about %v", took, tc.timeout)
				}
				if !strings.Contains(err.Error(), tc.timeout.String()) {
					t.Fatalf("error %q does not say how long it waited", err)
				}
			}
		})
	}
}

func TestPoll_BacksOffToTheCeiling(t *testing.T) {
	// Pauses of 10, 20, 40, 80, 160, 250, 250 ms: about 7 polls in 800 ms,
	// where polling every 10 ms would make 80.
	calls := 0
	err := Poll(context.Background(), 800*time.Millisecond, 250*time.Millisecond, func(context.Context) (bool, error) {
		calls++
		return false, nil
	})
	if !errors.Is(err, ErrNotYet) {
		t.Fatalf("err %v, want ErrNotYet", err)
	}
	if calls < 2 || calls > 8 {
		t.Fatalf("%d polls in 800ms, want at most 8 (backing off to 250ms)", calls)
	}
}

func TestPoll_EndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := Poll(ctx, time.Minute, 10*time.Millisecond, func(context.Context) (bool, error) {
		if calls++; calls == 3 {
			cancel()
		}
		return false, nil
	})
	if !errors.Is(err, ErrNotYet) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want ErrNotYet and context.Canceled", err)
	}
	if calls != 3 {
		t.Fatalf("%d calls after the context ended on the third, want 3", calls)
	}
}

func TestPoll_RejectsANonPositiveTimeout(t *testing.T) {
	err := Poll(context.Background(), 0, time.Second, func(context.Context) (bool, error) {
		t.Fatal("cond called")
		return true, nil
	})
	if err == nil {
		t.Fatal("Poll with no timeout: no error")
	}
}

// fakeTB records what Eventually reports.
type fakeTB struct {
	logs, fatals []string
}

func (f *fakeTB) Helper()                      {}
func (f *fakeTB) Logf(format string, a ...any) { f.logs = append(f.logs, fmt.Sprintf(format, a...)) }
func (f *fakeTB) Fatalf(format string, a ...any) {
	f.fatals = append(f.fatals, fmt.Sprintf(format, a...))
}

func TestEventually_NamesWhatItAwaited(t *testing.T) {
	for _, tc := range []struct {
		name              string
		holdsAt           int // call on which cond first holds; 0: never
		wantLog, wantFail string
	}{
		{name: "holds at once", holdsAt: 1},
		{name: "holds later", holdsAt: 3, wantLog: "the leader to step down after"},
		{name: "never holds", holdsAt: 0, wantFail: "the leader to step down: condition not met within 300ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tb fakeTB
			calls := 0
			Eventually(&tb, "the leader to step down", 300*time.Millisecond, func() bool {
				calls++
				return tc.holdsAt > 0 && calls >= tc.holdsAt
			})
			if got := strings.Join(tb.fatals, "\n"); (tc.wantFail == "") != (got == "") || !strings.Contains(got, tc.wantFail) {
				t.Errorf("failures %q, want %q", got, tc.wantFail)
			}
			if got := strings.Join(tb.logs, "\n"); (tc.wantLog == "") != (got == "") || !strings.Contains(got, tc.wantLog) {
				t.Errorf("logs %q, want %q", got, tc.wantLog)
			}
		})
	}
}
