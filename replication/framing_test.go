package replication

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/dialkv/dialkv/replication/frame"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/dialkv/dialkv/harness"
	"github.com/hashicorp/raft"
)

// freeLocalAddr is a 127.0.0.1 address below the kernel's ephemeral range
// that was free a moment ago (see harness.FreePorts).
func freeLocalAddr(t *testing.T) string {
	t.Helper()
	ports, err := harness.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return harness.Addr(ports[0])
}

// tapeConn is a net.Conn that records writes and replays a fixed input.
type tapeConn struct {
	net.Conn // nil: only the methods below are used
	out      bytes.Buffer
	in       io.Reader
	closed   bool
}

func (c *tapeConn) Write(p []byte) (int, error) { return c.out.Write(p) }
func (c *tapeConn) Read(p []byte) (int, error)  { return c.in.Read(p) }
func (c *tapeConn) Close() error                { c.closed = true; return nil }

// frames writes msgs through a framed conn and returns the wire bytes
// and the offset at which each frame starts.
func frames(t *testing.T, msgs [][]byte) (wire []byte, starts []int) {
	t.Helper()
	tape := &tapeConn{}
	w := newFramedConn(tape)
	for _, m := range msgs {
		starts = append(starts, tape.out.Len())
		if n, err := w.Write(m); err != nil || n != len(m) {
			t.Fatalf("write %d bytes: n=%d err=%v", len(m), n, err)
		}
	}
	return tape.out.Bytes(), starts
}

func TestFramedConn(t *testing.T) {
	msgs := [][]byte{
		bytes.Repeat([]byte("a"), 100),
		bytes.Repeat([]byte("b"), 5000),
		bytes.Repeat([]byte("c"), 70),
		bytes.Repeat([]byte("d"), 300),
	}
	var sent []byte
	for _, m := range msgs {
		sent = append(sent, m...)
	}
	wire, starts := frames(t, msgs)

	cut := func(b []byte, from, to int) []byte { return append(append([]byte{}, b[:from]...), b[to:]...) }
	tests := []struct {
		name    string
		wire    []byte
		wantErr error // nil: the whole stream arrives, then io.EOF
	}{
		{"whole stream", wire, nil},
		{"bit flipped in a payload", func() []byte {
			b := bytes.Clone(wire)
			b[starts[1]+frame.HeaderLen+10] ^= 1
			return b
		}(), ErrStreamCorrupt},
		{"bit flipped in a header", func() []byte {
			b := bytes.Clone(wire)
			b[starts[2]+5] ^= 1
			return b
		}(), ErrStreamCorrupt},
		{"frame lost", cut(wire, starts[1], starts[2]), ErrStreamCorrupt},
		{"frame repeated", append(bytes.Clone(wire[:starts[2]]), wire[starts[1]:]...), ErrStreamCorrupt},
		{"bytes lost across frames (a splice)", cut(wire, starts[0]+frame.HeaderLen+40, starts[2]+frame.HeaderLen+40), ErrStreamCorrupt},
		{"absurd length", func() []byte {
			b := bytes.Clone(wire)
			b[starts[1]] = 0xff
			return b
		}(), ErrStreamCorrupt},
		{"cut in the middle of a frame", wire[:starts[2]+frame.HeaderLen+3], io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tape := &tapeConn{in: bytes.NewReader(tt.wire)}
			r := newFramedConn(tape)
			got, err := io.ReadAll(r) // ReadAll treats io.EOF as success
			if tt.wantErr == nil {
				if err != nil || !bytes.Equal(got, sent) {
					t.Fatalf("got %d bytes, err %v; want all %d bytes", len(got), err, len(sent))
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			// Only whole, checked frames are delivered: what arrived is
			// exactly some prefix of the messages.
			if !isMessagePrefix(got, msgs) {
				t.Fatalf("delivered %d bytes that are not whole messages from the start", len(got))
			}
			if errors.Is(err, ErrStreamCorrupt) && !tape.closed {
				t.Fatal("a corrupt stream must close its connection")
			}
			if _, again := r.Read(make([]byte, 1)); !errors.Is(again, tt.wantErr) {
				t.Fatalf("a broken stream must stay broken, got %v", again)
			}
		})
	}
}

func isMessagePrefix(got []byte, msgs [][]byte) bool {
	var want []byte
	for _, m := range msgs {
		if bytes.Equal(got, want) {
			return true
		}
		want = append(want, m...)
	}
	return bytes.Equal(got, want)
}

func TestFramedConn_LargeWritesSplit(t *testing.T) {
	big := make([]byte, 2*frame.MaxPayload+123)
	for i := range big {
		big[i] = byte(i * 7)
	}
	wire, _ := frames(t, [][]byte{big})
	if want := len(big) + 3*frame.HeaderLen; len(wire) != want {
		t.Fatalf("wire has %d bytes, want %d (three frames)", len(wire), want)
	}
	got, err := io.ReadAll(newFramedConn(&tapeConn{in: bytes.NewReader(wire)}))
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("round trip of %d bytes: got %d, err %v", len(big), len(got), err)
	}
}

// Over a real loopback connection through the mux: what a range's layer
// dials is framed, and the peer's layer accepts it as the same stream.
func TestMux_RaftStreamsAreFramed(t *testing.T) {
	m, err := NewMux(freeLocalAddr(t), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	layer := m.RangeLayer(7)
	c, err := layer.Dial(raft.ServerAddress(m.Addr().String()), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*framedConn); !ok {
		t.Fatalf("dialled %T, want a framed connection", c)
	}
	s, err := layer.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 3 {
		msg := fmt.Appendf(nil, "message %d", i)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("got %q, err %v; want %q", got, err, msg)
		}
	}
}
