package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/dialkv/dialkv/api"
	"github.com/dialkv/dialkv/internal/connlimit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
)

// Bounds on what clients may hold on the client ports (see package
// connlimit): how many connections, and how long each may sit idle or
// half-sent. The peer port has none of these: its connections come from
// the few other nodes, and the descriptors it needs are the ones
// connlimit.Plan keeps in reserve.

// headerTimeout bounds an HTTP request's headers and a gRPC connection's
// HTTP/2 handshake: no legitimate client needs longer, and until then the
// connection has done no work.
const headerTimeout = 10 * time.Second

// clientPorts is how many ports share the client budget: gRPC and HTTP.
const clientPorts = 2

type clientConnFlags struct {
	maxConns                     int
	httpIdle, httpRead, grpcIdle time.Duration
}

func (f *clientConnFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.IntVar(&f.maxConns, "max-client-conns", 0, "connections each client port (gRPC, HTTP) may hold at once; past it a new connection is refused at once (HTTP: 503 with reason TOO_MANY_CONNECTIONS). "+
		"0: derived from the file descriptor limit (ulimit -n): half of it, at least 256, is kept for the Raft port and the disk, and the rest is split between the two ports")
	fl.DurationVar(&f.httpIdle, "http-idle-timeout", 90*time.Second, "close an HTTP keep-alive connection that has waited this long for its next request")
	fl.DurationVar(&f.httpRead, "http-read-timeout", 30*time.Second, fmt.Sprintf("time allowed to read one HTTP request, headers and body (the headers alone get at most %v)", headerTimeout))
	fl.DurationVar(&f.grpcIdle, "grpc-idle-timeout", 5*time.Minute, fmt.Sprintf("close a client gRPC connection that has had no RPC in flight for this long (clients reconnect on their next RPC); a new connection must finish its HTTP/2 handshake within %v", headerTimeout))
}

// plan checks the flags and shares the descriptor limit between the
// client ports and the reserve.
func (f *clientConnFlags) plan() (connlimit.Budget, error) {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"--http-idle-timeout", f.httpIdle}, {"--http-read-timeout", f.httpRead}, {"--grpc-idle-timeout", f.grpcIdle}} {
		if d.v <= 0 {
			return connlimit.Budget{}, fmt.Errorf("%s %v: must be positive", d.name, d.v)
		}
	}
	if f.maxConns < 0 {
		return connlimit.Budget{}, fmt.Errorf("--max-client-conns %d: must not be negative (0 derives it from the descriptor limit)", f.maxConns)
	}
	limit, err := connlimit.DescriptorLimit()
	if err != nil {
		if f.maxConns == 0 {
			return connlimit.Budget{}, fmt.Errorf("--max-client-conns 0 derives the cap from the descriptor limit, which is unknown here (%w); set it", err)
		}
		return connlimit.Budget{PerPort: f.maxConns}, nil
	}
	b, err := connlimit.Plan(limit, clientPorts, f.maxConns)
	if err != nil {
		return connlimit.Budget{}, fmt.Errorf("--max-client-conns %d with ulimit -n %d: %w", f.maxConns, limit, err)
	}
	return b, nil
}

// httpTimeouts sets the HTTP server's bounds on one connection.
func (f *clientConnFlags) httpTimeouts(s *http.Server) {
	s.IdleTimeout = f.httpIdle
	s.ReadTimeout = f.httpRead
	s.ReadHeaderTimeout = min(headerTimeout, f.httpRead)
}

// grpcOptions are the client gRPC server's bounds on one connection.
func (f *clientConnFlags) grpcOptions() []grpc.ServerOption {
	return api.ClientGRPCOptions(api.ClientConnTimeouts{Idle: f.grpcIdle, Handshake: headerTimeout})
}

// limitClientConns caps the two client listeners at b.PerPort connections
// each and exports their counts on reg.
func limitClientConns(grpcLn, httpLn net.Listener, b connlimit.Budget, reg prometheus.Registerer, log *slog.Logger) (net.Listener, net.Listener) {
	g := connlimit.NewListener(grpcLn, b.PerPort, nil)
	h := connlimit.NewListener(httpLn, b.PerPort, api.RefuseHTTP)
	for _, p := range []struct {
		port string
		l    *connlimit.Listener
	}{{"grpc", g}, {"http", h}} {
		labels := prometheus.Labels{"port": p.port}
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "dialkv_client_connections", Help: "Client connections open on the port.", ConstLabels: labels,
			}, func() float64 { return float64(p.l.Open()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "dialkv_client_connections_max", Help: "Client connections the port may hold (--max-client-conns).", ConstLabels: labels,
			}, func() float64 { return float64(p.l.Max()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "dialkv_client_connections_refused_total", Help: "Client connections refused because the port held its maximum.", ConstLabels: labels,
			}, func() float64 { return float64(p.l.Refused()) }),
		)
	}
	log.Info("client connection limits", "per_port", b.PerPort, "nofile", b.Limit, "reserved", b.Reserve)
	return g, h
}
