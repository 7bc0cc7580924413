package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/hashicorp/raft"
)

// The on-disk format. See doc.go for why it looks the way it does.
//
// A segment starts with a header:
//
//	magic "dialkvWL" | format version (1 byte) | 3 zero bytes | sequence (8) | CRC-32C of the 20 bytes before (4)
//
// then holds records, each
//
//	payload length (4) | CRC-32C of the payload (4) | payload
//
// and the payload is
//
//	format version (1) | kind (1) | range ID (uvarint) | body
//
// with the body by kind:
//
//	kindEntries, kindRewrite: first index (uvarint) | count (uvarint) | count × (length (uvarint) | entry)
//	kindTruncFrom, kindTruncTo: index (uvarint)
//	kindClear, kindDrop:        nothing
//	kindSet:                    key length (uvarint) | key | value
//
// and an entry is
//
//	term (uvarint) | type (1) | appended-at, Unix ns, 0 for none (8) | extensions length (uvarint) | extensions | data
//
// Integers of fixed size are big-endian.
const (
	formatVersion  = 1
	segMagic       = "dialkvWL"
	segHeaderSize  = 24
	recordHeader   = 8
	minPayload     = 3 // version, kind, a one-byte range ID
	maxRecord      = 256 << 20
	entryFixedSize = 1 + 8 // type, appended-at
)

// kind says what a record does to its range.
type kind byte

const (
	// kindEntries appends entries after the range's last.
	kindEntries kind = 1
	// kindRewrite holds live entries the collector copied forward out of
	// old segments: the same entries at a new place.
	kindRewrite kind = 2
	// kindTruncFrom drops the entries from index on (a suffix a new
	// leader overwrites).
	kindTruncFrom kind = 3
	// kindTruncTo drops the entries up to index (compaction after a
	// snapshot).
	kindTruncTo kind = 4
	// kindClear drops every entry.
	kindClear kind = 5
	// kindSet sets a stable value (term, vote).
	kindSet kind = 6
	// kindDrop removes the range: its entries and its stable values.
	kindDrop kind = 7
)

func (k kind) String() string {
	switch k {
	case kindEntries:
		return "entries"
	case kindRewrite:
		return "rewrite"
	case kindTruncFrom:
		return "truncate-from"
	case kindTruncTo:
		return "truncate-to"
	case kindClear:
		return "clear"
	case kindSet:
		return "set"
	case kindDrop:
		return "drop"
	}
	return fmt.Sprintf("kind(%d)", byte(k))
}

var (
	// ErrCorrupt is returned when the log holds something that does not
	// check out in a place no crash can explain (anywhere but the torn
	// tail of the newest segment).
	ErrCorrupt = errors.New("wal: log corrupt")
	// ErrVersion is returned when a record or segment has a format
	// version this build does not know: it was written by a newer one.
	ErrVersion = errors.New("wal: unknown format version")
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// record is a decoded payload. Its slices alias the payload.
type record struct {
	kind    kind
	rangeID uint64
	// index is the first entry's index (entries, rewrite) or the cut
	// point (truncate-from, truncate-to).
	index   uint64
	count   uint64
	entries []byte // count length-prefixed entries
	key     []byte
	value   []byte
}

func appendSegmentHeader(dst []byte, seq uint64) []byte {
	start := len(dst)
	dst = append(dst, segMagic...)
	dst = append(dst, formatVersion, 0, 0, 0)
	dst = binary.BigEndian.AppendUint64(dst, seq)
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], crcTable))
}

// checkSegmentHeader returns the sequence number in a segment's header.
func checkSegmentHeader(b []byte) (uint64, error) {
	if len(b) < segHeaderSize {
		return 0, fmt.Errorf("%w: segment header is %d bytes", ErrCorrupt, len(b))
	}
	if crc32.Checksum(b[:20], crcTable) != binary.BigEndian.Uint32(b[20:24]) {
		return 0, fmt.Errorf("%w: segment header checksum", ErrCorrupt)
	}
	if string(b[:8]) != segMagic {
		return 0, fmt.Errorf("%w: not a log segment", ErrCorrupt)
	}
	if b[8] != formatVersion {
		return 0, fmt.Errorf("%w: segment format %d", ErrVersion, b[8])
	}
	return binary.BigEndian.Uint64(b[12:20]), nil
}

