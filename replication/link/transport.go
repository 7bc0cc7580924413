package link

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// RangeTransport is one range's raft.Transport over its node's Link. It
// also implements raft.WithClose and raft.WithPreVote.
type RangeTransport struct {
	l         *Link
	id        uint64
	legacy    raft.Transport // nil: peers without the link are unreachable
	consumeCh chan raft.RPC
	done      chan struct{}
	once      sync.Once
	wg        sync.WaitGroup // mergeLegacy

	// hbMu guards hb; a leaf, never held while hb runs.
	hbMu sync.Mutex
	hb   func(raft.RPC)

	followsFn atomic.Pointer[func(leader raft.ServerAddress, term uint64) bool] // SetLeadershipCheck
}

var (
	_ raft.Transport   = (*RangeTransport)(nil)
	_ raft.WithClose   = (*RangeTransport)(nil)
	_ raft.WithPreVote = (*RangeTransport)(nil)
)

// RangeID is the range the transport carries.
func (t *RangeTransport) RangeID() uint64 { return t.id }

// Consumer yields the range's incoming RPCs, from the link and from the
// legacy transport alike.
func (t *RangeTransport) Consumer() <-chan raft.RPC { return t.consumeCh }

// LocalAddr is the node's advertised Raft address.
func (t *RangeTransport) LocalAddr() raft.ServerAddress { return t.l.cfg.LocalAddr }

// SetHeartbeatHandler sets the fast path for heartbeats; with none, they
// go to Consumer like any RPC.
func (t *RangeTransport) SetHeartbeatHandler(cb func(raft.RPC)) {
	t.hbMu.Lock()
	t.hb = cb
	t.hbMu.Unlock()
}

func (t *RangeTransport) heartbeatFn() func(raft.RPC) {
	t.hbMu.Lock()
	defer t.hbMu.Unlock()
	return t.hb
}

// EncodePeer and DecodePeer keep addresses as they are, as
// NetworkTransport does: both transports must agree, since the
// configuration entries in the log hold what EncodePeer produced.
func (t *RangeTransport) EncodePeer(_ raft.ServerID, addr raft.ServerAddress) []byte {
	return []byte(addr)
}

func (t *RangeTransport) DecodePeer(b []byte) raft.ServerAddress { return raft.ServerAddress(b) }

// Close unregisters the range (peers' requests for it are then refused
// with an error) and closes its legacy transport. Calls in flight return
// raft.ErrTransportShutdown.
func (t *RangeTransport) Close() error {
	var err error
	t.once.Do(func() {
		close(t.done)
		t.l.removeRange(t)
		if c, ok := t.legacy.(raft.WithClose); ok {
			err = c.Close()
		}
		t.wg.Wait()
	})
	return err
}

