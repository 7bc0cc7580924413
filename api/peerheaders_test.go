package api

import (
	"context"
	"slices"
	"testing"

	"github.com/dialkv/dialkv/api/rpctypes"
	"google.golang.org/grpc/metadata"
)

// A request on the client port may carry anything; the headers only a
// peer may set must be gone before the service reads them, whatever else
// the request carries, and nothing else may be lost.
func TestWithoutPeerHeaders_DropsOnlyPeerOnlyHeaders(t *testing.T) {
	cases := []struct {
		name     string
		in       metadata.MD // nil: no incoming metadata at all
		want     metadata.MD
		sameCtxt bool // nothing to drop: the context is passed on as it is
	}{
		{name: "no metadata", in: nil, want: nil, sameCtxt: true},
		{name: "only client headers", in: metadata.Pairs(AuthorizationHeader, "Bearer t", "x-other", "1"),
			want: metadata.Pairs(AuthorizationHeader, "Bearer t", "x-other", "1"), sameCtxt: true},
		{name: "a forged hop count", in: metadata.Pairs(rpctypes.ForwardedHeader, "2", "x-other", "1"),
			want: metadata.Pairs("x-other", "1")},
		{name: "a forged meta hop count", in: metadata.Pairs(rpctypes.MetaHopsHeader, "9"),
			want: metadata.MD{}},
		{name: "both, with a token", in: metadata.Pairs(rpctypes.ForwardedHeader, "1", rpctypes.MetaHopsHeader, "1", AuthorizationHeader, "Bearer t"),
			want: metadata.Pairs(AuthorizationHeader, "Bearer t")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			before := tc.in.Copy()
			if tc.in != nil {
				ctx = metadata.NewIncomingContext(ctx, tc.in)
			}
			got := withoutPeerHeaders(ctx)
			if tc.sameCtxt && got != ctx {
				t.Error("a new context was made with nothing to drop")
			}
			md, ok := metadata.FromIncomingContext(got)
			if tc.want == nil {
				if ok {
					t.Fatalf("metadata %v appeared", md)
				}
				return
			}
			for _, k := range rpctypes.PeerHeaders {
				if v := md.Get(k); v != nil {
					t.Errorf("peer-only header %s=%v kept", k, v)
				}
			}
			if len(md) != len(tc.want) {
				t.Fatalf("metadata %v, want %v", md, tc.want)
			}
			for k, v := range tc.want {
				if !slices.Equal(md.Get(k), v) {
					t.Errorf("%s = %v, want %v", k, md.Get(k), v)
				}
			}
			// Dropping copies: the metadata the request came with is left
			// as it was.
			if len(tc.in) != len(before) {
				t.Errorf("incoming metadata changed in place: %v, was %v", tc.in, before)
			}
		})
	}
}

func TestRequestCreds_ReadsTheLastBearerToken(t *testing.T) {
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(AuthorizationHeader, "Bearer old", AuthorizationHeader, "Bearer new"))
	if got := requestCreds(ctx).token; got != "new" {
		t.Fatalf("token %q, want the last one sent, %q", got, "new")
	}
	if got := requestCreds(context.Background()).token; got != "" {
		t.Fatalf("token %q without metadata, want none", got)
	}
}
