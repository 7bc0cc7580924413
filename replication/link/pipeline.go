package link

import (
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// pipeline is a range's AppendEntries pipeline to one follower over one
// link connection. Requests are queued in order behind one another (they
// all take the ordered queue) and the follower's lane for the range hands
// them to its Raft in arrival order, so the follower sees them in the
// order Raft sent them.
//
// A request that fails (the connection broke, or no answer came in time)
// breaks the pipeline: its future and every later one are never handed to
// Consumer, and the next AppendEntries returns the error. Raft's
// pipelineDecode counts any future it receives as contact with the
// follower (it updates lastContact before it looks at Success), so a
// failed future on Consumer would extend the leader lease on a follower
// nobody heard from. Raft notices the break on its next send, at the
// latest after CommitTimeout, and falls back to plain AppendEntries.
type pipeline struct {
	t        *RangeTransport
	cc       *clientConn
	inflight chan *future
	doneCh   chan raft.AppendFuture
	stop     chan struct{}
	stopOnce sync.Once

	brokenCh chan struct{} // closed when err is set
	mu       sync.Mutex
	err      error
}

var _ raft.AppendPipeline = (*pipeline)(nil)

func newPipeline(t *RangeTransport, cc *clientConn) (*pipeline, error) {
	n := t.l.cfg.MaxInFlight
	p := &pipeline{
		t: t, cc: cc,
		// As in NetworkTransport: one request is awaited, one more may be
		// sent while the channel is full, so n-2 wait in between.
		inflight: make(chan *future, n-2),
		doneCh:   make(chan raft.AppendFuture, n),
		stop:     make(chan struct{}),
		brokenCh: make(chan struct{}),
	}
	if !t.l.spawn(p.run) {
		return nil, ErrClosed
	}
	return p, nil
}

// future is one pipelined request.
type future struct {
	start time.Time
	args  *raft.AppendEntriesRequest
	resp  *raft.AppendEntriesResponse
	id    uint64
	call  *call
	err   error
	done  chan struct{}
}

func (f *future) Error() error                          { <-f.done; return f.err }
func (f *future) Start() time.Time                      { return f.start }
func (f *future) Request() *raft.AppendEntriesRequest   { return f.args }
func (f *future) Response() *raft.AppendEntriesResponse { return f.resp }

// Broken is why the next AppendEntries would fail at once, or nil: a
// caller that skips a send asks, so as not to hide a break from Raft. A
// connection that closed while nothing was in flight counts too.
func (p *pipeline) Broken() error {
	if err := p.brokenErr(); err != nil {
		return err
	}
	select {
	case <-p.stop:
		return raft.ErrPipelineShutdown
	case <-p.t.done:
		return raft.ErrTransportShutdown
	case <-p.cc.done:
		return p.cc.closedErr()
	default:
		return nil
	}
}

func (p *pipeline) brokenErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *pipeline) breakWith(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err == nil {
		p.err = fmt.Errorf("link: pipeline of range %d to %s broken: %w", p.t.id, p.cc.remote, err)
		close(p.brokenCh)
	}
}

// AppendEntries queues a request. It blocks while MaxInFlight requests
// are outstanding.
func (p *pipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	select {
	case <-p.stop:
		return nil, raft.ErrPipelineShutdown
	case <-p.t.done:
		return nil, raft.ErrTransportShutdown
	default:
	}
	if err := p.brokenErr(); err != nil {
		return nil, err
	}
	trimAppend(args, maxPipelineAppendBytes)
	timer := time.NewTimer(p.t.l.cfg.Timeout)
	defer timer.Stop()
	f := &future{start: time.Now(), args: args, resp: resp, call: newCall(resp), done: make(chan struct{})}
	id, err := p.cc.start(f.call, p.t.id, rpcAppendEntries, args, true, 0, timer.C)
	if err != nil {
		p.breakWith(err)
		return nil, p.brokenErr()
	}
	f.id = id
	select {
	case p.inflight <- f:
		return f, nil
	case <-p.stop:
		p.cc.cancel(id)
		return nil, raft.ErrPipelineShutdown
	case <-p.brokenCh:
		p.cc.cancel(id)
		return nil, p.brokenErr()
	}
}

// Consumer yields the futures of successful requests, in order.
func (p *pipeline) Consumer() <-chan raft.AppendFuture { return p.doneCh }

// Close stops the pipeline; requests still in flight are abandoned.
func (p *pipeline) Close() error {
	p.stopOnce.Do(func() { close(p.stop) })
	return nil
}

// run waits for each request's answer in the order they were sent.
func (p *pipeline) run() {
	for {
		select {
		case f := <-p.inflight:
			f.err = p.await(f)
			close(f.done)
			if f.err != nil {
				p.breakWith(f.err)
				continue
			}
			if p.brokenErr() != nil {
				continue // nothing after a failure is delivered
			}
			select {
			case p.doneCh <- f:
			case <-p.stop:
				return
			case <-p.t.l.done:
				return
			}
		case <-p.t.l.done:
			return // every connection is closed: nothing is in flight
		case <-p.stop:
			for {
				select {
				case f := <-p.inflight:
					p.cc.cancel(f.id)
					f.err = raft.ErrPipelineShutdown
					close(f.done)
				default:
					return
				}
			}
		}
	}
}

func (p *pipeline) await(f *future) error {
	timer := time.NewTimer(p.t.l.cfg.Timeout - time.Since(f.start))
	defer timer.Stop()
	err := p.cc.wait(f.id, f.call, timer.C, p.stop)
	if err == errAborted {
		return raft.ErrPipelineShutdown
	}
	return err
}
