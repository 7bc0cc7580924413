package jepsen

import (
	"bufio"
	"net"
	"testing"
	"time"

	"github.com/dialkv/dialkv/harness"
)

// echoServer answers every line with the same line; it counts the lines
// it received.
func echoServer(t *testing.T) (addr string, got chan string) {
	t.Helper()
	ln, err := harness.ListenLocal()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got = make(chan string, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					got <- line
					c.Write([]byte(line))
				}
			}()
		}
	}()
	return ln.Addr().String(), got
}

type lineConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialLine(t *testing.T, addr string) *lineConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &lineConn{c, bufio.NewReader(c)}
}

// roundTrip sends a line and waits up to d for the echo: the echo, or ""
// and the error.
func (l *lineConn) roundTrip(line string, d time.Duration) (string, error) {
	l.c.SetDeadline(time.Now().Add(d))
	if _, err := l.c.Write([]byte(line + "\n")); err != nil {
		return "", err
	}
	s, err := l.r.ReadString('\n')
	return s, err
}

func recv(got chan string, d time.Duration) string {
	select {
	case s := <-got:
		return s
	case <-time.After(d):
		return ""
	}
}

func TestProxy_Faults(t *testing.T) {
	nt, paddr, got := proxiedEcho(t)
	if _, err := nt.PeerAddr(0, 1, "10.0.0.1:80"); err == nil {
		t.Fatal("a proxy to an address outside 127.0.0.0/8 was accepted")
	}
	a2b, b2a := [2]int{0, 1}, [2]int{1, 0}

	c := dialLine(t, paddr)
	if s, err := c.roundTrip("hello", time.Second); err != nil || s != "hello\n" {
		t.Fatalf("through a healthy link: %q %v", s, err)
	}
	<-got

	// Delay: both ways, so the round trip takes twice the delay.
	nt.Set(Link{Delay: 100 * time.Millisecond}, a2b, b2a)
	start := time.Now()
	if s, err := c.roundTrip("slow", 2*time.Second); err != nil || s != "slow\n" {
		t.Fatalf("through a slow link: %q %v", s, err)
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("round trip over two 100ms links took %v", took)
	}
	<-got
	nt.Heal()

	// One way, a->b dropped: the server hears nothing.
	nt.Set(Link{Drop: true}, a2b)
	if s, err := c.roundTrip("lost", 300*time.Millisecond); err == nil {
		t.Fatalf("a->b dropped, yet got %q", s)
	}
	if s := recv(got, 100*time.Millisecond); s != "" {
		t.Fatalf("a->b dropped, yet the server got %q", s)
	}
	// Healing closes the broken connection; a new one works.
	nt.Heal()
	time.Sleep(50 * time.Millisecond)
	if _, err := c.roundTrip("after", 300*time.Millisecond); err == nil {
		t.Errorf("a connection that lost bytes still works after the heal")
	}
	c = dialLine(t, paddr)
	if s, err := c.roundTrip("fresh", time.Second); err != nil || s != "fresh\n" {
		t.Fatalf("new connection after heal: %q %v", s, err)
	}
	<-got

	// The other way, b->a dropped: the server hears a, a hears nothing.
	nt.Set(Link{Drop: true}, b2a)
	if s, err := c.roundTrip("one-way", 300*time.Millisecond); err == nil {
		t.Fatalf("b->a dropped, yet a got %q", s)
	}
	if s := recv(got, time.Second); s != "one-way\n" {
		t.Fatalf("b->a dropped: the server should still hear a, got %q", s)
	}
	nt.Heal()

	// Reject: open connections are reset, new ones closed at once.
	c = dialLine(t, paddr)
	if s, err := c.roundTrip("x", time.Second); err != nil || s != "x\n" {
		t.Fatalf("before reject: %q %v", s, err)
	}
	<-got
	nt.Set(Link{Reject: true}, a2b, b2a)
	if _, err := c.roundTrip("y", 500*time.Millisecond); err == nil {
		t.Errorf("an open connection survived reject")
	}
	c2 := dialLine(t, paddr)
	if _, err := c2.roundTrip("z", 500*time.Millisecond); err == nil {
		t.Errorf("a new connection worked while rejecting")
	}
	if got := nt.Faulty(); len(got) != 2 {
		t.Errorf("Faulty() = %v", got)
	}
	nt.Heal()
	c = dialLine(t, paddr)
	if s, err := c.roundTrip("back", time.Second); err != nil || s != "back\n" {
		t.Fatalf("after heal: %q %v", s, err)
	}
}

// A stream that lost bytes is never spliced back together: bytes written
// on it after the link heals must not reach the server, even in the moment
// before the heal's clean-up closes the connection. (A spliced stream is a
// fault no real network makes: the receiver may decode the tail of one
// message and the start of the next as a different, valid message.)
func TestProxy_NoSpliceAfterDrop(t *testing.T) {
	nt, paddr, got := proxiedEcho(t)
	a2b := [2]int{0, 1}
	c := dialLine(t, paddr)
	if s, err := c.roundTrip("hello", time.Second); err != nil || s != "hello\n" {
		t.Fatalf("through a healthy link: %q %v", s, err)
	}
	<-got

	nt.Set(Link{Drop: true}, a2b)
	if _, err := c.c.Write([]byte("first-half-")); err != nil {
		t.Fatal(err)
	}
	// Wait (bounded) until the proxy has read and dropped those bytes.
	harness.Eventually(t, "the proxy to drop the bytes", 5*time.Second, func() bool { return nt.Stats()["n1->n2"][1] != 0 })
	// Heal the link's state only, as Set does before it closes broken
	// connections: the window in which a pump could forward again.
	nt.mu.Lock()
	delete(nt.links, a2b)
	nt.mu.Unlock()
	if _, err := c.c.Write([]byte("second-half\n")); err != nil {
		t.Fatal(err)
	}
	if s := recv(got, 300*time.Millisecond); s != "" {
		t.Fatalf("the server got %q from a stream that had lost bytes", s)
	}
}

// proxiedEcho starts an echo server behind the proxy of link n1->n2.
func proxiedEcho(t *testing.T) (nt *Net, paddr string, got chan string) {
	t.Helper()
	addr, got := echoServer(t)
	nt = NewNet(2, t.Logf)
	t.Cleanup(func() { nt.Close() })
	paddr, err := nt.PeerAddr(0, 1, addr)
	if err != nil {
		t.Fatal(err)
	}
	return nt, paddr, got
}
