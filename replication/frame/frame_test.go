package frame

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestFrames_RoundTripAndRefuseDamage(t *testing.T) {
	var wire bytes.Buffer
	w := NewWriter(&wire)
	msgs := [][]byte{[]byte("first"), bytes.Repeat([]byte("x"), 1000), []byte("last")}
	for _, m := range msgs {
		if _, err := w.Write(m); err != nil {
			t.Fatal(err)
		}
	}
	good := wire.Bytes()
	got, err := io.ReadAll(NewReader(bytes.NewReader(good)))
	if err != nil || !bytes.Equal(got, bytes.Join(msgs, nil)) {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}
	bad := bytes.Clone(good)
	bad[HeaderLen+len(msgs[0])+HeaderLen+7] ^= 1 // a bit of the second payload
	got, err = io.ReadAll(NewReader(bytes.NewReader(bad)))
	if !errors.Is(err, ErrCorrupt) || !bytes.Equal(got, msgs[0]) {
		t.Fatalf("damaged stream: delivered %q, %v; want the first frame only, then ErrCorrupt", got, err)
	}
}

// Every Raft message of every range goes through Write: it must not
// allocate (a net.Buffers local, whose address WriteTo takes, used to
// escape on every call).
func TestWriter_WriteAllocatesNothing(t *testing.T) {
	w := NewWriter(io.Discard)
	p := make([]byte, 300)
	w.Write(p) // sizes the scratch buffers
	if n := testing.AllocsPerRun(1000, func() { w.Write(p) }); n != 0 {
		t.Fatalf("Write allocates %v times per call", n)
	}
}
