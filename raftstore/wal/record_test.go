package wal

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/hashicorp/raft"
)

func TestRecord_RoundTrips(t *testing.T) {
	logs := entries(7, 41, 44, 3)
	logs[1].AppendedAt = logs[1].AppendedAt.AddDate(-100, 0, 0) // before 1970: a negative timestamp
	logs[2].Data = nil
	tests := []struct {
		name string
		rec  []byte
		want record
	}{
		{"entries", appendEntriesRecord(nil, kindEntries, 7, logs), record{kind: kindEntries, rangeID: 7, index: 41, count: 4}},
		{"rewrite", appendEntriesRecord(nil, kindRewrite, 1<<40, logs[:1]), record{kind: kindRewrite, rangeID: 1 << 40, index: 41, count: 1}},
		{"truncate-from", appendIndexRecord(nil, kindTruncFrom, 2, 99), record{kind: kindTruncFrom, rangeID: 2, index: 99}},
		{"truncate-to", appendIndexRecord(nil, kindTruncTo, 2, 1<<63), record{kind: kindTruncTo, rangeID: 2, index: 1 << 63}},
		{"clear", appendBareRecord(nil, kindClear, 0), record{kind: kindClear}},
		{"drop", appendBareRecord(nil, kindDrop, 5), record{kind: kindDrop, rangeID: 5}},
		{"set", appendSetRecord(nil, 3, []byte("CurrentTerm"), []byte{0, 0, 0, 0, 0, 0, 0, 9}), record{kind: kindSet, rangeID: 3, key: []byte("CurrentTerm"), value: []byte{0, 0, 0, 0, 0, 0, 0, 9}}},
		{"set, empty value", appendSetRecord(nil, 3, []byte("k"), nil), record{kind: kindSet, rangeID: 3, key: []byte("k"), value: []byte{}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			payload, n, ok := checkRecord(append(tc.rec, 0, 0, 0)) // followed by zeros, as in a segment
			if !ok || n != len(tc.rec) {
				t.Fatalf("checkRecord: ok %v, size %d, want %d", ok, n, len(tc.rec))
			}
			got, err := decodeRecord(payload)
			if err != nil {
				t.Fatal(err)
			}
			if got.kind != tc.want.kind || got.rangeID != tc.want.rangeID || got.index != tc.want.index || got.count != tc.want.count ||
				string(got.key) != string(tc.want.key) || string(got.value) != string(tc.want.value) {
				t.Fatalf("decoded %+v, want %+v", got, tc.want)
			}
			if got.kind == kindEntries || got.kind == kindRewrite {
				es := got.entries
				for i := uint64(0); i < got.count; i++ {
					var e []byte
					e, es, err = nextEntry(es)
					if err != nil {
						t.Fatal(err)
					}
					var l raft.Log
					if err := decodeEntry(got.index+i, e, &l); err != nil {
						t.Fatal(err)
					}
					if !sameEntry(&l, logs[i]) {
						t.Fatalf("entry %d = %+v, want %+v", i, l, *logs[i])
					}
				}
			}
		})
	}
}

// payloadOf builds a payload by hand and wraps it in a record whose
// checksum matches, so that decodeRecord, not checkRecord, must refuse it.
func payloadOf(parts ...[]byte) []byte {
	var p []byte
	for _, b := range parts {
		p = append(p, b...)
	}
	return p
}

func uv(v uint64) []byte { return binary.AppendUvarint(nil, v) }