func (t *RangeTransport) isClosed() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// deliver hands an incoming RPC to the range's Raft and waits for its
// answer, for at most timeout in all. ok is false if abort closed first:
// there is nobody to answer. Whatever fails is answered with an error,
// never a value: a closed transport with raft.ErrTransportShutdown, and a
// Raft that does not take the message or does not answer in time with
// errNoAnswer. The time limit matters: a Raft instance that is shutting
// down drops a heartbeat without answering it, and the lane behind it
// must not wait for ever. Its sender gave up after the same timeout.
func (t *RangeTransport) deliver(rpc raft.RPC, respCh <-chan raft.RPCResponse, hb bool, timeout time.Duration, abort <-chan struct{}) (resp raft.RPCResponse, ok bool) {
	select {
	case <-abort:
		return raft.RPCResponse{}, false
	default:
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	handled := false
	if hb {
		if fn := t.heartbeatFn(); fn != nil {
			fn(rpc)
			handled = true
		}
	}
	if !handled {
		select {
		case t.consumeCh <- rpc:
		case <-t.done:
			return raft.RPCResponse{Error: raft.ErrTransportShutdown}, true
		case <-timer.C:
			return raft.RPCResponse{Error: fmt.Errorf("%w: range %d did not take the message within %v", errNoAnswer, t.id, timeout)}, true
		case <-abort:
			return raft.RPCResponse{}, false
		}
	}
	select {
	case r := <-respCh:
		return r, true
	case <-t.done:
		return raft.RPCResponse{Error: raft.ErrTransportShutdown}, true
	case <-timer.C:
		return raft.RPCResponse{Error: fmt.Errorf("%w: range %d did not answer within %v", errNoAnswer, t.id, timeout)}, true
	case <-abort:
		return raft.RPCResponse{}, false
	}
}

// errNoAnswer is the receiver's error for a message its Raft did not take
// or did not answer in time.
var errNoAnswer = errors.New("link: no answer from the range's Raft")

// mergeLegacy hands what the legacy transport receives to Consumer.
func (t *RangeTransport) mergeLegacy() {
	defer t.wg.Done()
	for {
		select {
		case rpc := <-t.legacy.Consumer():
			t.l.st.legacyRecv.Add(1)
			select {
			case t.consumeCh <- rpc:
			case <-t.done:
				rpc.Respond(nil, raft.ErrTransportShutdown)
				return
			}
		case <-t.done:
			return
		}
	}
}

// legacyHeartbeat is the legacy transport's heartbeat handler: the
// range's own, or Consumer when there is none.
func (t *RangeTransport) legacyHeartbeat(rpc raft.RPC) {
	t.l.st.legacyRecv.Add(1)
	if fn := t.heartbeatFn(); fn != nil {
		fn(rpc)
		return
	}
	select {
	case t.consumeCh <- rpc:
	case <-t.done:
		rpc.Respond(nil, raft.ErrTransportShutdown)
	}
}

// call sends one RPC to target over the link, or through the legacy
// transport if target does not speak the link.
func (t *RangeTransport) call(target raft.ServerAddress, rpc byte, args, resp any, legacy func(raft.Transport) error) error {
	return t.callLazy(target, rpc, args, resp, 0, legacy)
}

// callLazy is call; since > 0 lets the request wait for company (see
// AppendEntriesMayWait).
func (t *RangeTransport) callLazy(target raft.ServerAddress, rpc byte, args, resp any, since uint64, legacy func(raft.Transport) error) error {
	if t.isClosed() {
		return raft.ErrTransportShutdown
	}
	timer := time.NewTimer(t.l.cfg.Timeout)
	defer timer.Stop()
	cc, err := t.l.peer(string(target)).get(timer.C, t.legacy != nil)
	if errors.Is(err, ErrLegacyPeer) {
		return t.viaLegacy(err, legacy)
	}
	if err != nil {
		return err
	}
	err = cc.call(t.id, rpc, args, resp, false, since, timer.C, t.done)
	if errors.Is(err, errAborted) {
		return raft.ErrTransportShutdown
	}
	return err
}

func (t *RangeTransport) viaLegacy(why error, fn func(raft.Transport) error) error {
	if t.legacy == nil {
		return why
	}
	t.l.st.legacyCalls.Add(1)
	return fn(t.legacy)
}

// Raft bounds an append only by its count (MaxAppendEntries), so a
// follower catching up on large values (1 MiB each, or transactions of
// many) could be sent appends of hundreds of MiB: past what a message may
// be (maxMessage, refused every time, so the follower would never catch
// up), and holding the shared connection for every other range
// meanwhile. The link cuts an append's entries to the longest prefix
// within a bound, never to fewer than one. Raft reads the request's last
// entry after the call to learn how far the follower got (replicateTo,
// pipelineSend and pipelineDecode alike), so the rest goes in the next
// append. How soon differs:
//   - maxAppendBytes, for appends sent one at a time: replicateTo sends
//     the next at once, looping until the follower has everything, so a
//     catch-up goes in pieces that leave room for other ranges.
//   - maxPipelineAppendBytes, for pipelined appends: raft's pipeline
//     sends once per new entry or per commit timeout, so the rest of a
//     burst that stopped would wait up to two commit timeouts. Only what
//     could break the message bound is cut there.
const (
	maxAppendBytes         = 4 << 20
	maxPipelineAppendBytes = maxMessage / 2
)

// trimAppend cuts args's entries to the longest prefix whose data fits
// limit, and never to fewer than one.
func trimAppend(args *raft.AppendEntriesRequest, limit int) {
	n := 0
	for i, e := range args.Entries {
		n += len(e.Data) + len(e.Extensions)
		if n > limit && i > 0 {
			args.Entries = args.Entries[:i]
			return
		}
	}
}

// AppendEntries implements raft.Transport.
func (t *RangeTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	trimAppend(args, maxAppendBytes)
	return t.call(target, rpcAppendEntries, args, resp, func(lt raft.Transport) error {
		return lt.AppendEntries(id, target, args, resp)
	})
}

// AppendEntriesMayWait is AppendEntries for a heartbeat that nothing
// waits on at once (no read is confirming the leadership): it may wait up
// to the link's CoalesceDelay for other messages to share its write. An
// idle node with many awake ranges sends each peer a heartbeat per range
// every 100-200 ms; alone, each would be a write and a read on both ends.
// Hurry ends such waits.
//
// since is HurryGen as read before the caller decided that nothing waits:
// a Hurry after that makes the heartbeat go at once wherever it is.
func (t *RangeTransport) AppendEntriesMayWait(since uint64, id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	return t.callLazy(target, rpcAppendEntries, args, resp, since, func(lt raft.Transport) error {
		return lt.AppendEntries(id, target, args, resp)
	})
}

// Hurry sends at once whatever the link's connections hold for company,
// and every heartbeat that may wait decided before it: a read is about to
// wait for a round of heartbeats.
func (t *RangeTransport) Hurry() { t.l.hurry() }

// HurryGen is the link's count of hurries (see AppendEntriesMayWait).
func (t *RangeTransport) HurryGen() uint64 { return t.l.hurries.Load() }

// RequestVote implements raft.Transport.
func (t *RangeTransport) RequestVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	return t.call(target, rpcRequestVote, args, resp, func(lt raft.Transport) error {
		return lt.RequestVote(id, target, args, resp)
	})
}

