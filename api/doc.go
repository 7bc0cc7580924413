// Package api is dialkv's edge: the gRPC services of kv.proto and an
// HTTP/JSON API over the same Service methods, so both interfaces validate
// input, time out and report errors identically.
//
// The request path is: transport (gRPC or HTTP) → Service (validation,
// deadline, metrics, error table) → Backend (a replication.Node, which
// serves locally or forwards to the range leader).
//
// Every error leaving Service is a gRPC status built by toStatus from one
// table (errors.go), carrying an rpctypes.Reason; the HTTP handlers turn
// the same status into an HTTP code with httpStatus. Sub-packages: kvpb
// (generated code, do not edit), rpctypes (the reasons, shared with
// clients), client (the Go client).
package api
