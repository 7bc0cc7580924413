package api

import (
	"context"
	"errors"
	"io"
	"net/http"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// The Auth service over HTTP (routes in http.go): every route is a POST
// whose body is the method's request message in protojson (proto field
// names; bytes in base64; an empty body is the empty message), answered
// with the response message the same way.

// authBodyLimit bounds an Auth request body: names, a password and a
// permission's two keys, base64-encoded.
const authBodyLimit = 64 << 10

// authRoute serves one Auth method: decode the protojson body into a new
// Req, call the method, encode its answer.
func authRoute[Req interface {
	*R
	proto.Message
}, R any, Resp proto.Message](call func(context.Context, Req) (Resp, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel, err := requestContext(r)
		if err != nil {
			writeError(w, err)
			return
		}
		defer cancel()
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, authBodyLimit))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				writeError(w, tooLarge("request body is over %d bytes", authBodyLimit))
				return
			}
			writeError(w, invalid("reading body: %v", err))
			return
		}
		req := Req(new(R))
		if len(body) > 0 {
			if err := protojson.Unmarshal(body, req); err != nil {
				writeError(w, invalid("malformed JSON body: %v", err))
				return
			}
		}
		resp, err := call(ctx, req)
		if err != nil {
			writeError(w, err)
			return
		}
		writeProto(w, resp)
	}
}

// withCredentials hands each request's token (Authorization: Bearer) and
// verified client certificate to the Service.
func withCredentials(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(withHTTPCreds(r.Context(), r.Header.Get("Authorization"), r.TLS)))
	})
}
