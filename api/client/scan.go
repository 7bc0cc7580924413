package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/dialkv/dialkv/api/kvpb"
)

// ScanAll calls fn for every key in req's range, following the server's
// pages. req.Limit is a total limit here (0: no limit). An error from fn
// stops the scan and is returned as is. With SESSION consistency, each
// page's session token is passed to the next page so that the pages never
// go back in time.
func (c *Client) ScanAll(ctx context.Context, req *kvpb.ScanRequest, fn func(*kvpb.KeyValue) error, opts ...ReadOption) error {
	if fn == nil {
		return errors.New("dialkv client: ScanAll: nil callback")
	}
	page, s := scanRequest(req, opts)
	total := uint64(page.GetLimit())
	end := page.GetEnd()
	lower := page.GetStart()
	if len(page.GetPrefix()) > 0 {
		// Pages after the first are plain ranges starting at next_key.
		end = prefixEnd(page.GetPrefix())
		lower = page.GetPrefix()
	}
	var seen uint64
	// Each iteration either returns or strictly advances lower, and checks
	// ctx, so the loop is bounded by the key space and the caller's deadline.
	for {
		if err := ctx.Err(); err != nil {
			return &Error{Op: "scan", Err: err}
		}
		if total > 0 {
			page.Limit = uint32(total - seen)
		}
		resp, err := c.scanPage(ctx, page, s)
		if err != nil {
			return err
		}
		var lastKey []byte
		for _, kv := range resp.GetKvs() {
			if total > 0 && seen >= total {
				return nil
			}
			if err := fn(kv); err != nil {
				return err
			}
			seen++
			lastKey = kv.GetKey()
		}
		if !resp.GetMore() || (total > 0 && seen >= total) {
			return nil
		}
		next := resp.GetNextKey()
		if bytes.Compare(next, lower) <= 0 || (lastKey != nil && bytes.Compare(next, lastKey) <= 0) {
			return fmt.Errorf("dialkv client: scan: server returned next_key %q that does not advance past %q", next, max(string(lower), string(lastKey)))
		}
		if len(end) > 0 && bytes.Compare(next, end) >= 0 {
			return nil
		}
		page.Prefix = nil
		page.Start = next
		page.End = end
		lower = next
		if page.Read.GetConsistency() == kvpb.Consistency_CONSISTENCY_SESSION {
			if tok := resp.GetHeader().GetSessionToken(); tok != "" {
				page.Read.SessionToken = tok
			}
		}
	}
}

// prefixEnd returns the first key after every key with prefix p, or nil
// (the end of the key space) when p is all 0xff bytes.
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
