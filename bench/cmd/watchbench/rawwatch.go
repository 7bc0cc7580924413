package main

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// The watchers of both systems read their streams' messages as bytes and
// pick out the few fields the checks need, instead of building every
// event as a Go message. On this machine the benchmark shares 2 cores with
// the 3 servers, and 100 watchers decoding every event in full took about
// two thirds of them: the instrument, not the watchers' cost to the
// servers, set the write throughput it measured. The bytes on the wire
// are those of the systems' own clients; requests are marshalled as
// usual.

// rawMsg receives one message's bytes; buf is reused from one message to
// the next, so its events are read before the next receive.
type rawMsg struct{ buf []byte }

// rawCodec marshals requests as protobuf and hands responses over as
// bytes into a *rawMsg.
type rawCodec struct{ proto encoding.CodecV2 }

func newRawCodec() rawCodec { return rawCodec{proto: encoding.GetCodecV2("proto")} }

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*rawMsg)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	m.buf = m.buf[:0]
	for _, b := range data {
		m.buf = append(m.buf, b.ReadOnlyData()...)
	}
	return nil
}

// Name keeps the content-subtype that the servers' proto codec answers.
func (rawCodec) Name() string { return "proto" }

var errTruncated = errors.New("watchbench: truncated protobuf field")

// fields walks the fields of one protobuf message without allocating.
type fields struct {
	b   []byte
	err error
	// The current field: its number and wire type, its value for a varint
	// and its bytes for a length-delimited field.
	num protowire.Number
	typ protowire.Type
	v   uint64
	bs  []byte
}

// next moves to the next field; false at the end or on malformed bytes
// (then err says which).
func (f *fields) next() bool {
	if len(f.b) == 0 || f.err != nil {
		return false
	}
	num, typ, n := protowire.ConsumeTag(f.b)
	if n < 0 {
		f.err = fmt.Errorf("%w: %w", errTruncated, protowire.ParseError(n))
		return false
	}
	f.b = f.b[n:]
	f.num, f.typ, f.v, f.bs = num, typ, 0, nil
	switch typ {
	case protowire.VarintType:
		f.v, n = protowire.ConsumeVarint(f.b)
	case protowire.BytesType:
		f.bs, n = protowire.ConsumeBytes(f.b)
	default:
		n = protowire.ConsumeFieldValue(num, typ, f.b)
	}
	if n < 0 {
		f.err = fmt.Errorf("%w: field %d: %w", errTruncated, num, protowire.ParseError(n))
		return false
	}
	f.b = f.b[n:]
	return true
}

func (f *fields) is(num protowire.Number, typ protowire.Type) bool {
	return f.num == num && f.typ == typ
}

// Field numbers of dialkv's kv.v1 messages (api/proto/kv/v1/kv.proto).
const (
	dkWatchResponseEvents = 1
	dkEventType           = 1
	dkEventKey            = 2
	dkEventValue          = 3
	dkEventRangeID        = 6
	dkEventIndex          = 7
	dkEventTypePut        = 1 // EVENT_TYPE_PUT
)

// parseDialkvWatch appends the events of a kv.v1.WatchResponse to out.
func parseDialkvWatch(b []byte, out []event) ([]event, error) {
	resp := fields{b: b}
	for resp.next() {
		if !resp.is(dkWatchResponseEvents, protowire.BytesType) {
			continue
		}
		var ev event
		f := fields{b: resp.bs}
		for f.next() {
			switch {
			case f.is(dkEventType, protowire.VarintType):
				ev.put = f.v == dkEventTypePut
			case f.is(dkEventKey, protowire.BytesType):
				ev.key = f.bs
			case f.is(dkEventValue, protowire.BytesType):
				ev.value = f.bs
			case f.is(dkEventRangeID, protowire.VarintType):
				ev.group = f.v
			case f.is(dkEventIndex, protowire.VarintType):
				ev.index = f.v
			}
		}
		if f.err != nil {
			return out, f.err
		}
		out = append(out, ev)
	}
	return out, resp.err
}

// Field numbers of etcd's etcdserverpb.WatchResponse and mvccpb's Event
// and KeyValue.
const (
	etcdWatchResponseCanceled  = 4
	etcdWatchResponseCompacted = 5
	etcdWatchResponseReason    = 6
	etcdWatchResponseEvents    = 11
	etcdEventType              = 1
	etcdEventKV                = 2
	etcdKVKey                  = 1
	etcdKVModRevision          = 3
	etcdKVValue                = 5
	etcdEventTypeDelete        = 1 // PUT is 0, the default
)

// parseEtcdWatch appends the events of an etcdserverpb.WatchResponse to
// out (an event without its key-value is skipped: clientv3's watcher
// reports nothing for it either), or fails when etcd canceled the watch.
func parseEtcdWatch(b []byte, out []event) ([]event, error) {
	var canceled bool
	var compacted int64
	var reason []byte
	resp := fields{b: b}
	for resp.next() {
		switch {
		case resp.is(etcdWatchResponseCanceled, protowire.VarintType):
			canceled = resp.v != 0
		case resp.is(etcdWatchResponseCompacted, protowire.VarintType):
			compacted = int64(resp.v)
		case resp.is(etcdWatchResponseReason, protowire.BytesType):
			reason = resp.bs
		case resp.is(etcdWatchResponseEvents, protowire.BytesType):
			ev := event{put: true}
			hasKV := false
			f := fields{b: resp.bs}
			for f.next() {
				switch {
				case f.is(etcdEventType, protowire.VarintType):
					ev.put = f.v != etcdEventTypeDelete
				case f.is(etcdEventKV, protowire.BytesType):
					hasKV = true
					kv := fields{b: f.bs}
					for kv.next() {
						switch {
						case kv.is(etcdKVKey, protowire.BytesType):
							ev.key = kv.bs
						case kv.is(etcdKVValue, protowire.BytesType):
							ev.value = kv.bs
						case kv.is(etcdKVModRevision, protowire.VarintType):
							ev.index = kv.v
						}
					}
					if kv.err != nil {
						return out, kv.err
					}
				}
			}
			if f.err != nil {
				return out, f.err
			}
			if hasKV {
				out = append(out, ev)
			}
		}
	}
	if resp.err != nil {
		return out, resp.err
	}
	if canceled {
		return out, fmt.Errorf("etcd canceled the watch: %s (compact revision %d)", reason, compacted)
	}
	return out, nil
}
