package api

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strconv"

	"github.com/dialkv/dialkv/api/rpctypes"
	"google.golang.org/grpc/codes"
)

// JSONRequestErrors wraps the HTTP API's listener so that the requests
// net/http refuses before any handler runs get the JSON error body and
// X-Dialkv-Reason too: a request line that does not parse (a path with a
// malformed percent-escape such as /v1/kv/a%zz), a malformed header, a
// header block over the limit. net/http answers those itself, in plain
// text written straight to the connection, and then closes it; the
// connections returned here recognise exactly that answer and write the
// JSON one in its place. Everything else passes through untouched.
func JSONRequestErrors(ln net.Listener) net.Listener {
	return jsonErrorListener{ln}
}

type jsonErrorListener struct{ net.Listener }

func (l jsonErrorListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &jsonErrorConn{Conn: c}, nil
}

type jsonErrorConn struct{ net.Conn }

// CloseWrite keeps net/http's half-close (it answers some refusals, then
// closes its side and drains the client's) working through the wrapper.
func (c *jsonErrorConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// net/http's refusal of a request it could not read is one write of
// "HTTP/1.1 " + status + plainErrorHeaders + body. No handler's response
// looks like it: net/http adds a Date header to every one of those.
const (
	statusLinePrefix  = "HTTP/1.1 "
	plainErrorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
)

func (c *jsonErrorConn) Write(p []byte) (int, error) {
	if out, ok := jsonRefusal(p); ok {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// jsonRefusal returns the JSON response that replaces p when p is
// net/http's plain-text refusal of a request.
func jsonRefusal(p []byte) ([]byte, bool) {
	rest, ok := bytes.CutPrefix(p, []byte(statusLinePrefix))
	if !ok {
		return nil, false
	}
	status, body, ok := bytes.Cut(rest, []byte(plainErrorHeaders))
	if !ok || bytes.Contains(status, []byte("\r\n")) || len(status) < 3 {
		return nil, false
	}
	code, err := strconv.Atoi(string(status[:3]))
	if err != nil || code < 400 || code > 599 {
		return nil, false
	}
	reason := rpctypes.ReasonInvalid
	if code == http.StatusRequestHeaderFieldsTooLarge {
		reason = rpctypes.ReasonTooLarge
	}
	msg := fmt.Sprintf("dialkv: the HTTP request could not be read (%s): its request line, a header, or the percent-encoding of its path does not parse", bytes.TrimSpace(body))
	js := errorJSON(msg, reason, codes.InvalidArgument)
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", code, http.StatusText(code))
	fmt.Fprintf(&b, "Content-Type: application/json\r\n%s: %s\r\nConnection: close\r\nContent-Length: %d\r\n\r\n", HeaderReason, reason, len(js))
	b.Write(js)
	return b.Bytes(), true
}
