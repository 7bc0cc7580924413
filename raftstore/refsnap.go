package raftstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
	"golang.org/x/time/rate"
)

// Snapshots by reference. The state machine is durable in state.db, so a
// snapshot file that copies a whole range only duplicates it: a range of
// 64 MiB used to write 64 MiB every SnapshotThreshold entries, and a
// moved replica was written three times (the sender's file, the
// receiver's file, the receiver's restore). Instead:
//
//   - Persist (the node's own snapshot) writes a reference, a few bytes
//     naming the applied index the state database holds at least. The
//     FSM's Snapshot committed the range first, so the database is at or
//     past the snapshot's index from then on.
//   - Open of a reference (to send it) streams the range from a state.db
//     read transaction, in the format a snapshot file always had, at
//     whatever applied index the database has reached (never below the
//     snapshot's), as fast as the receiver takes it. Its exact size,
//     which hashicorp/raft sends ahead of the stream, is counted by a
//     first pass over the same transaction.
//   - A received stream goes straight into the range's staging bucket as
//     it arrives (stageSnapshot), and the sink records a reference. The
//     FSM's Restore, which Raft calls next with what Open returns for that
//     reference, swaps the staged bucket in. The range is written to the
//     receiver's disk once.
//
// A stream at an applied index past the snapshot's index is sound: the
// receiver's FSM skips every entry at or below its applied index, and
// Raft sends the entries after the snapshot's index as for any snapshot.
// What applying a skipped entry would have started on the node is not
// started: a split's new range there (replication/missedsplit.go has the
// node leave it, and placement adds a replica back) and a hibernation
// (the range stays awake). A snapshot taken after the split has the same
// effect, so both were already handled.
//
// A received reference is only as good as its staged bucket, which lives
// in memory until Restore swaps it in: a node that stops in between finds
// a reference its state database is behind. Raft had not answered the
// leader yet, so the shard drops such a snapshot before Raft starts
// (RaftStorage.DropSnapshot) and the leader sends it again. A Restore or
// a sink's Close that fails drops its reference at once.
//
// Files written whole by a build before references are still read as
// they are. The storage layout (layoutRefSnapshots) keeps a build that
// would send a reference's few bytes as a snapshot from opening the
// directory.

// snapRefMagic starts a reference; a snapshot stream starts with
// snapMagic, whose first seven bytes differ.
var snapRefMagic = []byte("DKVSREF\x01")

// ErrSnapshotBehind is Open's error for a received snapshot the range's
// state database is behind: one whose staged data a restart lost. Drop
// the snapshot (RaftStorage.DropSnapshot). A range's own snapshot the
// database is behind is another error: the database lost what it had.
var ErrSnapshotBehind = errors.New("raftstore: the state database is behind a received snapshot")

// errStateBehind is openStateStream's: Open tells which of the above.
var errStateBehind = errors.New("raftstore: committed state behind the snapshot")

// A reference's kind: the node's own snapshot, or a received one.
const (
	refOwn      byte = 1
	refReceived byte = 2
)

// encodeRef is a reference's content: the magic, its kind and the
// applied index the state database held when it was written.
func encodeRef(kind byte, applied uint64) []byte {
	return binary.AppendUvarint(append(bytes.Clone(snapRefMagic), kind), applied)
}

// rangeRef resolves a range's references: it streams the range's
// state, or hands Restore what a sink staged.
type rangeRef struct {
	store *Store
	id    uint64
}

func (r rangeRef) fsm() (*RangeFSM, error) {
	r.store.mu.Lock()
	defer r.store.mu.Unlock()
	f := r.store.ranges[r.id]
	if f == nil {
		return nil, fmt.Errorf("raftstore: snapshot of range %d: the range is not open", r.id)
	}
	return f, nil
}