// beginRecord reserves a record header and writes the payload's common
// prefix; finishRecord fills the header in.
func beginRecord(dst []byte, k kind, rangeID uint64) ([]byte, int) {
	start := len(dst)
	dst = append(dst, make([]byte, recordHeader)...)
	dst = append(dst, formatVersion, byte(k))
	return binary.AppendUvarint(dst, rangeID), start
}

func finishRecord(dst []byte, start int) []byte {
	payload := dst[start+recordHeader:]
	binary.BigEndian.PutUint32(dst[start:], uint32(len(payload)))
	binary.BigEndian.PutUint32(dst[start+4:], crc32.Checksum(payload, crcTable))
	return dst
}

// appendEntriesRecord encodes logs, which must have consecutive indexes.
func appendEntriesRecord(dst []byte, k kind, rangeID uint64, logs []*raft.Log) []byte {
	dst, start := beginRecord(dst, k, rangeID)
	dst = binary.AppendUvarint(dst, logs[0].Index)
	dst = binary.AppendUvarint(dst, uint64(len(logs)))
	for _, e := range logs {
		n := uvarintLen(e.Term) + entryFixedSize + uvarintLen(uint64(len(e.Extensions))) + len(e.Extensions) + len(e.Data)
		dst = binary.AppendUvarint(dst, uint64(n))
		dst = binary.AppendUvarint(dst, e.Term)
		dst = append(dst, byte(e.Type))
		var at int64
		if !e.AppendedAt.IsZero() {
			at = e.AppendedAt.UnixNano()
		}
		dst = binary.BigEndian.AppendUint64(dst, uint64(at))
		dst = binary.AppendUvarint(dst, uint64(len(e.Extensions)))
		dst = append(dst, e.Extensions...)
		dst = append(dst, e.Data...)
	}
	return finishRecord(dst, start)
}

// appendRawEntriesRecord encodes entries already in their encoded form
// (as the collector copies them forward), the first at index first.
func appendRawEntriesRecord(dst []byte, k kind, rangeID, first uint64, entries [][]byte) []byte {
	dst, start := beginRecord(dst, k, rangeID)
	dst = binary.AppendUvarint(dst, first)
	dst = binary.AppendUvarint(dst, uint64(len(entries)))
	for _, e := range entries {
		dst = binary.AppendUvarint(dst, uint64(len(e)))
		dst = append(dst, e...)
	}
	return finishRecord(dst, start)
}

func appendIndexRecord(dst []byte, k kind, rangeID, index uint64) []byte {
	dst, start := beginRecord(dst, k, rangeID)
	dst = binary.AppendUvarint(dst, index)
	return finishRecord(dst, start)
}

func appendBareRecord(dst []byte, k kind, rangeID uint64) []byte {
	dst, start := beginRecord(dst, k, rangeID)
	return finishRecord(dst, start)
}

