package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/client"
	"github.com/dialkv/dialkv/api/client/clienttest"
	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/harness"
)

// TestKvctl_ExportThenImportIntoAFreshNode is the round trip: a node whose
// keys span four ranges is exported, the file imported into a fresh node,
// and both nodes then hold the same keys with the same values, byte for
// byte (tabs and carriage returns in values, bytes that are not UTF-8).
func TestKvctl_ExportThenImportIntoAFreshNode(t *testing.T) {
	src, dst := startAuthNode(t), startAuthNode(t)
	for _, ep := range []string{src, dst} {
		harness.Eventually(t, "the node serves writes", 30*time.Second, func() bool {
			return kvctl(t, invocation{}, at(ep, "put", "warm", "up")...).code == exitOK
		})
	}
	for _, k := range []string{"b", "d", "f"} {
		mustRun(t, invocation{}, at(src, "range", "split", k)...)
	}
	if n := len(decodeLines(t, mustRun(t, invocation{}, at(src, "-w", "json", "range", "list")...))[0]["ranges"].([]any)); n != 4 {
		t.Fatalf("source has %d ranges; want 4", n)
	}
	c, err := client.New(client.Config{Endpoints: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	want := map[string]string{"warm": "up"}
	for i := range 2500 {
		k := fmt.Sprintf("%c/%04d", "abcdefg"[i%7], i)
		v := fmt.Sprintf("value\t%d\r", i)
		if i%100 == 0 {
			v = string([]byte{0xff, 0x00, byte(i % 256)})
		}
		if i%250 == 0 {
			v = ""
		}
		if _, err := c.Put(ctx, []byte(k), []byte(v)); err != nil {
			t.Fatal(err)
		}
		want[k] = v
	}

	file := filepath.Join(t.TempDir(), "dump.tsv")
	r := kvctl(t, invocation{}, at(src, "export", "--output", file)...)
	if r.code != exitOK || r.stdout != "" {
		t.Fatalf("export: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if !regexp.MustCompile(`^exported 2501 keys \(\d+\.\d KiB\) in \S+\n$`).MatchString(r.stderr) {
		t.Errorf("export summary %q; want one plain line on stderr (it is no terminal)", r.stderr)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("export file: %v, %v; want mode 0600", fi, err)
	}
	out := mustRun(t, invocation{}, at(dst, "import", file)...)
	if !strings.HasPrefix(out, "imported 2501 keys") {
		t.Fatalf("import: %q", out)
	}
	if got := scanAll(t, dst); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("the fresh node holds %d keys that differ from the %d exported", len(got), len(want))
	}

	// --prefix to stdout: the keys of one prefix, spanning a range
	// boundary ("b" splits nothing inside "c/", "d" starts a range).
	r = kvctl(t, invocation{}, at(src, "export", "--prefix", "c/")...)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if r.code != exitOK || len(lines) != 357 {
		t.Fatalf("export --prefix c/: exit %d, %d lines; want 357 (stderr %q)", r.code, len(lines), r.stderr)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "c/") {
			t.Fatalf("export --prefix c/ wrote %q", l)
		}
	}
}

func scanAll(t *testing.T, ep string) map[string]string {
	t.Helper()
	c, err := client.New(client.Config{Endpoints: []string{ep}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := map[string]string{}
	err = c.ScanAll(ctx, nil, func(kv *kvpb.KeyValue) error {
		got[string(kv.GetKey())] = string(kv.GetValue())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestKvctl_Export(t *testing.T) {
	for _, tc := range []struct {
		name       string
		keys       map[string]string
		args       []string
		tty        bool
		wantCode   int
		wantStdout string
		wantStderr []string // substrings
	}{
		{
			name:       "pages in key order",
			keys:       map[string]string{"a": "1", "b": "2", "c": "3", "d": "4", "e": "5", "f": "6", "g": "7"},
			wantStdout: "a\t1\nb\t2\nc\t3\nd\t4\ne\t5\nf\t6\ng\t7\n",
			wantStderr: []string{"exported 7 keys (28 B) in "},
		},
		{
			name:       "prefix",
			keys:       map[string]string{"app/1": "x", "app/2": "y", "apq": "z", "ap": "w"},
			args:       []string{"--prefix", "app/"},
			wantStdout: "app/1\tx\napp/2\ty\n",
		},
		{
			name:       "prefix of 0xff bytes runs to the end",
			keys:       map[string]string{"\xff\xff": "a", "\xff\xff\x01": "b", "\xfe": "c"},
			args:       []string{"--prefix", "\xff\xff"},
			wantStdout: "\xff\xff\ta\n\xff\xff\x01\tb\n",
		},
		{
			name:       "unrepresentable keys are skipped, named, and fail the export",
			keys:       map[string]string{"a": "1", "tab\tkey": "2", "nl\nkey": "3", "v": "two\nlines", "z": "tab\tin value"},
			wantCode:   exitError,
			wantStdout: "a\t1\nz\ttab\tin value\n",
			wantStderr: []string{`skipped key "nl\nkey"`, `skipped key "tab\tkey"`, `skipped key "v"`, "3 keys have no KEY<TAB>VALUE line", "the other 2 were written"},
		},
		{
			name:       "progress bar on a terminal",
			keys:       map[string]string{"a": "1", "b": "2"},
			tty:        true,
			wantStdout: "a\t1\nb\t2\n",
			wantStderr: []string{"exporting", "exported 2 keys"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := clienttest.Start(t, clienttest.WithPageSize(2))
			for k, v := range tc.keys {
				srv.Store.Put([]byte(k), []byte(v))
			}
			r := kvctl(t, invocation{stderrTTY: tc.tty}, at(srv.Addr, append([]string{"export"}, tc.args...)...)...)
			if r.code != tc.wantCode {
				t.Fatalf("exit %d; want %d (stderr %q)", r.code, tc.wantCode, r.stderr)
			}
			if r.stdout != tc.wantStdout {
				t.Errorf("stdout %q; want %q", r.stdout, tc.wantStdout)
			}
			for _, s := range tc.wantStderr {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("stderr %q; want it to contain %q", r.stderr, s)
				}
			}
			if bar := strings.Contains(r.stderr, "\r"); bar != tc.tty {
				t.Errorf("progress bar drawn: %v; want %v (stderr %q)", bar, tc.tty, r.stderr)
			}
		})
	}

	t.Run("output file is written whole or not at all", func(t *testing.T) {
		srv := clienttest.Start(t, clienttest.WithPageSize(2))
		for _, k := range []string{"a", "b", "c", "d"} {
			srv.Store.Put([]byte(k), []byte("v"))
		}
		dir := t.TempDir()
		file := filepath.Join(dir, "out.tsv")
		if err := os.WriteFile(file, []byte("previous\tcontent\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		srv.Fail(clienttest.MethodScan, 100, clienttest.NotLeader(""))
		r := kvctl(t, invocation{}, at(srv.Addr, "--timeout", "500ms", "export", "--output", file)...)
		if r.code != exitUnavailable {
			t.Fatalf("exit %d; want %d (stderr %q)", r.code, exitUnavailable, r.stderr)
		}
		if b, _ := os.ReadFile(file); string(b) != "previous\tcontent\n" {
			t.Errorf("a failed export changed %s to %q", file, b)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 1 {
			t.Errorf("a failed export left files behind: %v", entries)
		}
	})
}
