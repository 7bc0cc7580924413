package replication

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"sync"
)

// hashicorp/raft's NetworkTransport writes bare msgpack on its streams. A
// stream that loses bytes in the middle and then carries on can decode as
// a different, valid message: an AppendEntries whose entry at index X
// holds another entry's command. Raft's log matching trusts (index, term),
// so such an entry is never repaired and the replica diverges for good.
// TCP itself never delivers a stream with a hole, but its 16-bit checksum
// is weak, and proxies and middleboxes have bugs (our own Jepsen proxy had
// exactly this one). So Raft streams travel in frames, each with a
// sequence number and a CRC-32C over both: a lost, repeated, reordered or
// damaged frame closes the connection instead of delivering anything, and
// Raft redials and resends from what the follower really has.
//
// Frame: length u32 | sequence u32 | crc32c(sequence, payload) u32 | payload
const (
	frameHeaderLen = 12
	// maxFramePayload bounds one frame, so a damaged length cannot make
	// the reader allocate without limit. Larger writes are split.
	maxFramePayload = 4 << 20
)

// ErrStreamCorrupt is returned by a framed stream's Read when a frame is
// damaged, missing or out of order; the connection is closed with it.
var ErrStreamCorrupt = errors.New("replication: raft stream corrupt")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// framedConn is a net.Conn whose byte stream is carried in checked
// frames. Both ends of a Raft connection must use it.
type framedConn struct {
	net.Conn

	// Write side. The header and the vector the write hands to writev
	// live here, so a frame costs no allocation.
	wmu   sync.Mutex
	wseq  uint32
	whdr  [frameHeaderLen]byte
	wvec  [2][]byte
	wbufs net.Buffers

	// Read side, used by one reader at a time (the transport's).
	br   *bufio.Reader
	rhdr [frameHeaderLen]byte
	rseq uint32
	buf  []byte // the current frame's payload
	off  int    // how much of buf has been read
	rerr error  // sticky: a broken stream stays broken
}

func newFramedConn(c net.Conn) *framedConn {
	return &framedConn{Conn: c, br: bufio.NewReaderSize(c, 64<<10)}
}

// frameSum is a frame's checksum, over the sequence number as the header
// carries it (hdr[4:8]) and the payload.
func frameSum(hdr *[frameHeaderLen]byte, payload []byte) uint32 {
	return crc32.Update(crc32.Checksum(hdr[4:8], castagnoli), castagnoli, payload)
}

// Write sends p as one frame (or several, if p is larger than a frame),
// header and payload in one system call.
func (f *framedConn) Write(p []byte) (int, error) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), maxFramePayload)]
		binary.BigEndian.PutUint32(f.whdr[0:], uint32(len(chunk)))
		binary.BigEndian.PutUint32(f.whdr[4:], f.wseq)
		binary.BigEndian.PutUint32(f.whdr[8:], frameSum(&f.whdr, chunk))
		f.wvec = [2][]byte{f.whdr[:], chunk}
		f.wbufs = f.wvec[:] // WriteTo consumes it
		if _, err := f.wbufs.WriteTo(f.Conn); err != nil {
			return written, err
		}
		f.wseq++
		written += len(chunk)
		p = p[len(chunk):]
	}
	return written, nil
}

// Read returns bytes of frames that have been checked whole: nothing of a
// frame is delivered before its checksum and sequence number match.
func (f *framedConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for f.off == len(f.buf) {
		if f.rerr != nil {
			return 0, f.rerr
		}
		if err := f.readFrame(); err != nil {
			f.rerr = err
			if errors.Is(err, ErrStreamCorrupt) {
				f.Conn.Close()
			}
			return 0, err
		}
	}
	n := copy(p, f.buf[f.off:])
	f.off += n
	return n, nil
}

func (f *framedConn) readFrame() error {
	hdr := &f.rhdr
	if _, err := io.ReadFull(f.br, hdr[:]); err != nil {
		return err // io.EOF between frames is a clean end of stream
	}
	n := binary.BigEndian.Uint32(hdr[0:])
	seq := binary.BigEndian.Uint32(hdr[4:])
	sum := binary.BigEndian.Uint32(hdr[8:])
	if n == 0 || n > maxFramePayload {
		return fmt.Errorf("%w: frame %d claims %d bytes", ErrStreamCorrupt, f.rseq, n)
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
	if got := frameSum(hdr, f.buf); got != sum || seq != f.rseq {
		f.buf = f.buf[:0]
		return fmt.Errorf("%w: frame %d: sequence %d, checksum %08x, want %08x", ErrStreamCorrupt, f.rseq, seq, got, sum)
	}
	f.rseq++
	return nil
}
