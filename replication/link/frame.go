package link

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
)

// Checked frames, the same format as replication/framing.go's per-range
// streams (kept apart so this package does not import replication, which
// will import it): a damaged, lost, repeated or reordered frame ends the
// connection instead of decoding into another valid Raft message.
//
// Frame: length u32 | sequence u32 | crc32c(sequence, payload) u32 | payload
//
// A link frame is a unit of checking, not of meaning: the writer packs
// whatever messages are pending into one frame (several if they exceed
// maxFramePayload) and the reader sees one byte stream of messages.
const (
	frameHeaderLen  = 12
	maxFramePayload = 4 << 20
)

// ErrStreamCorrupt is returned when a frame is damaged, missing or out of
// order; the connection is closed with it.
var ErrStreamCorrupt = errors.New("link: stream corrupt")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func frameSum(hdr []byte, parts [][]byte) uint32 {
	sum := crc32.Checksum(hdr[4:8], castagnoli)
	for _, p := range parts {
		sum = crc32.Update(sum, castagnoli, p)
	}
	return sum
}

// frameWriter writes checked frames. It is not safe for concurrent use:
// one goroutine (a connection's writer, or a snapshot stream's caller)
// owns it.
type frameWriter struct {
	w    io.Writer
	seq  uint32
	hdrs []byte
	vec  net.Buffers
	cur  [][]byte // the parts of the frame being built
}

func newFrameWriter(w io.Writer) *frameWriter { return &frameWriter{w: w} }

// writeVec writes the concatenation of parts as frames of at most
// maxFramePayload bytes, all of them in one vectored write (writev on a
// TCP connection). It returns the bytes put on the wire, headers included.
func (f *frameWriter) writeVec(parts [][]byte) (int64, error) {
	total := 0
	for _, p := range parts {
		total += len(p)
	}
	if total == 0 {
		return 0, nil
	}
	frames := (total + maxFramePayload - 1) / maxFramePayload
	// The headers live in one buffer sized up front: the vector holds
	// slices of it, which an append that moved it would invalidate.
	if cap(f.hdrs) < frames*frameHeaderLen {
		f.hdrs = make([]byte, frames*frameHeaderLen)
	}
	hdrs := f.hdrs[:frames*frameHeaderLen]
	vec := f.vec[:0]
	seq := f.seq
	cur, curLen, frame := f.cur[:0], 0, 0
	finish := func() {
		hdr := hdrs[frame*frameHeaderLen : (frame+1)*frameHeaderLen]
		binary.BigEndian.PutUint32(hdr[0:], uint32(curLen))
		binary.BigEndian.PutUint32(hdr[4:], seq)
		binary.BigEndian.PutUint32(hdr[8:], frameSum(hdr, cur))
		vec = append(vec, hdr)
		vec = append(vec, cur...)
		seq++
		frame++
		cur, curLen = cur[:0], 0
	}
	for _, p := range parts {
		for len(p) > 0 {
			take := min(len(p), maxFramePayload-curLen)
			cur = append(cur, p[:take])
			curLen += take
			p = p[take:]
			if curLen == maxFramePayload {
				finish()
			}
		}
	}
	if curLen > 0 {
		finish()
	}
	f.cur = cur[:0]
	f.vec = vec[:0]
	wire := int64(total + frames*frameHeaderLen)
	// WriteTo consumes the vector it is given, so hand it a copy of the
	// slice header and keep vec's backing array for the next call.
	bufs := vec
	if _, err := bufs.WriteTo(f.w); err != nil {
		clear(vec) // do not pin the callers' buffers
		return 0, err
	}
	clear(vec)
	f.seq = seq
	return wire, nil
}

// Write sends p as frames; it makes frameWriter an io.Writer for a
// snapshot's data.
func (f *frameWriter) Write(p []byte) (int, error) {
	if _, err := f.writeVec([][]byte{p}); err != nil {
		return 0, err
	}
	return len(p), nil
}

// frameReader delivers the bytes of frames that have been checked whole.
// One goroutine reads at a time.
type frameReader struct {
	br   *bufio.Reader
	hdr  [frameHeaderLen]byte
	seq  uint32
	buf  []byte
	off  int
	err  error // sticky: a broken stream stays broken
	read int64 // wire bytes read, headers included
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{br: bufio.NewReaderSize(r, 64<<10)}
}

func (f *frameReader) Read(p []byte) (int, error) {
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

func (f *frameReader) readFrame() error {
	if _, err := io.ReadFull(f.br, f.hdr[:]); err != nil {
		return err // io.EOF between frames is a clean end
	}
	n := binary.BigEndian.Uint32(f.hdr[0:])
	seq := binary.BigEndian.Uint32(f.hdr[4:])
	sum := binary.BigEndian.Uint32(f.hdr[8:])
	if n == 0 || n > maxFramePayload {
		return fmt.Errorf("%w: frame %d claims %d bytes", ErrStreamCorrupt, f.seq, n)
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
	if got := frameSum(f.hdr[:], [][]byte{f.buf}); got != sum || seq != f.seq {
		f.buf = f.buf[:0]
		return fmt.Errorf("%w: frame %d: sequence %d, checksum %08x, want %08x", ErrStreamCorrupt, f.seq, seq, got, sum)
	}
	f.seq++
	f.read += int64(n) + frameHeaderLen
	return nil
}
