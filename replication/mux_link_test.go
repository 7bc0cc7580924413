package replication_test

import (
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/dialkv/dialkv/replication"
)

// newLowMux starts a Mux on 127.0.0.1 at a port below the ephemeral range.
func newLowMux(t *testing.T) *replication.Mux {
	t.Helper()
	low := ephemeralPortLow()
	for range 200 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(10000+rand.IntN(low-10000)))
		m, err := replication.NewMux(addr, nil, slog.New(slog.DiscardHandler))
		if err == nil {
			t.Cleanup(func() { m.Close() })
			return m
		}
	}
	t.Fatal("no free port below the ephemeral range after 200 tries")
	return nil
}

// Until the node takes the link's listener, its mux treats an 'L'
// connection as a node from before the link does: it closes it at once,
// which is how a dialler tells that it must use per-range streams.
func TestMux_LinkConnectionClosedAtOnceWithoutALinkListener(t *testing.T) {
	m := newLowMux(t)
	c, err := m.DialLink(m.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read %d bytes, err %v; want the connection closed", n, err)
	}
}

func TestMux_LinkConnectionReachesTheLinkListener(t *testing.T) {
	m := newLowMux(t)
	ln := m.LinkListener()
	c, err := m.DialLink(m.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := make([]byte, 5)
	s.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(s, got); err != nil || string(got) != "hello" {
		t.Fatalf("got %q, %v; want the bytes after the kind byte", got, err)
	}
	m.Close()
	if _, err := ln.Accept(); err == nil {
		t.Fatal("the link listener accepts after the mux closed")
	}
}