func TestRecord_DecodeErrors(t *testing.T) {
	hdr := func(k kind) []byte { return []byte{formatVersion, byte(k), 1} } // range 1
	entryBody := payloadOf(uv(3), []byte{byte(raft.LogCommand)}, make([]byte, 8), uv(0), []byte("data"))
	tests := []struct {
		name    string
		payload []byte
		want    error
	}{
		{"too short", []byte{formatVersion, 1}, ErrCorrupt},
		{"a newer format", payloadOf([]byte{formatVersion + 1, byte(kindEntries), 1}), ErrVersion},
		{"unknown kind", hdr(99), ErrCorrupt},
		{"range ID runs off the end", []byte{formatVersion, byte(kindClear), 0x80}, ErrCorrupt},
		{"entries without a count", payloadOf(hdr(kindEntries), uv(5)), ErrCorrupt},
		{"entries from index 0", payloadOf(hdr(kindEntries), uv(0), uv(1), uv(uint64(len(entryBody))), entryBody), ErrCorrupt},
		{"zero entries", payloadOf(hdr(kindEntries), uv(5), uv(0)), ErrCorrupt},
		{"indexes past 2^64", payloadOf(hdr(kindEntries), uv(^uint64(0)), uv(2)), ErrCorrupt},
		{"fewer entries than counted", payloadOf(hdr(kindEntries), uv(5), uv(2), uv(uint64(len(entryBody))), entryBody), ErrCorrupt},
		{"an entry longer than the record", payloadOf(hdr(kindEntries), uv(5), uv(1), uv(1000), entryBody), ErrCorrupt},
		{"an entry too short for its fields", payloadOf(hdr(kindEntries), uv(5), uv(1), uv(3), []byte{1, 1, 0}), ErrCorrupt},
		{"extensions longer than the entry", payloadOf(hdr(kindEntries), uv(5), uv(1), uv(11), uv(3), []byte{1}, make([]byte, 8), uv(50)), ErrCorrupt},
		{"bytes after the last entry", payloadOf(hdr(kindEntries), uv(5), uv(1), uv(uint64(len(entryBody))), entryBody, []byte{7}), ErrCorrupt},
		{"a cut without its index", payloadOf(hdr(kindTruncFrom)), ErrCorrupt},
		{"bytes after a cut", payloadOf(hdr(kindTruncTo), uv(4), []byte{1}), ErrCorrupt},
		{"bytes after a clear", payloadOf(hdr(kindClear), []byte{1}), ErrCorrupt},
		{"bytes after a drop", payloadOf(hdr(kindDrop), []byte{1}), ErrCorrupt},
		{"a key longer than the record", payloadOf(hdr(kindSet), uv(10), []byte("abc")), ErrCorrupt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeRecord(tc.payload); !errors.Is(err, tc.want) {
				t.Fatalf("decode: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestRecord_CheckRefusesTornRecords(t *testing.T) {
	good := appendIndexRecord(nil, kindTruncFrom, 1, 5)
	flip := func(i int) []byte { b := append([]byte(nil), good...); b[i] ^= 1; return b }
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"half a header", good[:4]},
		{"header only", good[:recordHeader]},
		{"cut short", good[:len(good)-1]},
		{"zeros", make([]byte, 32)},
		{"a length below the minimum", append([]byte{0, 0, 0, 2}, good[4:]...)},
		{"a length over the maximum", append([]byte{0x7f, 0xff, 0xff, 0xff}, good[4:]...)},
		{"a flipped payload bit", flip(len(good) - 1)},
		{"a flipped checksum bit", flip(5)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, ok := checkRecord(tc.b); ok {
				t.Fatal("accepted")
			}
		})
	}
}

// FuzzDecodeRecord: no input makes the decoder panic, and whatever it
// accepts it can walk entry by entry and encode again to the same
// entries.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(appendEntriesRecord(nil, kindEntries, 7, entries(7, 41, 44, 3))[recordHeader:])
	f.Add(appendSetRecord(nil, 3, []byte("CurrentTerm"), []byte{1, 2})[recordHeader:])
	f.Add(appendIndexRecord(nil, kindTruncTo, 2, 99)[recordHeader:])
	f.Add(appendBareRecord(nil, kindDrop, 2)[recordHeader:])
	f.Fuzz(func(t *testing.T, payload []byte) {
		rec, err := decodeRecord(payload)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
				t.Fatalf("error %v is neither ErrCorrupt nor ErrVersion", err)
			}
			return
		}
		if rec.kind != kindEntries && rec.kind != kindRewrite {
			return
		}
		var logs []*raft.Log
		es := rec.entries
		for i := uint64(0); i < rec.count; i++ {
			var e []byte
			if e, es, err = nextEntry(es); err != nil {
				t.Fatalf("entry %d of an accepted record: %v", i, err)
			}
			l := new(raft.Log)
			if err := decodeEntry(rec.index+i, e, l); err != nil {
				t.Fatalf("entry %d of an accepted record: %v", i, err)
			}
			logs = append(logs, l)
		}
		again, _, ok := checkRecord(appendEntriesRecord(nil, rec.kind, rec.rangeID, logs))
		if !ok {
			t.Fatal("re-encoded record fails its checksum")
		}
		rec2, err := decodeRecord(again)
		if err != nil || rec2.count != rec.count || rec2.index != rec.index || rec2.rangeID != rec.rangeID {
			t.Fatalf("re-encoded record: %+v, %v", rec2, err)
		}
		es = rec2.entries
		for i, want := range logs {
			var e []byte
			e, es, _ = nextEntry(es)
			var got raft.Log
			if err := decodeEntry(want.Index, e, &got); err != nil || !sameEntry(&got, want) {
				t.Fatalf("entry %d changed on the way round: %+v, want %+v (%v)", i, got, *want, err)
			}
		}
	})
}
