package raftstore

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// Snapshot stream format (version 2):
//
//	magic "DKVSNAP" version(2)
//	uvarint applied index
//	uvarint(len descriptor) descriptor (JSON)
//	records: 0x01 uvarint(len key) key uvarint(len stored) stored
//	end:     0x00 crc32c(all bytes before the end marker), big endian
//
// stored is the bbolt value (revision + value), so a restore writes the
// bytes straight back.
var snapMagic = []byte("DKVSNAP\x02")

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Snapshot record tags: a key and its stored value, a transaction's lock
// on a key, a single-range transaction's recorded outcome; 0 ends them.
const (
	snapTagData    = 1
	snapTagLock    = 2
	snapTagOutcome = 3
	// snapTagVersioned (no key, no value): the range counts versions.
	snapTagVersioned = 4
)

// ErrBadSnapshot is returned by Restore for a stream that is truncated,
// corrupt or of an unknown version; the range's state is left unchanged.
// A stream whose checksum holds but which carries a value too short to
// decode is ErrCorrupt as well.
var ErrBadSnapshot = errors.New("raftstore: bad snapshot")

// Snapshot makes the range's applied state durable, then pins it with a
// bbolt read transaction that Persist streams from. Raft calls it on the FSM
// goroutine, so no apply runs meanwhile; the commit first is what lets Raft
// truncate its log safely afterwards.
func (f *RangeFSM) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.store.Flush(); err != nil {
		return nil, fmt.Errorf("raftstore: flush before snapshot of range %d: %w", f.id, err)
	}
	tx, err := f.store.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("raftstore: snapshot of range %d: %w", f.id, err)
	}
	return &fsmSnapshot{tx: tx, bucket: f.bucket, applied: f.applied.Load(), desc: f.Descriptor()}, nil
}

type fsmSnapshot struct {
	tx      *bolt.Tx
	bucket  []byte
	applied uint64
	desc    Descriptor
}