// Open opens snapshot id: a reference resolved against the state
// database, or a file written whole as it is.
func (s *refStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.FileSnapshotStore.Open(id)
	if err != nil {
		return nil, nil, err
	}
	isRef, whole, err := peekMagic(rc, snapRefMagic)
	if err != nil {
		rc.Close()
		return nil, nil, fmt.Errorf("raftstore: open snapshot %s: %w", id, err)
	}
	if !isRef {
		return meta, struct {
			io.Reader
			io.Closer
		}{whole, rc}, nil
	}
	rest, err := io.ReadAll(io.LimitReader(rc, 32))
	rc.Close()
	if err != nil || len(rest) == 0 || (rest[0] != refOwn && rest[0] != refReceived) {
		return nil, nil, fmt.Errorf("raftstore: open snapshot %s: %w: a reference of unknown kind", id, ErrBadSnapshot)
	}
	kind := rest[0]
	f, err := s.refs.fsm()
	if err != nil {
		return nil, nil, err
	}
	if f.hasStaged(id) {
		token := stagedToken(id)
		m := *meta
		m.Size = int64(len(token))
		return &m, io.NopCloser(bytes.NewReader(token)), nil
	}
	st, err := f.openStateStream(meta.Index)
	if errors.Is(err, errStateBehind) {
		if kind == refReceived {
			err = fmt.Errorf("%w: %w", ErrSnapshotBehind, err)
		} else {
			err = fmt.Errorf("state.db is behind the range's own snapshot, which only refers to it (state.db lost or replaced?): %w", err)
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("raftstore: open snapshot %s: %w", id, err)
	}
	m := *meta
	m.Size = st.size
	return &m, st, nil
}

// peekMagic reads the first len(magic) bytes of r and says whether they
// are magic. If they are, r is past them; if not, whole reads r from its
// start. A stream shorter than magic is not it.
func peekMagic(r io.Reader, magic []byte) (bool, io.Reader, error) {
	head := make([]byte, len(magic))
	n, err := io.ReadFull(r, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return false, nil, err
	}
	if n == len(head) && bytes.Equal(head, magic) {
		return true, r, nil
	}
	return false, io.MultiReader(bytes.NewReader(head[:n]), r), nil
}

// stagedMagic starts what Open streams for a received snapshot whose
// data is staged: the magic and the snapshot's id, which Restore reads to
// swap the staged data in (hashicorp/raft wraps the reader it hands
// Restore, so a token in the stream is what reaches it). Only this node's
// Restore sees it: a leader never holds a staged snapshot, and any other
// reader refuses the magic.
var stagedMagic = []byte("DKVSTGD\x01")

func stagedToken(id string) []byte {
	b := binary.AppendUvarint(bytes.Clone(stagedMagic), uint64(len(id)))
	return append(b, id...)
}

// readStagedToken reads the id that follows stagedMagic.
func readStagedToken(r io.Reader) (string, error) {
	br := &byteReader{r: r}
	id, err := readField(br, nil)
	if err != nil || len(id) > 256 {
		return "", fmt.Errorf("%w: staged snapshot token", ErrBadSnapshot)
	}
	return string(id), nil
}

// stateStream is a range's state streamed from one state.db read
// transaction in the snapshot format, at the receiver's pace. The
// transaction stays open for the whole send; the state database is
// mapped far beyond its size (Store's Open), so no commit has to remap it
// meanwhile (a remap waits for every reader).
type stateStream struct {
	pr   *io.PipeReader
	snap *fsmSnapshot
	size int64
	done chan struct{}
	once sync.Once
}

// openStateStream pins the range's committed state, which must be at or
// past index, and measures the stream it makes: hashicorp/raft sends the
// size first, so a first pass over the same transaction counts it.
func (f *RangeFSM) openStateStream(index uint64) (*stateStream, error) {
	tx, err := f.store.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("range %d: %w", f.id, err)
	}
	meta := tx.Bucket(metaBucket)
	applied, _ := storedApplied(meta, f.id)
	if applied < index {
		tx.Rollback()
		return nil, fmt.Errorf("%w: range %d's committed state is at index %d, the snapshot at %d", errStateBehind, f.id, applied, index)
	}
	desc, err := UnmarshalDescriptor(meta.Get(descKey(f.id)))
	if err != nil {
		tx.Rollback()
		return nil, fmt.Errorf("range %d: %w", f.id, err)
	}
	snap := &fsmSnapshot{tx: tx, bucket: f.bucket, applied: applied, desc: desc}
	var c byteCounter
	if err := snap.write(&c); err != nil {
		tx.Rollback()
		return nil, fmt.Errorf("range %d: %w", f.id, err)
	}
	pr, pw := io.Pipe()
	s := &stateStream{pr: pr, snap: snap, size: int64(c), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		pw.CloseWithError(snap.write(pw))
	}()
	return s, nil
}

