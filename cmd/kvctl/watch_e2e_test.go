package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/client"
	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/harness"
)

// TestKvctl_WatchAndLeaseEndToEnd runs the README's watch and lease
// examples against a real node: a watch from now sees a put and a
// lease's revoke (with its cause), and a second watch from the first
// one's starting cursor prints the same two events.
func TestKvctl_WatchAndLeaseEndToEnd(t *testing.T) {
	ep := startAuthNode(t) // auth stays off
	harness.Eventually(t, "the node serves writes", 30*time.Second, func() bool {
		return kvctl(t, invocation{}, at(ep, "put", "warm", "up")...).code == exitOK
	})
	id := int64(decodeLines(t, mustRun(t, invocation{}, at(ep, "-w", "json", "lease", "grant", "30")...))[0]["id"].(float64))
	mustRun(t, invocation{}, at(ep, "put", "svc/a", "1", "--lease", fmt.Sprint(id))...)

	c, err := client.New(client.Config{Endpoints: []string{ep}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := make(chan string, 1)
	events := make(chan *kvpb.Event, 16)
	done := make(chan error, 1)
	go func() {
		for m, err := range c.Watch(ctx, client.WatchOptions{Prefix: []byte("svc/")}) {
			if err != nil {
				done <- err
				return
			}
			select {
			case start <- m.GetCursor():
			default:
			}
			for _, ev := range m.GetEvents() {
				events <- ev
			}
		}
	}()
	var from string
	select {
	case from = <-start:
	case err := <-done:
		t.Fatalf("watch: %v", err)
	case <-ctx.Done():
		t.Fatal("no first message from the watch")
	}
	mustRun(t, invocation{}, at(ep, "put", "svc/b", "2")...)
	mustRun(t, invocation{}, at(ep, "lease", "revoke", fmt.Sprint(id))...)
	var got []string
	for len(got) < 2 {
		select {
		case ev := <-events:
			got = append(got, fmt.Sprintf("%s %s %s %s %d", ev.GetType(), ev.GetKey(), ev.GetValue(), ev.GetCause(), ev.GetLease()))
		case err := <-done:
			t.Fatalf("watch ended: %v (events %v)", err, got)
		case <-ctx.Done():
			t.Fatalf("events %v; want 2 before the deadline", got)
		}
	}
	want := []string{"EVENT_TYPE_PUT svc/b 2 DELETE_CAUSE_UNSPECIFIED 0", fmt.Sprintf("EVENT_TYPE_DELETE svc/a  DELETE_CAUSE_LEASE_REVOKED %d", id)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %q; want %q", got, want)
	}

	objs := decodeLines(t, mustRun(t, invocation{}, at(ep, "-w", "json", "watch", "--prefix", "svc/", "--from", from, "--timeout", "2s")...))
	if len(objs) != 2 || objs[0]["key"] != "svc/b" || objs[1]["key"] != "svc/a" || objs[1]["cause"] != "LEASE_REVOKED" || objs[1]["lease"] != float64(id) {
		t.Fatalf("kvctl watch --from %s printed %v; want the same two events", from, objs)
	}
	if r := kvctl(t, invocation{}, at(ep, "lease", "ttl", fmt.Sprint(id))...); r.code != exitNotFound {
		t.Fatalf("lease ttl of a revoked lease: exit %d; want %d", r.code, exitNotFound)
	}
}
