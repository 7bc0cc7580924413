package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/dialkv/dialkv/api"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/auth"
	"github.com/dialkv/dialkv/internal/tlsconf"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/dialkv/dialkv/replication"
	"github.com/dialkv/dialkv/shard"
	"github.com/hashicorp/go-metrics"
	gmprometheus "github.com/hashicorp/go-metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

type serveFlags struct {
	id, dataDir, grpcAddr, httpAddr, raftAddr string
	initialCluster, join                      string
	rangeMaxBytes                             int64
	watchRetentionBytes                       int64
	watchRetentionAge                         time.Duration
	replicas                                  int
	maxKeyBytes, maxValueBytes                int
	logLevel, logFormat                       string
	heartbeat, election, hibernateAfter       time.Duration
	commitTimeout                             time.Duration
	stateCommit                               time.Duration
	peerProxies                               []string
	pprofAddr                                 string
	raftMetrics, parallelAppend               bool
	perRangeStreams                           bool
	snapshotRate                              int64
	snapshotAdaptive                          bool
	conns                                     clientConnFlags
	tls                                       tlsFlags
	authTokenTTL                              time.Duration
	locality                                  string
}

func serveCmd() *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run one dialkv node",
		Long: `Run one dialkv node.

On an empty --data-dir the node bootstraps a new cluster with --initial-cluster
(every founding member gets the same list) or asks an existing member to add
it with --join. Restarting with the same flags resumes from the data directory.
SIGTERM or SIGINT shuts the node down cleanly: it first hands the
leadership of every awake range it leads to another replica (at most 5 s),
so a planned stop or a rolling upgrade leaves no range waiting for an
election.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("raft-commit-timeout") {
				// The default follows a shorter heartbeat timeout down
				// rather than refusing it.
				f.commitTimeout = min(f.commitTimeout, f.heartbeat/4)
			}
			if !cmd.Flags().Changed("snapshot-rate-bytes") {
				// Likewise, it follows larger ranges up.
				f.snapshotRate = defaultSnapshotRate(f.rangeMaxBytes)
			}
			return serve(cmd.Context(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.id, "id", "", "node id, unique in the cluster (required)")
	fl.StringVar(&f.dataDir, "data-dir", "", "directory for this node's data (required)")
	fl.StringVar(&f.grpcAddr, "grpc-addr", "127.0.0.1:7010", "client gRPC listen address")
	fl.StringVar(&f.httpAddr, "http-addr", "127.0.0.1:7011", "client HTTP listen address")
	fl.StringVar(&f.raftAddr, "raft-addr", "127.0.0.1:7012", "Raft listen address, used by peers")
	fl.StringVar(&f.initialCluster, "initial-cluster", "", "founding members as id=raftaddr,... (bootstrap on an empty data dir)")
	fl.StringVar(&f.join, "join", "", "client gRPC address of a member to join through")
	fl.Int64Var(&f.rangeMaxBytes, "range-max-bytes", 64<<20, "split a range when it grows past this many bytes")
	fl.IntVar(&f.replicas, "replicas", 3, "replicas per range")
	fl.StringVar(&f.locality, "locality", "", "where this node runs, ordered tiers from the widest (region=eu,zone=a): placement spreads each range's replicas and leaders over distinct localities, and clients read from the nearest replica")
	fl.Int64Var(&f.watchRetentionBytes, "watch-retention-bytes", raftstore.DefaultEventRetentionBytes, "keep up to this many bytes of past events per range for watches to resume from (a cursor older than what is kept is COMPACTED)")
	fl.DurationVar(&f.watchRetentionAge, "watch-retention-age", raftstore.DefaultEventRetentionAge, "keep past events per range for at most this long")
	fl.IntVar(&f.maxKeyBytes, "max-key-bytes", 4<<10, "largest key accepted")
	fl.IntVar(&f.maxValueBytes, "max-value-bytes", 1<<20, "largest value accepted")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.StringVar(&f.logFormat, "log-format", "text", "text or json")
	fl.DurationVar(&f.heartbeat, "raft-heartbeat-timeout", time.Second, "Raft heartbeat timeout (follower waits this long before an election)")
	fl.DurationVar(&f.election, "raft-election-timeout", time.Second, "Raft election timeout")
	fl.DurationVar(&f.commitTimeout, "raft-commit-timeout", shard.DefaultCommitTimeout, "how long a range leader with nothing new waits before telling its followers the commit index anyway (hashicorp/raft's CommitTimeout; sent only when it changed, else once a second): followers may lag up to twice this after the last write; at most a quarter of --raft-heartbeat-timeout")
	fl.DurationVar(&f.stateCommit, "state-commit-interval", replication.DefaultCommitInterval, "how often the node writes its ranges' applied writes to its state database (bbolt, two fsyncs each time); longer writes a page written again and again less often, and replays more of the log after a crash; at most 10s")
	fl.DurationVar(&f.hibernateAfter, "hibernate-after", 30*time.Second, "put a range's Raft group to sleep after it has been idle this long (0: never); the next request wakes it")
	fl.StringVar(&f.pprofAddr, "pprof-addr", "", "serve Go's /debug/pprof profiles on this address (off when empty)")
	fl.BoolVar(&f.parallelAppend, "parallel-leader-append", true, "let the leader's log fsync overlap the replication of the same entries (Raft thesis 10.2.1); false: sync, then replicate, as hashicorp/raft does")
	fl.BoolVar(&f.snapshotAdaptive, "snapshot-rate-adaptive", false, "pace the snapshots this node receives by its write-ahead log's sync time: faster while foreground syncs take as long as at rest, halved when they take twice as long, up to --snapshot-rate-bytes (no ceiling if that is 0)")
	fl.Int64Var(&f.snapshotRate, "snapshot-rate-bytes", snapshotRateDefault, "bound, in bytes a second, what the snapshots this node receives write to its disk when replicas move (a node joining or leaving, or a range re-replicated), so that foreground writes keep the disk; 0: no bound, else at least 16 MiB (16777216) and an eighth of --range-max-bytes (the default, 96 MiB, rises to that eighth for larger ranges)")
	fl.BoolVar(&f.perRangeStreams, "per-range-streams", false, "give each range its own connections to peers instead of sharing one link per peer (how releases before the link worked; for comparisons)")
	fl.BoolVar(&f.raftMetrics, "raft-metrics", false, "export hashicorp/raft's internal timings (commit time, log dispatch, follower log store, per-peer AppendEntries) on /metrics as dialkv_raft_*; costs some CPU per write")
	fl.StringSliceVar(&f.peerProxies, "peer-proxy", nil, "dial RAFTADDR through PROXYADDR (RAFTADDR=PROXYADDR, repeatable); for fault-injection tests")
	f.conns.register(cmd)
	f.tls.register(cmd)
	fl.DurationVar(&f.authTokenTTL, "auth-token-ttl", auth.DefaultTokenTTL, "how long a token from Authenticate (kvctl --user) stays valid")
	cmd.MarkFlagRequired("id")
	cmd.MarkFlagRequired("data-dir")
	return cmd
}

// drainTimeout bounds handing leaderships over on SIGTERM: within the
// 10 s a service manager usually waits before SIGKILL, with room left for
// the rest of the shutdown.
const drainTimeout = 5 * time.Second

func newLogger(level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	switch format {
	case "text":
		h = slog.NewTextHandler(os.Stderr, opts)
	case "json":
		h = slog.NewJSONHandler(os.Stderr, opts)
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
	return slog.New(h), nil
}

func serve(ctx context.Context, f serveFlags) error {
	log, err := newLogger(f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	peers, err := replication.ParseInitialCluster(f.initialCluster)
	if err != nil {
		return fmt.Errorf("--initial-cluster: %w", err)
	}
	proxies := map[string]string{}
	for _, p := range f.peerProxies {
		from, to, ok := strings.Cut(p, "=")
		if !ok {
			return fmt.Errorf("--peer-proxy %q: want RAFTADDR=PROXYADDR", p)
		}
		proxies[from] = to
	}
	cfg := replication.DefaultConfig()
	cfg.NodeID, cfg.DataDir = f.id, f.dataDir
	cfg.RaftAddr, cfg.GRPCAddr, cfg.HTTPAddr = f.raftAddr, f.grpcAddr, f.httpAddr
	cfg.InitialCluster, cfg.Join = peers, f.join
	cfg.RangeMaxBytes, cfg.Replicas = f.rangeMaxBytes, f.replicas
	locality, err := rpctypes.ParseLocality(f.locality)
	if err != nil {
		return fmt.Errorf("--locality: %w", err)
	}
	cfg.Locality = locality.String()
	if f.watchRetentionBytes <= 0 || f.watchRetentionAge <= 0 {
		return fmt.Errorf("--watch-retention-bytes and --watch-retention-age must be positive")
	}
	cfg.WatchRetentionBytes, cfg.WatchRetentionAge = f.watchRetentionBytes, f.watchRetentionAge
	cfg.Timing.Heartbeat, cfg.Timing.Election = f.heartbeat, f.election
	cfg.Timing.LeaderLease = min(f.heartbeat, f.election) / 2
	cfg.Timing.Commit = f.commitTimeout
	if err := cfg.Timing.Validate(); err != nil {
		return fmt.Errorf("--raft-commit-timeout, --raft-heartbeat-timeout: %w", err)
	}
	if f.hibernateAfter < 0 {
		return fmt.Errorf("--hibernate-after %v: must not be negative", f.hibernateAfter)
	}
	cfg.HibernateAfter = f.hibernateAfter
	if err := checkStateCommit(f.stateCommit); err != nil {
		return err
	}
	cfg.CommitInterval = f.stateCommit
	cfg.ParallelLeaderAppend = f.parallelAppend
	cfg.PerRangeStreams = f.perRangeStreams
	if err := checkSnapshotRate(f.snapshotRate, f.rangeMaxBytes); err != nil {
		return err
	}
	cfg.SnapshotRate = f.snapshotRate
	cfg.SnapshotRateAdaptive = f.snapshotAdaptive
	cfg.Logger = log
	if len(proxies) > 0 {
		cfg.DialAddr = func(a string) string {
			if p, ok := proxies[a]; ok {
				return p
			}
			return a
		}
	}
	limits := api.DefaultLimits()
	limits.MaxKeyBytes, limits.MaxValueBytes = f.maxKeyBytes, f.maxValueBytes
	if limits.MaxKeyBytes < 1 || limits.MaxValueBytes < 0 {
		return errors.New("--max-key-bytes must be positive and --max-value-bytes not negative")
	}
	connBudget, err := f.conns.plan()
	if err != nil {
		return err
	}
	tlsCfg, err := f.tls.load(f.join != "", log)
	if err != nil {
		return err
	}
	cfg.PeerTLS, cfg.ClientTLS = tlsCfg.peer, tlsCfg.dialClient

	// Claim the client ports before starting Raft, so a port clash fails
	// fast instead of leaving a half-started member.
	grpcLn, err := net.Listen("tcp", f.grpcAddr)
	if err != nil {
		return fmt.Errorf("listen on --grpc-addr: %w", err)
	}
	httpLn, err := net.Listen("tcp", f.httpAddr)
	if err != nil {
		grpcLn.Close()
		return fmt.Errorf("listen on --http-addr: %w", err)
	}

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	node, err := replication.Start(ctx, cfg)
	if err != nil {
		grpcLn.Close()
		httpLn.Close()
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(newRangeCollector(node), newWALCollector(node), newLinkCollector(node), newHostCollector(node, f.dataDir, dataDiskSpace),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "dialkv_snapshot_pace_bytes",
			Help: "Bytes a second the snapshots this node receives are paced at now (--snapshot-rate-bytes, or the adaptive pace); 0: no bound.",
		}, func() float64 { return float64(node.SnapshotPace()) }))
	if f.raftMetrics {
		if err := exportRaftMetrics(reg); err != nil {
			log.Warn("raft metrics not exported", "err", err)
		}
	}
	grpcLn, httpLn = limitClientConns(grpcLn, httpLn, connBudget, reg, log)
	svc := api.NewService(node, limits, api.NewMetrics(reg), log)
	authStore := replication.NewAuthStore(node)
	svc.SetAuth(authStore, f.authTokenTTL)
	grpcOpts := f.conns.grpcOptions()
	if tlsCfg.grpc != nil {
		grpcOpts = append(grpcOpts, grpc.Creds(credentials.NewTLS(tlsCfg.grpc)))
	}
	grpcSrv, health := api.NewGRPCServer(svc, grpcOpts...)
	health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	ready := func(ctx context.Context) error {
		if err := node.Ready(ctx); err != nil {
			return err
		}
		return authStore.Ready(ctx)
	}
	httpSrv := &http.Server{Handler: api.NewHTTPHandler(svc, reg, ready), TLSConfig: tlsCfg.http}
	f.conns.httpTimeouts(httpSrv)

	if f.pprofAddr != "" {
		go servePprof(f.pprofAddr, log)
	}
	errc := make(chan error, 3)
	go func() { errc <- grpcSrv.Serve(grpcLn) }()
	// Node-to-node RPCs (Internal, and forwarded requests) are served
	// only on the peer port's listener, never on the client port.
	peerSrv := api.NewPeerGRPCServer(svc)
	go func() { errc <- peerSrv.Serve(node.InternalListener()) }()
	go func() {
		if tlsCfg.http != nil {
			// The certificate comes from TLSConfig.GetCertificate.
			errc <- httpSrv.ServeTLS(api.JSONRequestErrors(httpLn), "", "")
			return
		}
		errc <- httpSrv.Serve(api.JSONRequestErrors(httpLn))
	}()
	log.Info("kvd serving", "grpc", f.grpcAddr, "http", f.httpAddr, "raft", f.raftAddr, "data_dir", f.dataDir,
		"client_tls", tlsCfg.grpc != nil, "client_cert_auth", f.tls.clientCertAuth, "peer_tls", tlsCfg.peer != nil)

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down: handing leaderships over")
		// While still serving, so that requests in flight finish and new
		// ones reach the new leaders through this node's forwarding.
		dctx, dcancel := context.WithTimeout(context.Background(), drainTimeout)
		res := node.DrainLeadership(dctx)
		dcancel()
		log.Info("leaderships handed over", "led", res.Led, "transferred", res.Transferred, "took", res.Elapsed.Round(time.Millisecond))
	case serveErr = <-errc:
		log.Error("server stopped", "err", serveErr)
	}
	health.Shutdown()
	// Short grace periods: http.Server.Shutdown waits for connections that
	// have not sent a request yet, which idle clients leave behind.
	hctx, hcancel := context.WithTimeout(context.Background(), time.Second)
	if err := httpSrv.Shutdown(hctx); err != nil {
		httpSrv.Close()
	}
	hcancel()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stopped := make(chan struct{})
	go func() { grpcSrv.GracefulStop(); peerSrv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-sctx.Done():
		grpcSrv.Stop()
		peerSrv.Stop()
	}
	authStore.Close()
	if err := node.Close(); err != nil {
		log.Error("closing node", "err", err)
		return err
	}
	log.Info("stopped cleanly")
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	return nil
}

// servePprof serves the runtime profiles on their own address, never on
// the client API's.
func servePprof(addr string, log *slog.Logger) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Info("serving profiles", "addr", addr)
	if err := srv.ListenAndServe(); err != nil {
		log.Error("profile server stopped", "err", err)
	}
}

// exportRaftMetrics puts hashicorp/raft's own timings (commit time, log
// dispatch, a follower's log store, FSM apply, per-peer AppendEntries round
// trips) on reg as dialkv_raft_* summaries. Raft reports them through
// go-metrics' process-wide sink, so this is done once per process, here in
// main; they are summed over every range the node hosts.
func exportRaftMetrics(reg prometheus.Registerer) error {
	sink, err := gmprometheus.NewPrometheusSinkFrom(gmprometheus.PrometheusOpts{Registerer: reg})
	if err != nil {
		return fmt.Errorf("raft metrics sink: %w", err)
	}
	cfg := metrics.DefaultConfig("dialkv")
	cfg.EnableHostname, cfg.EnableHostnameLabel, cfg.EnableRuntimeMetrics = false, false, false
	if _, err := metrics.NewGlobal(cfg, sink); err != nil {
		return fmt.Errorf("raft metrics: %w", err)
	}
	return nil
}

// tlsFlags are kvd serve's TLS flags, named as etcd's.
type tlsFlags struct {
	certFile, keyFile, trustedCAFile             string
	clientCertAuth                               bool
	peerCertFile, peerKeyFile, peerTrustedCAFile string
}

func (t *tlsFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&t.certFile, "cert-file", "", "TLS certificate of the client port (gRPC and HTTP); turns TLS on there")
	fl.StringVar(&t.keyFile, "key-file", "", "key of --cert-file")
	fl.StringVar(&t.trustedCAFile, "trusted-ca-file", "", "CA bundle that client certificates must chain to")
	fl.BoolVar(&t.clientCertAuth, "client-cert-auth", false, "require a client certificate signed by --trusted-ca-file on the client port")
	fl.StringVar(&t.peerCertFile, "peer-cert-file", "", "node certificate (dialkv://node/ID) of the peer (Raft) port; turns mutual TLS on there")
	fl.StringVar(&t.peerKeyFile, "peer-key-file", "", "key of --peer-cert-file")
	fl.StringVar(&t.peerTrustedCAFile, "peer-trusted-ca-file", "", "CA bundle that peers' node certificates must chain to")
}

// serveTLS is what the flags turn on; nil fields are plaintext.
type serveTLS struct {
	grpc, http *tls.Config
	peer       *tlsconf.Source
	// dialClient dials a member's client port (--join) when it has TLS.
	dialClient *tlsconf.Source
}

// load checks the flags go together and reads their files; every error
// names the flag at fault. Files are re-read when they change.
func (t *tlsFlags) load(joining bool, log *slog.Logger) (serveTLS, error) {
	var out serveTLS
	pairs := []struct{ a, aName, b, bName string }{
		{t.certFile, "--cert-file", t.keyFile, "--key-file"},
		{t.peerCertFile, "--peer-cert-file", t.peerKeyFile, "--peer-key-file"},
	}
	for _, p := range pairs {
		if p.a != "" && p.b == "" {
			return out, fmt.Errorf("%s needs %s", p.aName, p.bName)
		}
		if p.a == "" && p.b != "" {
			return out, fmt.Errorf("%s needs %s", p.bName, p.aName)
		}
	}
	if t.trustedCAFile != "" && t.certFile == "" {
		return out, errors.New("--trusted-ca-file needs --cert-file and --key-file (TLS on the client port)")
	}
	if t.clientCertAuth && t.trustedCAFile == "" {
		return out, errors.New("--client-cert-auth needs --trusted-ca-file")
	}
	if (t.peerCertFile == "") != (t.peerTrustedCAFile == "") {
		if t.peerCertFile == "" {
			return out, errors.New("--peer-trusted-ca-file needs --peer-cert-file and --peer-key-file: the peer port is always mutual TLS")
		}
		return out, errors.New("--peer-cert-file needs --peer-trusted-ca-file: the peer port is always mutual TLS")
	}
	if t.certFile != "" {
		src, err := tlsconf.Load(tlsconf.Files{Cert: t.certFile, Key: t.keyFile, CA: t.trustedCAFile}, log)
		if err != nil {
			return out, fmt.Errorf("--cert-file/--key-file/--trusted-ca-file: %w", err)
		}
		if out.grpc, err = tlsconf.ServerConfig(src, t.clientCertAuth); err != nil {
			return out, fmt.Errorf("--cert-file: %w", err)
		}
		if out.http, err = tlsconf.ServerConfig(src, t.clientCertAuth); err != nil {
			return out, fmt.Errorf("--cert-file: %w", err)
		}
	}
	if t.peerCertFile != "" {
		src, err := tlsconf.Load(tlsconf.Files{Cert: t.peerCertFile, Key: t.peerKeyFile, CA: t.peerTrustedCAFile}, log)
		if err != nil {
			return out, fmt.Errorf("--peer-cert-file/--peer-key-file/--peer-trusted-ca-file: %w", err)
		}
		out.peer = src
	}
	if t.certFile != "" && joining {
		// The --join address is a member's client port, TLS like ours:
		// verify it with our client CA (else the peer CA) and present our
		// node certificate in case it requires a client certificate.
		files := tlsconf.Files{CA: t.trustedCAFile, Cert: t.peerCertFile, Key: t.peerKeyFile}
		if files.CA == "" {
			files.CA = t.peerTrustedCAFile
		}
		if files.Cert == "" {
			files.Cert, files.Key = t.certFile, t.keyFile
		}
		if files.CA == "" {
			return out, errors.New("--join with TLS on the client port needs --trusted-ca-file or --peer-trusted-ca-file to verify the member joined through")
		}
		src, err := tlsconf.Load(files, log)
		if err != nil {
			return out, fmt.Errorf("--join over TLS: %w", err)
		}
		out.dialClient = src
	}
	return out, nil
}

func checkStateCommit(d time.Duration) error {
	if d <= 0 || d > replication.MaxCommitInterval {
		return fmt.Errorf("--state-commit-interval %v: want more than 0 and at most %v", d, replication.MaxCommitInterval)
	}
	return nil
}

// snapshotRateDefault is --snapshot-rate-bytes unless set: 96 MiB/s.
// Unbounded, a node joining 3 that hold 1 GiB doubled the foreground p99
// or more in every run here; at 96 MiB/s none did, and the move still
// took under 15 s (docs/performance.md, session 24). TiKV bounds snapshot
// writes by default too (100 MB/s). Replacing a failed node's replicas
// takes 2-3 s more per GiB a node receives, after the 30 s placement
// waits before it re-creates them.
const snapshotRateDefault = 96 << 20

// defaultSnapshotRate is --snapshot-rate-bytes when not given: the
// default, raised to the least the ranges' size allows.
func defaultSnapshotRate(rangeMaxBytes int64) int64 {
	return max(snapshotRateDefault, leastSnapshotRate(rangeMaxBytes))
}

// leastSnapshotRate is the least --snapshot-rate-bytes under which a move
// can finish: placement gives a move a minute to catch up, with two
// snapshots arriving at a node at once (raftstore.MinSnapshotRate), and
// a range grows to --range-max-bytes before it splits.
func leastSnapshotRate(rangeMaxBytes int64) int64 {
	return max(raftstore.MinSnapshotRate, rangeMaxBytes/8)
}

// checkSnapshotRate refuses a --snapshot-rate-bytes below
// leastSnapshotRate, except 0 (no bound).
func checkSnapshotRate(rate, rangeMaxBytes int64) error {
	if least := leastSnapshotRate(rangeMaxBytes); rate < 0 || (rate > 0 && rate < least) {
		return fmt.Errorf("--snapshot-rate-bytes %d: want 0 (no bound) or at least %d (16 MiB, and an eighth of --range-max-bytes)", rate, least)
	}
	return nil
}
