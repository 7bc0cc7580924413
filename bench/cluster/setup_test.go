package cluster

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestBinary(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, bin string
		want            string
		wantErr         string // the error, when one is wanted
	}{
		{"given and present", "/bin/sh", "kvd", "/bin/sh", ""},
		{"given and missing", "/nonexistent/kvd", "kvd", "",
			"kvd binary: stat /nonexistent/kvd: no such file or directory (run make)"},
		{"next to this binary", "", filepath.Base(self), self, ""},
		{"missing next to this binary", "", "nonexistent-etcdnode", "",
			"nonexistent-etcdnode binary: stat " + filepath.Join(filepath.Dir(self), "nonexistent-etcdnode") + ": no such file or directory (run make)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Binary(tc.path, tc.bin, "run make")
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("Binary(%q, %q) = %q, %v; want error %q", tc.path, tc.bin, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Binary(%q, %q) = %q, %v; want %q", tc.path, tc.bin, got, err, tc.want)
			}
		})
	}
}

// TestStartRetrying: automatic ports are retried, each attempt in a
// directory of its own; a fixed port base and an ended context are not.
func TestStartRetrying(t *testing.T) {
	busy := errors.New("address already in use")
	tests := []struct {
		name      string
		portBase  int
		failures  int // starts that fail before one succeeds
		cancel    bool
		wantDirs  []string
		wantErr   bool
		wantLines int
	}{
		{"first start", 0, 0, false, []string{"start-1"}, false, 0},
		{"lost a port once", 0, 1, false, []string{"start-1", "start-2"}, false, 1},
		{"lost it every time", 0, 5, false, []string{"start-1", "start-2", "start-3"}, true, 3},
		{"fixed port base", 27000, 5, false, []string{"start-1"}, true, 0},
		{"interrupted", 0, 5, true, []string{"start-1"}, true, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			dir := t.TempDir()
			var dirs []string
			start := func(_ context.Context, o Options) (*Cluster, error) {
				if o.PortBase != tc.portBase || o.Binary != "kvd" {
					t.Errorf("start got %+v", o)
				}
				dirs = append(dirs, strings.TrimPrefix(o.Dir, dir+"/"))
				if len(dirs) <= tc.failures {
					if tc.cancel {
						cancel()
					}
					return nil, busy
				}
				return &Cluster{System: "dialkv"}, nil
			}
			var log strings.Builder
			c, got, err := StartRetrying(ctx, start, Options{Binary: "kvd", PortBase: tc.portBase}, dir, &log)
			if !slices.Equal(dirs, tc.wantDirs) {
				t.Errorf("started in %v; want %v", dirs, tc.wantDirs)
			}
			if n := strings.Count(log.String(), "start attempt"); n != tc.wantLines {
				t.Errorf("log %q: %d failures named; want %d", log.String(), n, tc.wantLines)
			}
			if tc.wantErr {
				if !errors.Is(err, busy) || c != nil {
					t.Fatalf("StartRetrying = %v, %v; want the last start's error", c, err)
				}
				return
			}
			if err != nil || c == nil || got != filepath.Join(dir, tc.wantDirs[len(tc.wantDirs)-1]) {
				t.Fatalf("StartRetrying = %v, %q, %v", c, got, err)
			}
		})
	}
}