func (s *stateStream) Read(b []byte) (int, error) { return s.pr.Read(b) }

// Close ends the stream, read to its end or not, and releases the
// transaction once the writer has stopped using it.
func (s *stateStream) Close() error {
	s.once.Do(func() {
		s.pr.CloseWithError(errors.New("raftstore: snapshot stream closed"))
		<-s.done
		s.snap.tx.Rollback()
	})
	return nil
}

// byteCounter counts what is written to it and keeps nothing.
type byteCounter int64

func (c *byteCounter) Write(b []byte) (int, error) {
	*c += byteCounter(len(b))
	return len(b), nil
}

// staging is a received stream on its way into the staging bucket.
type staging struct {
	f    *RangeFSM
	pw   *io.PipeWriter
	done chan struct{}
	st   *stagedSnapshot
	err  error
}

// startStaging begins taking a received stream into the staging bucket;
// whatever an earlier stream staged is forgotten (it is overwritten).
func (f *RangeFSM) startStaging() *staging {
	f.setStaged("", nil)
	pr, pw := io.Pipe()
	sg := &staging{f: f, pw: pw, done: make(chan struct{})}
	go func() {
		defer close(sg.done)
		sg.st, sg.err = f.stageSnapshot(pr)
		if sg.err != nil {
			sg.err = errors.Join(sg.err, f.dropStaged())
			pr.CloseWithError(sg.err)
			return
		}
		// The stream has ended (its checksum read): any more bytes are
		// not part of it.
		pr.CloseWithError(fmt.Errorf("%w: bytes past the end of the stream", ErrBadSnapshot))
	}()
	return sg
}

// finish waits for the staging to end after the last write; abort makes
// it end with err.
func (sg *staging) finish() (*stagedSnapshot, error) {
	sg.pw.Close()
	<-sg.done
	return sg.st, sg.err
}

func (sg *staging) abort(err error) error {
	sg.pw.CloseWithError(err)
	<-sg.done
	if sg.err == nil {
		// It had read the whole stream already: drop what it staged.
		return sg.f.dropStaged()
	}
	return nil // the staging's own failure dropped it
}

// setStaged records what snapshot id staged (nil: nothing staged) and
// returns what was recorded before.
func (f *RangeFSM) setStaged(id string, st *stagedSnapshot) *stagedSnapshot {
	f.stagedMu.Lock()
	defer f.stagedMu.Unlock()
	prev := f.staged
	f.stagedID, f.staged = id, st
	return prev
}

func (f *RangeFSM) hasStaged(id string) bool {
	f.stagedMu.Lock()
	defer f.stagedMu.Unlock()
	return f.staged != nil && f.stagedID == id
}

// takeStaged returns what snapshot id staged and forgets it.
func (f *RangeFSM) takeStaged(id string) *stagedSnapshot {
	f.stagedMu.Lock()
	defer f.stagedMu.Unlock()
	if f.staged == nil || f.stagedID != id {
		return nil
	}
	st := f.staged
	f.stagedID, f.staged = "", nil
	return st
}

// refStore is a range's snapshot store: hashicorp/raft's
// FileSnapshotStore keeps each snapshot's metadata and a reference in
// place of its data. Received streams are paced on their way into the
// state database (snappace.go).
type refStore struct {
	*raft.FileSnapshotStore
	dir  string // FileSnapshotStore's snapshots directory
	refs rangeRef
	lim  *rate.Limiter
	flow *atomic.Int64
	stop <-chan struct{}
}

func (s *refStore) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration, configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.FileSnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	return &refSink{SnapshotSink: sink, store: s, refs: s.refs, m: meter{lim: s.lim, stop: s.stop, flow: s.flow}}, nil
}

// refSink is a snapshot being made. The node's own (Persist) writes a
// reference through persistRef; a received one is Written, paced, into
// the range's staging bucket, and Close records a reference to it once
// the whole stream is staged and its checksum holds. A failed Write makes
// Close cancel: no snapshot is ever finished short.
type refSink struct {
	raft.SnapshotSink
	store *refStore
	refs  rangeRef
	m     meter
	stage *staging // the received stream's; nil until its first Write
	local bool     // Persist wrote a reference
	err   error    // the first Write error
}

