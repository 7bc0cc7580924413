package ui_test

import (
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/dialkv/dialkv/api"
	"github.com/dialkv/dialkv/api/ui"
	"github.com/prometheus/client_golang/prometheus"
)

// newServer serves the node's whole HTTP handler, as kvd does: the
// console's routes are only right if they are right there. The routes
// under test never reach the backend, so there is none.
func newServer(t *testing.T) *httptest.Server {
	t.Helper()
	reg := prometheus.NewRegistry()
	svc := api.NewService(nil, api.DefaultLimits(), api.NewMetrics(reg), nil)
	srv := httptest.NewServer(api.NewHTTPHandler(svc, reg, nil))
	t.Cleanup(srv.Close)
	return srv
}

func TestHandler_ServesTheConsoleAndRefusesOtherPaths(t *testing.T) {
	srv := newServer(t)
	index, err := os.ReadFile("static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, path string
		status       int
		contentType  string
		body         string // a substring the body must hold
		reason       string // X-Dialkv-Reason of an error
	}{
		{"GET", "/ui", 200, "text/html", string(index), ""},
		{"GET", "/ui/", 200, "text/html", string(index), ""},
		{"HEAD", "/ui", 200, "text/html", "", ""},
		{"GET", "/ui/app.js", 200, "text/javascript", "function refresh()", ""},
		{"GET", "/ui/style.css", 200, "text/css", ".segment", ""},
		{"GET", "/ui/nope.js", 404, "application/json", `"UNKNOWN_PATH"`, "UNKNOWN_PATH"},
		{"GET", "/ui/static/app.js", 404, "application/json", "", "UNKNOWN_PATH"},
		{"GET", "/ui/.hidden", 404, "application/json", "", "UNKNOWN_PATH"},
		{"GET", "/uix", 404, "application/json", "", "UNKNOWN_PATH"},
		{"GET", "/ui/../metrics", 404, "application/json", "", "UNKNOWN_PATH"},
		{"POST", "/ui", 405, "application/json", "", "METHOD_NOT_ALLOWED"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			// The client would clean "/ui/../metrics" itself; send it raw.
			req.URL.Opaque = tc.path
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d; want %d (body %.200s)", resp.StatusCode, tc.status, body)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.contentType) {
				t.Errorf("Content-Type %q; want %s", ct, tc.contentType)
			}
			if !strings.Contains(string(body), tc.body) {
				t.Errorf("body %.300s; want it to contain %q", body, tc.body)
			}
			if got := resp.Header.Get(api.HeaderReason); got != tc.reason {
				t.Errorf("%s %q; want %q", api.HeaderReason, got, tc.reason)
			}
			if tc.status == 200 {
				csp := resp.Header.Get("Content-Security-Policy")
				for _, want := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'"} {
					if !strings.Contains(csp, want) {
						t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
					}
				}
				if got := resp.Header.Get("Cache-Control"); got != "no-cache" {
					t.Errorf("Cache-Control %q; want no-cache", got)
				}
			}
			if tc.status != 200 {
				var e struct{ Error, Reason string }
				if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
					t.Errorf("error body %q is not the API's JSON error (%v)", body, err)
				}
			}
		})
	}
}

// TestStatic_FetchesNothingFromOutside holds the console to "no CDN, no
// build step": no file names another host, and every resource index.html
// loads is one of the embedded files.
func TestStatic_FetchesNothingFromOutside(t *testing.T) {
	files := staticFiles(t)
	external := regexp.MustCompile(`(?i)(https?:|wss?:|ftp:)?//[a-z0-9.-]+\.[a-z]{2,}|@import|url\(`)
	for name, body := range files {
		for _, m := range external.FindAllString(body, -1) {
			t.Errorf("%s references %q: the console may load only its own files from its own node", name, m)
		}
	}
	refs := regexp.MustCompile(`(?:src|href)="([^"]*)"`).FindAllStringSubmatch(files["index.html"], -1)
	if len(refs) < 2 {
		t.Fatalf("index.html loads %d resources; want app.js and style.css at least", len(refs))
	}
	for _, m := range refs {
		name, ok := strings.CutPrefix(m[1], ui.Prefix+"/")
		if _, found := files[name]; !ok || !found {
			t.Errorf("index.html loads %q, which is not /ui/ and an embedded file", m[1])
		}
	}
}

// TestStatic_ScriptFindsEveryElementItUses catches a renamed id in one
// file and not the other: app.js would throw on a null element and the
// page would stop refreshing.
func TestStatic_ScriptFindsEveryElementItUses(t *testing.T) {
	files := staticFiles(t)
	ids := map[string]bool{}
	for _, m := range regexp.MustCompile(`\bid="([^"]+)"`).FindAllStringSubmatch(files["index.html"], -1) {
		ids[m[1]] = true
	}
	used := regexp.MustCompile(`(?:\$\(|fillBody\(|showError\()'([^']+)'`).FindAllStringSubmatch(files["app.js"], -1)
	if len(used) < 10 {
		t.Fatalf("found %d element lookups in app.js: the pattern is broken", len(used))
	}
	for _, m := range used {
		if !ids[m[1]] {
			t.Errorf("app.js looks up #%s, which index.html does not have", m[1])
		}
	}
}

func staticFiles(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := fs.WalkDir(os.DirFS("static"), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(filepath.Join("static", p))
		out[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"index.html", "app.js", "style.css"} {
		if out[want] == "" {
			t.Fatalf("static/%s is missing or empty", want)
		}
	}
	return out
}
