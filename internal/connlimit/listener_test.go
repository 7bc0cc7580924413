package connlimit

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pipeListener is a net.Listener over in-memory pipes: dial hands it the
// server end of a new pipe and returns the client end.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (p *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.done:
		return nil, net.ErrClosed
	}
}

func (p *pipeListener) Close() error {
	p.once.Do(func() { close(p.done) })
	return nil
}

func (p *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

const waitLimit = 5 * time.Second

func (p *pipeListener) dial(t *testing.T) net.Conn {
	t.Helper()
	server, client := net.Pipe()
	select {
	case p.conns <- server:
	case <-time.After(waitLimit):
		t.Fatal("nobody accepted within 5s")
	}
	t.Cleanup(func() { client.Close() })
	return client
}

// serve accepts from l until it fails and passes each connection on.
func serve(t *testing.T, l *Listener) <-chan net.Conn {
	accepted := make(chan net.Conn, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("Accept: %v", err)
				}
				return
			}
			accepted <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		close(accepted)
		for c := range accepted {
			c.Close()
		}
	})
	return accepted
}

func next(t *testing.T, accepted <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c := <-accepted:
		return c
	case <-time.After(waitLimit):
		t.Fatal("no connection accepted within 5s")
		return nil
	}
}

// readAll reads what the server sends until it closes the connection.
func readAll(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading until the server closes: %v (read %q)", err, b)
	}
	return string(b)
}

func TestListener_RefusesPastTheCapUntilASlotIsFreed(t *testing.T) {
	pl := newPipeListener()
	l := NewListener(pl, 2, nil)
	accepted := serve(t, l)

	pl.dial(t)
	s1 := next(t, accepted)
	pl.dial(t)
	next(t, accepted)
	if got := readAll(t, pl.dial(t)); got != "" {
		t.Fatalf("third connection read %q, want a plain close", got)
	}
	if l.Open() != 2 || l.Refused() != 1 || l.Max() != 2 {
		t.Fatalf("open %d refused %d max %d, want 2, 1, 2", l.Open(), l.Refused(), l.Max())
	}

	// Closing twice frees one slot, not two.
	s1.Close()
	s1.Close()
	if l.Open() != 1 {
		t.Fatalf("open %d after closing one connection twice, want 1", l.Open())
	}
	pl.dial(t)
	next(t, accepted)
	readAll(t, pl.dial(t))
	if l.Open() != 2 || l.Refused() != 2 {
		t.Fatalf("open %d refused %d, want 2 and 2", l.Open(), l.Refused())
	}
}

func TestListener_RunsAtMostRefusalSlotsRefusalsAtOnce(t *testing.T) {
	pl := newPipeListener()
	started, release := make(chan struct{}, RefusalSlots+1), make(chan struct{})
	l := NewListener(pl, 1, func(c net.Conn) {
		defer c.Close()
		started <- struct{}{}
		<-release
		io.WriteString(c, "busy")
	})
	serve(t, l)
	pl.dial(t) // takes the only slot

	var refused []net.Conn
	for range RefusalSlots {
		refused = append(refused, pl.dial(t))
		select {
		case <-started:
		case <-time.After(waitLimit):
			t.Fatal("refusal did not start within 5s")
		}
	}
	// Every refusal slot is busy: the next one is closed without a word.
	if got := readAll(t, pl.dial(t)); got != "" {
		t.Fatalf("connection past the refusal slots read %q, want a plain close", got)
	}
	close(release)
	for i, c := range refused {
		if got := readAll(t, c); got != "busy" {
			t.Fatalf("refused connection %d read %q, want the refusal's answer", i, got)
		}
	}
	if l.Refused() != RefusalSlots+1 {
		t.Fatalf("refused %d, want %d", l.Refused(), RefusalSlots+1)
	}
}

// TestListener_NeverHandsOutMoreThanTheCap runs many clients against a
// small cap, each connection held for a moment by the server, and checks
// that no more than the cap are ever held and every connection is either
// served or refused.
func TestListener_NeverHandsOutMoreThanTheCap(t *testing.T) {
	const limit, clients, dials = 8, 32, 50
	pl := newPipeListener()
	l := NewListener(pl, limit, nil)

	var held, maxHeld, served atomic.Int64
	var handlers sync.WaitGroup
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			h := held.Add(1)
			for m := maxHeld.Load(); h > m && !maxHeld.CompareAndSwap(m, h); m = maxHeld.Load() {
			}
			served.Add(1)
			handlers.Go(func() {
				io.WriteString(c, "ok") // blocks until the client reads: the connection is held meanwhile
				held.Add(-1)
				c.Close()
			})
		}
	}()

	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range dials {
				server, client := net.Pipe()
				pl.conns <- server
				client.SetReadDeadline(time.Now().Add(waitLimit))
				if _, err := io.ReadAll(client); err != nil {
					t.Errorf("client: %v", err)
				}
				client.Close()
			}
		})
	}
	wg.Wait()
	pl.Close()
	<-acceptDone
	handlers.Wait()

	if m := maxHeld.Load(); m > limit {
		t.Fatalf("%d connections held at once, cap %d", m, limit)
	}
	if total := served.Load() + int64(l.Refused()); total != clients*dials {
		t.Fatalf("served %d + refused %d = %d, want every one of %d", served.Load(), l.Refused(), total, clients*dials)
	}
	if served.Load() < limit {
		t.Fatalf("only %d connections served", served.Load())
	}
	if l.Open() != 0 {
		t.Fatalf("%d connections still counted open after all closed", l.Open())
	}
	t.Logf("served %d, refused %d, at most %d held", served.Load(), l.Refused(), maxHeld.Load())
}