// persistRef finishes the node's own snapshot as a reference to the
// state database, which the FSM's Snapshot committed at applied. Open
// and the shard's start check state.db against the snapshot's index,
// which equals applied because every entry hashicorp/raft counts reaches
// the FSM; a Barrier would not (Raft counts it, ApplyBatch never sees
// it), so nothing here issues one.
func (s *refSink) persistRef(applied uint64) error {
	s.local = true
	_, err := s.SnapshotSink.Write(encodeRef(refOwn, applied))
	return err
}

// Write takes the next part of a received stream: paced, cut at
// paceBurst so that a whole large value is not one turn of the rate.
func (s *refSink) Write(b []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.local {
		s.err = errors.New("raftstore: a snapshot written by reference takes no stream")
		return 0, s.err
	}
	if s.stage == nil {
		f, err := s.refs.fsm()
		if err != nil {
			s.err = err
			return 0, err
		}
		s.stage = f.startStaging()
	}
	written := 0
	for len(b) > 0 {
		n, err := s.stage.pw.Write(b[:min(len(b), paceBurst)])
		written += n
		if err == nil {
			err = s.m.charge(n)
		}
		if err != nil {
			s.err = err
			return written, err
		}
		b = b[n:]
	}
	return written, nil
}

func (s *refSink) Close() error {
	if s.local {
		return s.SnapshotSink.Close()
	}
	if s.err != nil {
		err := errors.Join(s.err, s.cancelStage(s.err))
		s.SnapshotSink.Cancel()
		return err
	}
	if s.stage == nil {
		s.SnapshotSink.Cancel()
		return fmt.Errorf("%w: empty stream", ErrBadSnapshot)
	}
	st, err := s.stage.finish()
	if err == nil {
		_, err = s.SnapshotSink.Write(encodeRef(refReceived, st.applied))
	}
	if err != nil {
		if st != nil {
			err = errors.Join(err, s.stage.f.dropStaged())
		}
		s.SnapshotSink.Cancel()
		return err
	}
	// A reference to staged data that is never swapped in must not stay
	// listed: Raft trusts a listed snapshot's index when it restarts.
	id := s.ID()
	st.dropRef = func() error { return s.store.drop(id) }
	// Before the reference exists: Restore may be asked for it at once.
	s.stage.f.setStaged(id, st)
	if err := s.SnapshotSink.Close(); err != nil {
		s.stage.f.setStaged("", nil)
		return errors.Join(err, s.stage.f.dropStaged(), st.dropRef())
	}
	return nil
}

func (s *refSink) Cancel() error {
	return errors.Join(s.cancelStage(errors.New("raftstore: snapshot canceled")), s.SnapshotSink.Cancel())
}

func (s *refSink) cancelStage(err error) error {
	if s.stage == nil || s.local {
		return nil
	}
	aerr := s.stage.abort(err)
	s.stage = nil
	return aerr
}

// drop removes snapshot id for good: renamed to a name List skips first
// (FileSnapshotStore ignores ".tmp" directories), so a crash halfway
// through the removal leaves nothing listed; the next OpenRaftStorage
// removes the rest (cleanSnapshotDir).
func (s *refStore) drop(id string) error {
	if id == "" || id == "." || id == ".." || id != filepath.Base(id) || strings.HasSuffix(id, tmpSnapshotSuffix) {
		return fmt.Errorf("raftstore: drop snapshot %q: not one of the range's", id)
	}
	gone := filepath.Join(s.dir, id+tmpSnapshotSuffix)
	if err := os.Rename(filepath.Join(s.dir, id), gone); err != nil {
		return fmt.Errorf("raftstore: drop snapshot %s: %w", id, err)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("raftstore: drop snapshot %s: %w", id, err)
	}
	if err := os.RemoveAll(gone); err != nil {
		return fmt.Errorf("raftstore: drop snapshot %s: %w", id, err)
	}
	return nil
}

// tmpSnapshotSuffix is hashicorp/raft's FileSnapshotStore's (v1.8) for a
// snapshot being written, which its List skips and nothing reaps.
const tmpSnapshotSuffix = ".tmp"

// cleanSnapshotDir removes what stopped work left in a range's snapshots
// directory before its Raft group starts: snapshots a sink was writing
// or drop was removing.
func cleanSnapshotDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	for _, e := range entries {
		if n := e.Name(); e.IsDir() && strings.HasSuffix(n, tmpSnapshotSuffix) {
			if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
				return err
			}
		}
	}
	return nil
}