// Persist writes a reference when the sink is a range's own store
// (refsnap.go), and the whole stream to any other sink.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if ss, ok := sink.(*refSink); ok {
		if err := ss.persistRef(s.applied); err != nil {
			sink.Cancel()
			return fmt.Errorf("raftstore: persist snapshot: %w", err)
		}
		return sink.Close()
	}
	if err := s.write(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("raftstore: persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) write(out io.Writer) error {
	h := crc32.New(crcTable)
	w := bufio.NewWriterSize(io.MultiWriter(out, h), 256<<10)
	w.Write(snapMagic)
	w.Write(binary.AppendUvarint(nil, s.applied))
	desc := s.desc.Marshal()
	w.Write(binary.AppendUvarint(nil, uint64(len(desc))))
	w.Write(desc)
	var hdr []byte
	if b := s.tx.Bucket(s.bucket); b != nil {
		if err := b.ForEach(func(k, v []byte) error {
			// A follower would refuse the value (readSnapshotBody); refusing
			// it here names the replica whose disk holds the damage.
			if _, _, err := readStored(s.desc.ID, k, v); err != nil {
				return err
			}
			hdr = append(hdr[:0], snapTagData)
			hdr = binary.AppendUvarint(hdr, uint64(len(k)))
			w.Write(hdr)
			w.Write(k)
			w.Write(binary.AppendUvarint(hdr[:0], uint64(len(v))))
			_, err := w.Write(v)
			return err
		}); err != nil {
			return err
		}
	}
	// Transactions' locks and outcomes are replicated state too; a
	// range that never had any writes the layout of releases before them.
	for _, b := range []struct {
		tag    byte
		bucket []byte
	}{{snapTagLock, lockBucket(s.desc.ID)}, {snapTagOutcome, outcomeBucket(s.desc.ID)}} {
		bk := s.tx.Bucket(b.bucket)
		if bk == nil {
			continue
		}
		if err := bk.ForEach(func(k, v []byte) error {
			hdr = append(hdr[:0], b.tag)
			hdr = binary.AppendUvarint(hdr, uint64(len(k)))
			w.Write(hdr)
			w.Write(k)
			w.Write(binary.AppendUvarint(hdr[:0], uint64(len(v))))
			_, err := w.Write(v)
			return err
		}); err != nil {
			return err
		}
	}
	if s.tx.Bucket(metaBucket).Get(versionedKey(s.desc.ID)) != nil {
		w.Write([]byte{snapTagVersioned, 0, 0})
	}
	if err := w.WriteByte(0); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	_, err := out.Write(binary.BigEndian.AppendUint32(nil, h.Sum32()))
	return err
}

func (s *fsmSnapshot) Release() { s.tx.Rollback() }

// restoreStaging is the top-level bucket an incoming snapshot is written
// into before it replaces a range's state: one child per range, named as
// the range's data bucket. Open deletes whatever a stopped node left there.
// It is transient, so the storage layout keeps its number: a build that
// predates it never looks at it.
var restoreStaging = []byte("restore-staging")

// stagedSnapshot is what Restore keeps in memory while the snapshot's data
// goes to the staging bucket: the records the switch writes itself.
type stagedSnapshot struct {
	dropRef        func() error // a received one's: drops its reference (refsnap.go)
	applied        uint64
	desc           Descriptor
	nkeys, nbytes  int64
	locks, outcome []stagedRecord
	versioned      bool
	leased         []stagedRecord // lease index keys
}

type stagedRecord struct{ k, v []byte }

// Restore replaces the range's state with the snapshot's. The data goes
// to a staging bucket a chunk (Config.RestoreChunkBytes) per bbolt
// transaction, without any lock: the node's other ranges keep committing
// between chunks, and this range keeps serving its old state (with its
// old applied index) to readers. Once the whole stream is read and its
// checksum holds, one small transaction under commitMu and the range's
// lock swaps the staged bucket in and writes the rest. A corrupt or
// truncated stream, or a crash before the swap, leaves the old state.
func (f *RangeFSM) Restore(rc io.ReadCloser) error {
	swapped, err := f.restore(rc)
	if err != nil {
		return err
	}
	if swapped && f.onRestore != nil {
		f.onRestore()
	}
	return nil
}

// restore says whether it swapped the snapshot in (false: it kept the
// state ahead of it, keepAhead).
func (f *RangeFSM) restore(rc io.ReadCloser) (bool, error) {
	defer rc.Close()
	var st *stagedSnapshot
	staged, whole, err := peekMagic(rc, stagedMagic)
	if err != nil {
		return false, fmt.Errorf("raftstore: restore range %d: %w", f.id, err)
	}
	if staged {
		// Received and staged as it arrived (refsnap.go).
		id, err := readStagedToken(rc)
		if err != nil {
			return false, fmt.Errorf("raftstore: restore range %d: %w", f.id, err)
		}
		if st = f.takeStaged(id); st == nil {
			return false, fmt.Errorf("raftstore: restore range %d: snapshot %s is no longer staged", f.id, id)
		}
	} else {
		var err error
		st, err = f.stageSnapshot(pacedReader{r: whole, m: &meter{lim: f.store.snapPace, stop: f.store.snapStop, flow: &f.store.snapFlow}})
		if err != nil {
			return false, f.dropFailed(nil, err)
		}
	}
	if st.desc.ID != f.id {
		return false, f.dropFailed(st, fmt.Errorf("%w: snapshot of range %d offered to range %d", ErrBadSnapshot, st.desc.ID, f.id))
	}
	if st.applied <= f.applied.Load() {
		return false, f.keepAhead(st)
	}
	f.store.commitMu.Lock()
	defer f.store.commitMu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()

	txn := newTxnState()
	err = f.store.db.Update(func(tx *bolt.Tx) error {
		staging := tx.Bucket(restoreStaging)
		if staging == nil || staging.Bucket(f.bucket) == nil {
			return fmt.Errorf("staged snapshot of range %d missing", f.id)
		}
		if tx.Bucket(f.bucket) != nil {
			if err := tx.DeleteBucket(f.bucket); err != nil {
				return err
			}
		}
		// The staged bucket is not written in this transaction, so
		// MoveBucket (which moves its header, not a modified copy) is safe.
		if err := tx.MoveBucket(f.bucket, staging, nil); err != nil {
			return fmt.Errorf("swap in the staged snapshot: %w", err)
		}
		for _, name := range [][]byte{lockBucket(f.id), outcomeBucket(f.id)} {
			if tx.Bucket(name) != nil {
				if err := tx.DeleteBucket(name); err != nil {
					return err
				}
			}
		}
		locks, err := tx.CreateBucket(lockBucket(f.id))
		if err != nil {
			return err
		}
		outcomes, err := tx.CreateBucket(outcomeBucket(f.id))
		if err != nil {
			return err
		}
		for _, r := range st.locks {
			l, _ := decodeLock(r.v)       // checked by the reader
			l.At = time.Now().UnixMilli() // see loadTxnState
			txn.locks[string(r.k)] = l
			if err := locks.Put(r.k, r.v); err != nil {
				return err
			}
		}
		for _, r := range st.outcome {
			o, _ := decodeOutcome(r.v)
			txn.outcomes[string(r.k)] = o
			if err := outcomes.Put(r.k, r.v); err != nil {
				return err
			}
		}
		meta := tx.Bucket(metaBucket)
		if st.versioned {
			txn.versioned = true
			if err := meta.Put(versionedKey(f.id), []byte{1}); err != nil {
				return err
			}
		}
		if !st.desc.IsMeta() {
			lb, err := resetFeed(tx, f.id, st.applied)
			if err != nil {
				return err
			}
			for _, r := range st.leased {
				if err := lb.Put(r.k, nil); err != nil {
					return err
				}
			}
		}
		if err := meta.Put(sizeKey(f.id), encodeSize(st.nkeys, st.nbytes)); err != nil {
			return err
		}
		if err := meta.Put(descKey(f.id), st.desc.Marshal()); err != nil {
			return err
		}
		return meta.Put(appliedKey(f.id), binary.BigEndian.AppendUint64(nil, st.applied))
	})
	if err != nil {
		return false, f.dropFailed(st, err)
	}
	f.pending = newOverlay()
	f.frozen = nil
	f.txn = txn
	f.desc = st.desc
	f.sizeKeys.Store(st.nkeys)
	f.sizeBytes.Store(st.nbytes)
	f.applied.Store(st.applied)
	f.durable.Store(st.applied)
	if !st.desc.IsMeta() {
		f.evFloor.Store(st.applied)
	}
	f.notifyApplied()
	return true, nil
}

// stageSnapshot reads the stream into the range's staging bucket, a
// chunk per transaction, and keeps the rest of what Restore writes.
func (f *RangeFSM) stageSnapshot(r io.Reader) (*stagedSnapshot, error) {
	db := f.store.db
	if err := db.Update(func(tx *bolt.Tx) error {
		staging, err := tx.CreateBucketIfNotExists(restoreStaging)
		if err != nil {
			return err
		}
		if staging.Bucket(f.bucket) != nil {
			if err := staging.DeleteBucket(f.bucket); err != nil {
				return err
			}
		}
		_, err = staging.CreateBucket(f.bucket)
		return err
	}); err != nil {
		return nil, fmt.Errorf("create the staging bucket: %w", err)
	}
	st := &stagedSnapshot{}
	var chunk []stagedRecord
	chunkBytes := 0
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		err := db.Update(func(tx *bolt.Tx) error {
			var b *bolt.Bucket
			if staging := tx.Bucket(restoreStaging); staging != nil {
				b = staging.Bucket(f.bucket)
			}
			if b == nil {
				// DropRange (or a reopen) took it: the range is gone.
				return fmt.Errorf("staged snapshot of range %d vanished mid-restore", f.id)
			}
			b.FillPercent = dataFillPercent
			for _, r := range chunk {
				if err := b.Put(r.k, r.v); err != nil {
					return err
				}
			}
			return nil
		})
		chunk, chunkBytes = chunk[:0], 0
		return err
	}
	var err error
	st.applied, st.desc, err = readSnapshot(r, func(tag byte, k, stored []byte) error {
		switch tag {
		case snapTagLock:
			st.locks = append(st.locks, stagedRecord{k, stored})
			return nil
		case snapTagOutcome:
			st.outcome = append(st.outcome, stagedRecord{k, stored})
			return nil
		case snapTagVersioned:
			st.versioned = true
			return nil
		}
		st.nkeys++
		st.nbytes += storedSize(k, stored)
		if ki, _, ok := decodeStored(stored); ok && ki.lease != 0 {
			st.leased = append(st.leased, stagedRecord{k: leaseIndexKey(ki.lease, k)})
		}
		chunk = append(chunk, stagedRecord{k, stored})
		if chunkBytes += len(k) + len(stored); chunkBytes >= f.store.cfg.RestoreChunkBytes {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return nil, err
	}
	return st, nil
}

// keepAhead ends a restore whose snapshot is at or behind what the range
// has applied: a second install from a leader whose state database
// lagged the first's. Both states are of the range's one committed
// history, so swapping in the older would only move the replica back
// (its stale reads, its change feed) until Raft re-sent the entries.
// The staged copy goes; the state is kept, made durable first, because
// Raft compacts its log up to the snapshot's index next and some of the
// entries the state holds may so far be only in that log.
func (f *RangeFSM) keepAhead(st *stagedSnapshot) error {
	if err := f.store.Flush(); err != nil {
		return f.dropFailed(st, fmt.Errorf("keep its state at %d over the snapshot's %d: %w", f.applied.Load(), st.applied, err))
	}
	// The state is durable and past the snapshot's index, so the
	// reference stays valid whatever becomes of the staged copy.
	if err := f.dropStaged(); err != nil {
		return fmt.Errorf("raftstore: restore range %d, keeping its state: %w", f.id, err)
	}
	f.store.log.Info("kept a range's state over an older snapshot", "range", f.id, "applied", f.applied.Load(), "snapshot_state", st.applied)
	return nil
}

// dropFailed ends a failed restore: the staged data goes, and a received
// snapshot's reference with it (Raft would trust a listed snapshot's
// index at its next start); st is nil when staging itself failed.
func (f *RangeFSM) dropFailed(st *stagedSnapshot, cause error) error {
	err := errors.Join(fmt.Errorf("raftstore: restore range %d: %w", f.id, cause), f.dropStaged())
	if st != nil && st.dropRef != nil {
		err = errors.Join(err, st.dropRef())
	}
	return err
}

// DiscardStaged forgets a received snapshot that was staged but never
// restored, and deletes its data: a Raft instance that starts never
// restores it (the shard's start swaps in one the state is behind, so
// what is left is one the state is past), and Open would hand a token
// for it to a follower.
func (f *RangeFSM) DiscardStaged() error {
	if f.setStaged("", nil) == nil {
		return nil
	}
	return f.dropStaged()
}

// dropStaged deletes what stageSnapshot wrote for the range, if anything.
func (f *RangeFSM) dropStaged() error {
	err := f.store.db.Update(func(tx *bolt.Tx) error {
		staging := tx.Bucket(restoreStaging)
		if staging == nil || staging.Bucket(f.bucket) == nil {
			return nil
		}
		return staging.DeleteBucket(f.bucket)
	})
	if err != nil {
		return fmt.Errorf("raftstore: drop range %d's staged snapshot: %w", f.id, err)
	}
	return nil
}

// readSnapshot decodes a stream, calling put for each record, and returns
// the applied index it carries. It verifies the checksum before returning
// success; put's writes are only kept if the caller's transaction commits.
func readSnapshot(r io.Reader, put func(tag byte, k, stored []byte) error) (uint64, Descriptor, error) {
	var desc Descriptor
	applied, err := readSnapshotBody(r, put, &desc)
	return applied, desc, err
}

func readSnapshotBody(r io.Reader, put func(tag byte, k, stored []byte) error, desc *Descriptor) (uint64, error) {
	h := crc32.New(crcTable)
	br := bufio.NewReaderSize(r, 256<<10)
	tr := io.TeeReader(br, h)
	magic := make([]byte, len(snapMagic))
	if _, err := io.ReadFull(tr, magic); err != nil || string(magic) != string(snapMagic) {
		return 0, fmt.Errorf("%w: bad header", ErrBadSnapshot)
	}
	bytesR := &byteReader{r: tr}
	applied, err := binary.ReadUvarint(bytesR)
	if err != nil {
		return 0, fmt.Errorf("%w: applied index: %v", ErrBadSnapshot, err)
	}
	descBytes, err := readField(bytesR, nil)
	if err != nil {
		return 0, fmt.Errorf("%w: descriptor: %v", ErrBadSnapshot, err)
	}
	if *desc, err = UnmarshalDescriptor(descBytes); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	for n := 0; ; n++ {
		var k, v []byte // fresh each record: bbolt keeps Put's slices until commit
		tag, err := bytesR.ReadByte()
		if err != nil {
			return 0, fmt.Errorf("%w: record %d: %v", ErrBadSnapshot, n, err)
		}
		if tag == 0 {
			break
		}
		if tag != snapTagData && tag != snapTagLock && tag != snapTagOutcome && tag != snapTagVersioned {
			return 0, fmt.Errorf("%w: record %d: bad tag %d", ErrBadSnapshot, n, tag)
		}
		if k, err = readField(bytesR, k); err != nil {
			return 0, fmt.Errorf("%w: record %d key: %v", ErrBadSnapshot, n, err)
		}
		if v, err = readField(bytesR, v); err != nil {
			return 0, fmt.Errorf("%w: record %d value: %v", ErrBadSnapshot, n, err)
		}
		// The checksum proves the bytes are the sender's, not that the
		// sender's state was sound: a value too short to decode is the
		// same ErrCorrupt here as to every reader of a range.
		var err2 error
		switch tag {
		case snapTagData:
			_, _, err2 = readStored(desc.ID, k, v)
		case snapTagLock:
			_, err2 = decodeLock(v)
		case snapTagOutcome:
			_, err2 = decodeOutcome(v)
		}
		if err2 != nil {
			return 0, fmt.Errorf("%w: record %d: %w", ErrBadSnapshot, n, err2)
		}
		if err := put(tag, k, v); err != nil {
			return 0, err
		}
	}
	sum := h.Sum32()
	var trailer [4]byte
	if _, err := io.ReadFull(br, trailer[:]); err != nil {
		return 0, fmt.Errorf("%w: missing checksum", ErrBadSnapshot)
	}
	if binary.BigEndian.Uint32(trailer[:]) != sum {
		return 0, fmt.Errorf("%w: checksum mismatch", ErrBadSnapshot)
	}
	if _, err := br.Peek(1); !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("%w: bytes past the end of the stream", ErrBadSnapshot)
	}
	return applied, nil
}

const maxSnapshotField = 64 << 20

func readField(r *byteReader, buf []byte) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	if n > maxSnapshotField {
		return nil, fmt.Errorf("field of %d bytes", n)
	}
	buf = append(buf[:0], make([]byte, n)...)
	_, err = io.ReadFull(r.r, buf)
	return buf, err
}

// byteReader adapts an io.Reader for binary.ReadUvarint without
// reading ahead, so the checksum covers exactly the bytes consumed.
type byteReader struct {
	r   io.Reader
	one [1]byte
}

func (b *byteReader) ReadByte() (byte, error) {
	_, err := io.ReadFull(b.r, b.one[:])
	return b.one[0], err
}
