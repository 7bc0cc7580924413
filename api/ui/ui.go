package ui

import (
	"bytes"
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// Prefix is the path the console is served under.
const Prefix = "/ui"

// contentSecurityPolicy keeps the page to its own origin: the console
// must work on a host without internet access, and a key rendered into
// the page can never load or run anything.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

// Handler serves the console: index.html at /ui and /ui/, the other
// static files by name under /ui/. Any other path under /ui/ goes to
// notFound, so that the node answers it as it answers every unknown path.
func Handler(notFound http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, ok := fileName(r.URL.Path)
		if !ok {
			notFound.ServeHTTP(w, r)
			return
		}
		b, err := fs.ReadFile(static, "static/"+name)
		if err != nil {
			notFound.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// The files change with the binary; a stale app.js against a newer
		// API would draw nonsense, so the browser revalidates every time.
		h.Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
	})
}

// fileName maps a request path to a file in static/: "" for anything that
// is not /ui, /ui/ or /ui/NAME with NAME a plain file name.
func fileName(p string) (string, bool) {
	rest, ok := strings.CutPrefix(p, Prefix)
	switch {
	case !ok:
		return "", false
	case rest == "" || rest == "/":
		return "index.html", true
	}
	name, ok := strings.CutPrefix(rest, "/")
	if !ok || name == "" || strings.Contains(name, "/") || path.Clean(name) != name || strings.HasPrefix(name, ".") {
		return "", false
	}
	return name, true
}
