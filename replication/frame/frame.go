// Package frame carries a byte stream in checked frames: Raft's per-range
// streams (replication's framedConn) and the node link (replication/link)
// both use it.
//
// hashicorp/raft's NetworkTransport writes bare msgpack. A stream that
// loses bytes in the middle and then carries on can decode as a different,
// valid message: an AppendEntries whose entry at index X holds another
// entry's command, which Raft's log matching, trusting (index, term),
// never repairs. TCP never delivers a stream with a hole, but its 16-bit
// checksum is weak, and proxies and middleboxes have bugs (our own Jepsen
// proxy had exactly this one). So each frame carries a sequence number and
// a CRC-32C over both: a lost, repeated, reordered or damaged frame ends
// the stream instead of delivering anything.
//
//	frame = length u32 | sequence u32 | crc32c(sequence, payload) u32 | payload
//
// A frame is a unit of checking, not of meaning: a writer may pack several
// messages into one frame, or split one over several.
package frame

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
)

const (
	// HeaderLen is the bytes of a frame's header.
	HeaderLen = 12
	// MaxPayload bounds one frame, so a damaged length cannot make the
	// reader allocate without limit; larger writes are split.
	MaxPayload = 4 << 20
)

// ErrCorrupt is returned when a frame is damaged, missing or out of
// order; the connection is closed with it.
var ErrCorrupt = errors.New("frame: stream corrupt")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func checksum(hdr []byte, parts [][]byte) uint32 {
	sum := crc32.Checksum(hdr[4:8], castagnoli)
	for _, p := range parts {
		sum = crc32.Update(sum, castagnoli, p)
	}
	return sum
}

// Writer writes checked frames. It is not safe for concurrent use:
// one goroutine (a connection's writer, or a snapshot stream's caller)
// owns it.
type Writer struct {
	w    io.Writer
	seq  uint32
	hdrs []byte
	vec  net.Buffers
	cur  [][]byte  // the parts of the frame being built
	one  [1][]byte // Write's vector
	bufs net.Buffers
}

func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// WriteVec writes the concatenation of parts as frames of at most
// MaxPayload bytes, all of them in one vectored write (writev on a
// TCP connection). It returns the bytes put on the wire, headers included.
func (f *Writer) WriteVec(parts [][]byte) (int64, error) {
	total := 0
	for _, p := range parts {
		total += len(p)
	}
	if total == 0 {
		return 0, nil
	}
	frames := (total + MaxPayload - 1) / MaxPayload
	// The headers live in one buffer sized up front: the vector holds
	// slices of it, which an append that moved it would invalidate.
	if cap(f.hdrs) < frames*HeaderLen {
		f.hdrs = make([]byte, frames*HeaderLen)
	}
	hdrs := f.hdrs[:frames*HeaderLen]
	vec := f.vec[:0]
	seq := f.seq
	cur, curLen, frame := f.cur[:0], 0, 0
	finish := func() {
		hdr := hdrs[frame*HeaderLen : (frame+1)*HeaderLen]
		binary.BigEndian.PutUint32(hdr[0:], uint32(curLen))
		binary.BigEndian.PutUint32(hdr[4:], seq)
		binary.BigEndian.PutUint32(hdr[8:], checksum(hdr, cur))
		vec = append(vec, hdr)
		vec = append(vec, cur...)
		seq++
		frame++
		cur, curLen = cur[:0], 0
	}
	for _, p := range parts {
		for len(p) > 0 {
			take := min(len(p), MaxPayload-curLen)
			cur = append(cur, p[:take])
			curLen += take
			p = p[take:]
			if curLen == MaxPayload {
				finish()
			}
		}
	}
	if curLen > 0 {
		finish()
	}
	f.cur = cur[:0]
	f.vec = vec[:0]
	wire := int64(total + frames*HeaderLen)
	// WriteTo consumes the vector it is given, so hand it a copy of the
	// slice header and keep vec's backing array for the next call. The
	// copy is a field: WriteTo takes its address, and a local would move
	// to the heap on every write.
	f.bufs = vec
	_, err := f.bufs.WriteTo(f.w)
	f.bufs = nil
	if err != nil {
		clear(vec) // do not pin the callers' buffers
		return 0, err
	}
	clear(vec)
	f.seq = seq
	return wire, nil
}

// Write sends p as frames (one or more, in one write).
func (f *Writer) Write(p []byte) (int, error) {
	f.one[0] = p // a field, not a literal: Write is on Raft's hot path and allocates nothing
	_, err := f.WriteVec(f.one[:])
	f.one[0] = nil
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// Reader delivers the bytes of frames that have been checked whole.
// One goroutine reads at a time.
type Reader struct {
	br   *bufio.Reader
	hdr  [HeaderLen]byte
	seq  uint32
	buf  []byte
	off  int
	err  error // sticky: a broken stream stays broken
	wire int64 // bytes read off the wire, headers included
}

func NewReader(r io.Reader) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, 64<<10)}
}

// Read returns bytes of frames that have been checked whole: nothing of
// a frame is delivered before its checksum and sequence number match. An
// error is sticky: a broken stream stays broken.
func (f *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for f.off == len(f.buf) {
		if f.err != nil {
			return 0, f.err
		}
		if err := f.readFrame(); err != nil {
			f.err = err
			return 0, err
		}
	}
	n := copy(p, f.buf[f.off:])
	f.off += n
	return n, nil
}

func (f *Reader) readFrame() error {
	if _, err := io.ReadFull(f.br, f.hdr[:]); err != nil {
		return err // io.EOF between frames is a clean end
	}
	n := binary.BigEndian.Uint32(f.hdr[0:])
	seq := binary.BigEndian.Uint32(f.hdr[4:])
	sum := binary.BigEndian.Uint32(f.hdr[8:])
	if n == 0 || n > MaxPayload {
		return fmt.Errorf("%w: frame %d claims %d bytes", ErrCorrupt, f.seq, n)
	}
	if cap(f.buf) < int(n) {
		f.buf = make([]byte, n)
	}
	f.buf, f.off = f.buf[:n], 0
	if _, err := io.ReadFull(f.br, f.buf); err != nil {
		f.buf = f.buf[:0]
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if got := checksum(f.hdr[:], [][]byte{f.buf}); got != sum || seq != f.seq {
		f.buf = f.buf[:0]
		return fmt.Errorf("%w: frame %d: sequence %d, checksum %08x, want %08x", ErrCorrupt, f.seq, seq, got, sum)
	}
	f.seq++
	f.wire += int64(n) + HeaderLen
	return nil
}

// WireBytes is how many bytes the reader has taken off the wire, frame
// headers included.
func (f *Reader) WireBytes() int64 { return f.wire }
