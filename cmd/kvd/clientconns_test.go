package main

import (
	"strings"
	"testing"
	"time"
)

func TestClientConnFlags_PlanRejectsBadValues(t *testing.T) {
	ok := clientConnFlags{maxConns: 10, httpIdle: time.Minute, httpRead: time.Minute, grpcIdle: time.Minute}
	for _, tc := range []struct {
		name    string
		edit    func(*clientConnFlags)
		wantErr string // empty: accepted
	}{
		{"explicit cap", func(*clientConnFlags) {}, ""},
		{"derived cap", func(f *clientConnFlags) { f.maxConns = 0 }, ""},
		{"negative cap", func(f *clientConnFlags) { f.maxConns = -1 }, "--max-client-conns -1"},
		{"cap past the descriptor limit", func(f *clientConnFlags) { f.maxConns = 1 << 40 }, "too few file descriptors"},
		{"zero idle timeout", func(f *clientConnFlags) { f.httpIdle = 0 }, "--http-idle-timeout 0s: must be positive"},
		{"negative read timeout", func(f *clientConnFlags) { f.httpRead = -time.Second }, "--http-read-timeout -1s: must be positive"},
		{"zero gRPC idle timeout", func(f *clientConnFlags) { f.grpcIdle = 0 }, "--grpc-idle-timeout 0s: must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := ok
			tc.edit(&f)
			b, err := f.plan()
			if tc.wantErr == "" {
				if err != nil || b.PerPort < 1 || (f.maxConns > 0 && b.PerPort != f.maxConns) {
					t.Fatalf("plan() = %+v, %v; want a cap for flags %+v", b, err, f)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("plan() = %+v, %v; want an error containing %q", b, err, tc.wantErr)
			}
		})
	}
}