// RequestPreVote implements raft.WithPreVote.
func (t *RangeTransport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return t.call(target, rpcRequestPreVote, args, resp, func(lt raft.Transport) error {
		pv, ok := lt.(raft.WithPreVote)
		if !ok {
			return fmt.Errorf("link: range %d: legacy transport %T has no pre-vote", t.id, lt)
		}
		return pv.RequestPreVote(id, target, args, resp)
	})
}

// TimeoutNow implements raft.Transport.
func (t *RangeTransport) TimeoutNow(id raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	return t.call(target, rpcTimeoutNow, args, resp, func(lt raft.Transport) error {
		return lt.TimeoutNow(id, target, args, resp)
	})
}

// AppendEntriesPipeline implements raft.Transport. The pipeline is bound
// to the connection open now: if it breaks, the pipeline fails and Raft
// opens another once it has caught the follower up again.
func (t *RangeTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	if t.isClosed() {
		return nil, raft.ErrTransportShutdown
	}
	timer := time.NewTimer(t.l.cfg.Timeout)
	defer timer.Stop()
	cc, err := t.l.peer(string(target)).get(timer.C, t.legacy != nil)
	if errors.Is(err, ErrLegacyPeer) {
		if t.legacy == nil {
			return nil, err
		}
		return t.legacy.AppendEntriesPipeline(id, target)
	}
	if err != nil {
		return nil, err
	}
	return newPipeline(t, cc)
}

// InstallSnapshot implements raft.Transport: the snapshot goes on a
// connection of its own, so that its data never queues the link's other
// messages.
func (t *RangeTransport) InstallSnapshot(id raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	if t.isClosed() {
		return raft.ErrTransportShutdown
	}
	legacy := func(lt raft.Transport) error { return lt.InstallSnapshot(id, target, args, resp, data) }
	p := t.l.peer(string(target))
	if p.currentMode() == PeerUnknown {
		// Learn what the peer speaks the way every call does.
		timer := time.NewTimer(t.l.cfg.Timeout)
		_, err := p.get(timer.C, t.legacy != nil)
		timer.Stop()
		if err != nil && !errors.Is(err, ErrLegacyPeer) {
			return err
		}
	}
	if p.currentMode() == PeerLegacy && t.legacy != nil {
		return t.viaLegacy(fmt.Errorf("%w: %s", ErrLegacyPeer, target), legacy)
	}
	return t.sendSnapshot(p, args, resp, data, legacy)
}
