package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/harness"
	"github.com/dialkv/dialkv/internal/connlimit"
)

// listenLocal listens on a free 127.0.0.1 port below the kernel's
// ephemeral range until the test ends.
func listenLocal(t *testing.T) net.Listener {
	t.Helper()
	ln, err := harness.ListenLocal()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// TestRefuseHTTP_AnswersPastTheCapWith503 fills an HTTP port capped at one
// connection and sends requests with bodies to it: each gets a readable
// 503 with reason TOO_MANY_CONNECTIONS (not a reset, though the server
// never reads the body), and the port serves again once the slot is free.
func TestRefuseHTTP_AnswersPastTheCapWith503(t *testing.T) {
	lim := connlimit.NewListener(listenLocal(t), 1, RefuseHTTP)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lim) }()
	t.Cleanup(func() {
		srv.Close()
		<-served
	})
	url := "http://" + lim.Addr().String() + "/v1/kv/k"

	// The holder keeps the only slot with an idle keep-alive connection.
	holder := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}, Timeout: 5 * time.Second}
	do := func(c *http.Client, body []byte) (*http.Response, []byte, error) {
		req, _ := http.NewRequest(http.MethodPut, url, bytes.NewReader(body))
		resp, err := c.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, b, err
	}
	if resp, _, err := do(holder, []byte("v")); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("first client: %v %v", resp, err)
	}

	body := bytes.Repeat([]byte("x"), 256<<10) // more than the socket buffers
	const attempts = 20
	for i := range attempts {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
		resp, b, err := do(c, body)
		if err != nil {
			t.Fatalf("attempt %d past the cap: %v, want a 503", i, err)
		}
		var e struct{ Reason, Code string }
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(HeaderReason) != string(rpctypes.ReasonTooManyConnections) ||
			json.Unmarshal(b, &e) != nil || e.Reason != string(rpctypes.ReasonTooManyConnections) || e.Code != "Unavailable" {
			t.Fatalf("attempt %d past the cap: %d %v %s", i, resp.StatusCode, resp.Header, b)
		}
	}
	if got := lim.Refused(); got != attempts {
		t.Fatalf("refused %d, want %d", got, attempts)
	}

	holder.CloseIdleConnections()
	harness.Eventually(t, "the holder's closed connection to leave the count", 5*time.Second, func() bool { return lim.Open() == 0 })
	c := &http.Client{Timeout: 5 * time.Second}
	if resp, _, err := do(c, []byte("v")); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("after the slot was freed: %v %v", resp, err)
	}
	c.CloseIdleConnections()
}
