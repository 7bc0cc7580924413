package replication_test

import (
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/dialkv/dialkv/harness"
	"github.com/dialkv/dialkv/replication"
)

// newLowMux starts a Mux on 127.0.0.1 at a port below the ephemeral range
// (harness.FreePorts), trying again when another process took the port
// between its pick and the Mux's bind.
func newLowMux(t *testing.T) *replication.Mux {
	t.Helper()
	var last error
	for range 10 {
		ports, err := harness.FreePorts(1)
		if err != nil {
			t.Fatal(err)
		}
		m, err := replication.NewMux(harness.Addr(ports[0]), nil, slog.New(slog.DiscardHandler))
		if err == nil {
			t.Cleanup(func() { m.Close() })
			return m
		}
		last = err
	}
	t.Fatalf("no Mux on a free port after 10 tries: %v", last)
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