func appendSetRecord(dst []byte, rangeID uint64, key, value []byte) []byte {
	dst, start := beginRecord(dst, kindSet, rangeID)
	dst = binary.AppendUvarint(dst, uint64(len(key)))
	dst = append(dst, key...)
	dst = append(dst, value...)
	return finishRecord(dst, start)
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// checkRecord returns the payload of the record at the start of b and
// the record's whole size, or ok false when b does not start with a
// whole record whose checksum matches (a torn write, or zeros where the
// writes stopped).
func checkRecord(b []byte) (payload []byte, size int, ok bool) {
	if len(b) < recordHeader {
		return nil, 0, false
	}
	n := binary.BigEndian.Uint32(b[0:4])
	if n < minPayload || n > maxRecord || uint64(len(b)) < recordHeader+uint64(n) {
		return nil, 0, false
	}
	payload = b[recordHeader : recordHeader+n]
	if crc32.Checksum(payload, crcTable) != binary.BigEndian.Uint32(b[4:8]) {
		return nil, 0, false
	}
	return payload, recordHeader + int(n), true
}

// decodeRecord decodes a payload whose checksum matched, checking every
// length in it: a record that passed its checksum and still does not
// decode was written wrong, not torn.
func decodeRecord(p []byte) (record, error) {
	var r record
	if len(p) < minPayload {
		return r, fmt.Errorf("%w: record of %d bytes", ErrCorrupt, len(p))
	}
	if p[0] != formatVersion {
		return r, fmt.Errorf("%w: record format %d", ErrVersion, p[0])
	}
	r.kind = kind(p[1])
	rest := p[2:]
	var err error
	if r.rangeID, rest, err = uvarint(rest, "range ID"); err != nil {
		return r, err
	}
	switch r.kind {
	case kindEntries, kindRewrite:
		if r.index, rest, err = uvarint(rest, "first index"); err != nil {
			return r, err
		}
		if r.count, rest, err = uvarint(rest, "entry count"); err != nil {
			return r, err
		}
		if r.index == 0 || r.count == 0 || r.index+r.count-1 < r.index {
			return r, fmt.Errorf("%w: %s record of %d entries from index %d", ErrCorrupt, r.kind, r.count, r.index)
		}
		r.entries = rest
		b := rest
		for i := uint64(0); i < r.count; i++ {
			var e []byte
			if e, b, err = nextEntry(b); err != nil {
				return r, err
			}
			if err := checkEntry(e); err != nil {
				return r, err
			}
		}
		if len(b) != 0 {
			return r, fmt.Errorf("%w: %d bytes after the last entry", ErrCorrupt, len(b))
		}
	case kindTruncFrom, kindTruncTo:
		if r.index, rest, err = uvarint(rest, "index"); err != nil {
			return r, err
		}
		if len(rest) != 0 {
			return r, fmt.Errorf("%w: %d bytes after a %s record", ErrCorrupt, len(rest), r.kind)
		}
	case kindClear, kindDrop:
		if len(rest) != 0 {
			return r, fmt.Errorf("%w: %d bytes after a %s record", ErrCorrupt, len(rest), r.kind)
		}
	case kindSet:
		var n uint64
		if n, rest, err = uvarint(rest, "key length"); err != nil {
			return r, err
		}
		if n > uint64(len(rest)) {
			return r, fmt.Errorf("%w: key of %d bytes in %d", ErrCorrupt, n, len(rest))
		}
		r.key, r.value = rest[:n], rest[n:]
	default:
		return r, fmt.Errorf("%w: unknown record kind %d", ErrCorrupt, byte(r.kind))
	}
	return r, nil
}

func uvarint(b []byte, what string) (uint64, []byte, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, nil, fmt.Errorf("%w: bad %s", ErrCorrupt, what)
	}
	return v, b[n:], nil
}

// nextEntry splits the length-prefixed entry at the start of b off.
func nextEntry(b []byte) (entry, rest []byte, err error) {
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) {
		return nil, nil, fmt.Errorf("%w: bad entry length", ErrCorrupt)
	}
	return b[w : w+int(n)], b[w+int(n):], nil
}

func checkEntry(e []byte) error {
	_, w := binary.Uvarint(e)
	if w <= 0 || len(e)-w < entryFixedSize {
		return fmt.Errorf("%w: short entry", ErrCorrupt)
	}
	n, w2 := binary.Uvarint(e[w+entryFixedSize:])
	if w2 <= 0 || n > uint64(len(e)-w-entryFixedSize-w2) {
		return fmt.Errorf("%w: bad extensions length", ErrCorrupt)
	}
	return nil
}

// decodeEntry fills log from an entry checkEntry accepted. Extensions
// and Data alias e.
func decodeEntry(index uint64, e []byte, log *raft.Log) error {
	if err := checkEntry(e); err != nil {
		return err
	}
	term, w := binary.Uvarint(e)
	log.Index = index
	log.Term = term
	log.Type = raft.LogType(e[w])
	log.AppendedAt = time.Time{}
	if at := int64(binary.BigEndian.Uint64(e[w+1 : w+9])); at != 0 {
		log.AppendedAt = time.Unix(0, at)
	}
	rest := e[w+entryFixedSize:]
	n, w2 := binary.Uvarint(rest)
	log.Extensions = nil
	if n > 0 {
		log.Extensions = rest[w2 : w2+int(n)]
	}
	log.Data = rest[w2+int(n):]
	return nil
}
