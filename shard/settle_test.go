package shard

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// heldFuture is a raft.Future answered when the test says so.
type heldFuture struct {
	answer chan error
}

func (f heldFuture) Error() error { return <-f.answer }

// awaitFutureThen's settled comes once the entry can no longer be
// appended: when Raft answers, or once it has shut down, never earlier,
// even when the caller stopped waiting.
func TestAwaitFutureThen_SettlesOnceAfterTheEntryIs(t *testing.T) {
	errApplied := errors.New("applied")
	for _, tc := range []struct {
		name string
		// during happens while it waits; after, after it returned, before
		// settled must have come.
		during, after   func(f heldFuture, cancel context.CancelFunc, stop, stopped chan struct{})
		wantErr         error
		settledOnReturn bool
	}{
		{
			name:            "answered",
			during:          func(f heldFuture, _ context.CancelFunc, _, _ chan struct{}) { f.answer <- errApplied },
			wantErr:         errApplied,
			settledOnReturn: true,
		},
		{
			name:    "the caller gave up: settled when Raft answers",
			during:  func(_ heldFuture, cancel context.CancelFunc, _, _ chan struct{}) { cancel() },
			after:   func(f heldFuture, _ context.CancelFunc, _, _ chan struct{}) { f.answer <- errApplied },
			wantErr: context.Canceled,
		},
		{
			name:    "the caller gave up: settled when Raft has shut down",
			during:  func(_ heldFuture, cancel context.CancelFunc, _, _ chan struct{}) { cancel() },
			after:   func(_ heldFuture, _ context.CancelFunc, stop, stopped chan struct{}) { close(stop); close(stopped) },
			wantErr: context.Canceled,
		},
		{
			name:    "the instance stopping: settled once it has shut down",
			during:  func(_ heldFuture, _ context.CancelFunc, stop, _ chan struct{}) { close(stop) },
			after:   func(_ heldFuture, _ context.CancelFunc, _, stopped chan struct{}) { close(stopped) },
			wantErr: errAbandoned,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := heldFuture{answer: make(chan error, 1)}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stop, stopped := make(chan struct{}), make(chan struct{})
			var settles atomic.Int32
			settled := make(chan struct{}, 2)
			// Raft answers every future in the end (else the goroutine
			// waiting on it would leak); the buffer keeps an answer the
			// test gave for that goroutine to take.
			defer func() {
				select {
				case f.answer <- nil:
				default:
				}
			}()
			returned := make(chan error, 1)
			go func() {
				returned <- awaitFutureThen(ctx, stop, stopped, f, func() { settles.Add(1); settled <- struct{}{} })
			}()
			if tc.during != nil {
				tc.during(f, cancel, stop, stopped)
			}
			var err error
			select {
			case err = <-returned:
			case <-time.After(10 * time.Second):
				t.Fatal("the wait never returned")
			}
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("returned %v, want %v", err, tc.wantErr)
			}
			if got := settles.Load(); tc.settledOnReturn != (got == 1) {
				t.Fatalf("settled %d times on return, want settled on return: %v", got, tc.settledOnReturn)
			}
			if !tc.settledOnReturn {
				if tc.after != nil {
					tc.after(f, cancel, stop, stopped)
				}
				select {
				case <-settled:
				case <-time.After(10 * time.Second):
					t.Fatal("never settled once the entry was")
				}
			}
			if got := settles.Load(); got != 1 {
				t.Errorf("settled %d times, want once", got)
			}
		})
	}
}
