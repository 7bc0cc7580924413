package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/harness"
	"github.com/dialkv/dialkv/internal/tlsconf"
)

type clusterFlags struct {
	nodes    int
	dataDir  string
	portBase int
	host     string
	logLevel string
	// logDir holds the nodes' logs (nI.log); empty: each node's data dir.
	logDir string
	// hibernateAfter is passed to every node's --hibernate-after.
	hibernateAfter time.Duration
	// tls puts TLS on every link, with certificates in dataDir/certs.
	tls bool
	// localities are the nodes' --locality values, separated by ';', node
	// i taking the ((i-1) mod count)th: "zone=a;zone=b;zone=c". Empty: none.
	localities string
}

// nodePorts is the port plan of `kvd cluster` (harness.MemberPorts): node
// i (1-based) listens on base+10i (gRPC), base+10i+1 (HTTP) and base+10i+2
// (Raft).
func nodePorts(base, i int) (grpc, http, raft int) {
	p := harness.MemberPorts(base, i, 3)
	return p[0], p[1], p[2]
}

func clusterCmd() *cobra.Command {
	var f clusterFlags
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Run a local cluster of kvd serve processes in the foreground",
		Long: `Run a local cluster: --nodes real 'kvd serve' processes on 127.0.0.1, node i
(1-based) with gRPC on port P+10i, HTTP on P+10i+1 and Raft on P+10i+2, data
under --data-dir/nI. Each node's log (its stderr) goes to --data-dir/nI/kvd.log,
or to --log-dir/nI.log: a log on the data filesystem stops when that fills up,
just when it is needed, so give --log-dir another filesystem for long runs.
Ctrl-C stops them all. Running it again with the same flags restarts the same
cluster from its data.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runCluster(cmd.Context(), f) },
	}
	fl := cmd.Flags()
	fl.IntVar(&f.nodes, "nodes", 3, "number of nodes")
	fl.StringVar(&f.dataDir, "data-dir", "./data", "parent directory of the nodes' data directories")
	fl.IntVar(&f.portBase, "port-base", 7000, "port plan base P")
	fl.StringVar(&f.host, "host", "127.0.0.1", "loopback address to bind")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level of the nodes")
	fl.StringVar(&f.logDir, "log-dir", "", "directory for the nodes' logs (nI.log); default: kvd.log in each node's data directory")
	fl.DurationVar(&f.hibernateAfter, "hibernate-after", 30*time.Second, "the nodes' --hibernate-after: idle ranges sleep after this long (0: never)")
	fl.BoolVar(&f.tls, "tls", false, "TLS on every link: makes DATA/certs (ca.crt, a certificate per node, client certificate root) once, and starts the nodes with mutual TLS on the client and peer ports")
	fl.StringVar(&f.localities, "localities", "", "the nodes' --locality, separated by ';' and taken in turn (node i gets the ((i-1) mod count)th): \"region=eu,zone=a;region=eu,zone=b;region=eu,zone=c\"")
	return cmd
}

// stopGrace is how long a node may take to shut down after SIGTERM before
// it is killed.
const stopGrace = 10 * time.Second

type child struct {
	id      string
	proc    *harness.Process
	logPath string
}

func runCluster(ctx context.Context, f clusterFlags) error {
	if f.nodes < 1 || f.nodes > 9 {
		return fmt.Errorf("--nodes must be between 1 and 9, got %d", f.nodes)
	}
	if f.portBase < 1024 || f.portBase+10*f.nodes+2 > 65535 {
		return fmt.Errorf("--port-base %d puts ports out of range", f.portBase)
	}
	var localities []string
	if f.localities != "" {
		for l := range strings.SplitSeq(f.localities, ";") {
			loc, err := rpctypes.ParseLocality(l)
			if err != nil || loc == nil {
				return fmt.Errorf("--localities: %q: want a locality such as region=eu,zone=a (%v)", l, err)
			}
			localities = append(localities, loc.String())
		}
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find kvd binary: %w", err)
	}
	var initial []string
	for i := 1; i <= f.nodes; i++ {
		_, _, raft := nodePorts(f.portBase, i)
		initial = append(initial, fmt.Sprintf("n%d=%s:%d", i, f.host, raft))
	}
	certDir := filepath.Join(f.dataDir, "certs")
	var httpClient *http.Client
	if f.tls {
		var ids []string
		for i := 1; i <= f.nodes; i++ {
			ids = append(ids, fmt.Sprintf("n%d", i))
		}
		if err := ensureCerts(certDir, ids); err != nil {
			return err
		}
		if httpClient, err = certHTTPClient(certDir); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var children []*child
	defer func() { stopChildren(children) }()
	var grpcEndpoints, httpEndpoints []string
	for i := 1; i <= f.nodes; i++ {
		id := fmt.Sprintf("n%d", i)
		g, h, r := nodePorts(f.portBase, i)
		dir := filepath.Join(f.dataDir, id)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		logPath := filepath.Join(dir, "kvd.log")
		if f.logDir != "" {
			if err := os.MkdirAll(f.logDir, 0o755); err != nil {
				return err
			}
			logPath = filepath.Join(f.logDir, id+".log")
		}
		logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		args := []string{"serve",
			"--id", id, "--data-dir", dir,
			"--grpc-addr", fmt.Sprintf("%s:%d", f.host, g),
			"--http-addr", fmt.Sprintf("%s:%d", f.host, h),
			"--raft-addr", fmt.Sprintf("%s:%d", f.host, r),
			"--initial-cluster", strings.Join(initial, ","),
			"--log-level", f.logLevel,
			"--hibernate-after", f.hibernateAfter.String()}
		if f.tls {
			args = append(args, nodeTLSArgs(certDir, id)...)
		}
		if len(localities) > 0 {
			args = append(args, "--locality", localities[(i-1)%len(localities)])
		}
		c := exec.Command(self, args...)
		c.Stdout, c.Stderr = logFile, logFile
		// A process group of its own: a Ctrl-C on the terminal reaches only
		// this parent, which then stops each node by PID. SIGTERM from the
		// kernel if the parent dies without stopping it (kill -9, a crash;
		// Linux only): no node outlives the cluster that started it, and
		// each still shuts down cleanly.
		p, err := harness.Start(c, harness.ProcOptions{DeathSignal: syscall.SIGTERM})
		logFile.Close()
		if err != nil {
			return fmt.Errorf("start %s: %w", id, err)
		}
		children = append(children, &child{id: id, proc: p, logPath: logPath})
		grpcEndpoints = append(grpcEndpoints, fmt.Sprintf("%s:%d", f.host, g))
		scheme := "http"
		if f.tls {
			scheme = "https"
		}
		httpEndpoints = append(httpEndpoints, fmt.Sprintf("%s://%s:%d", scheme, f.host, h))
		fmt.Printf("started %s (pid %d): grpc %s:%d  http %s:%d  raft %s:%d  log %s\n", id, p.PID(), f.host, g, f.host, h, f.host, r, logPath)
	}

	if err := waitReady(ctx, httpEndpoints, children, httpClient); err != nil {
		return err
	}
	eps := strings.Join(grpcEndpoints, ",")
	if f.tls {
		printTLSUsage(f, certDir, grpcEndpoints, httpEndpoints)
	} else {
		fmt.Printf(`
dialkv cluster of %d nodes is ready. Data under %s, logs %s. Press Ctrl-C to stop it.

Talk to it with kvctl (its default endpoints are this cluster's when --port-base is 7000):
  bin/kvctl --endpoints %s put greeting hello
  bin/kvctl get greeting
  bin/kvctl get greeting --consistency stale -w json
  bin/kvctl scan --prefix gr
  bin/kvctl cluster status -w table

or with curl:
  curl -X PUT --data-binary hello %s/v1/kv/greeting
  curl %s/v1/kv/greeting
  curl '%s/v1/kv/greeting?consistency=stale' -i
  curl '%s/v1/scan?prefix=gr'
  curl %s/metrics
`, f.nodes, f.dataDir, logsWhere(f), eps, httpEndpoints[0], httpEndpoints[0], httpEndpoints[len(httpEndpoints)-1], httpEndpoints[0], httpEndpoints[0])
	}

	// Stay in the foreground until interrupted; report nodes that exit.
	exited := make(chan *child, len(children))
	for _, c := range children {
		go func() {
			<-c.proc.Done()
			exited <- c
		}()
	}
	alive := len(children)
	for alive > 0 {
		select {
		case <-ctx.Done():
			fmt.Println("\nstopping the cluster...")
			return nil
		case c := <-exited:
			alive--
			fmt.Printf("%s exited unexpectedly (%v); see %s\n", c.id, c.proc.State(), c.logPath)
		}
	}
	return errors.New("every node has exited")
}

// logsWhere says where the nodes' logs are, for the start-up message.
func logsWhere(f clusterFlags) string {
	if f.logDir != "" {
		return "in " + filepath.Join(f.logDir, "nI.log")
	}
	return "in " + filepath.Join(f.dataDir, "nI", "kvd.log") + " (on the data filesystem; --log-dir puts them elsewhere)"
}

// waitReady polls each node's /readyz until all answer 200 or a node dies.
// client is nil for plaintext.
func waitReady(ctx context.Context, endpoints []string, children []*child, client *http.Client) error {
	const timeout = 60 * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if client == nil {
		client = &http.Client{Timeout: time.Second}
	}
	for i, ep := range endpoints {
		c := children[i]
		err := harness.Poll(ctx, timeout, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
			if done, err := c.proc.Exited(); done {
				return false, fmt.Errorf("%s exited during start-up (%v); see %s", c.id, err, c.logPath)
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep+"/readyz", nil)
			if err != nil {
				return false, err
			}
			resp, err := client.Do(req)
			if err != nil {
				return false, nil
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK, nil
		})
		if errors.Is(err, harness.ErrNotYet) {
			return fmt.Errorf("%s not ready: %w", c.id, cmp.Or(ctx.Err(), context.DeadlineExceeded))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// stopChildren sends SIGTERM to every node by PID and waits for them,
// escalating to SIGKILL after 10 s.
func stopChildren(children []*child) {
	var wg sync.WaitGroup
	for _, c := range children {
		if done, _ := c.proc.Exited(); done {
			continue
		}
		wg.Go(func() {
			if err := c.proc.Stop(stopGrace); err != nil && !errors.Is(err, harness.ErrKilled) {
				fmt.Printf("%s (pid %d) did not stop: %v\n", c.id, c.proc.PID(), err)
				return
			}
			fmt.Printf("stopped %s\n", c.id)
		})
	}
	wg.Wait()
}

// ensureCerts makes dir's CA, a certificate per node id and the client
// certificate root, keeping any that exist: a restarted cluster reuses
// them.
func ensureCerts(dir string, ids []string) error {
	if _, err := os.Stat(filepath.Join(dir, tlsconf.CAKeyFile)); errors.Is(err, os.ErrNotExist) {
		if err := createCA(dir); err != nil {
			return err
		}
	}
	ca, err := tlsconf.LoadCA(dir)
	if err != nil {
		return err
	}
	for _, name := range append(slices.Clone(ids), rootUser) {
		if _, err := os.Stat(filepath.Join(dir, name+".crt")); err == nil {
			continue
		}
		if err := writeLeaf(ca, dir, name, name != rootUser); err != nil {
			return err
		}
	}
	return nil
}

// rootUser is the client certificate `kvd cluster --tls` makes.
const rootUser = "root"

// nodeTLSArgs are a node's TLS flags: its certificate on both ports,
// client certificates required.
func nodeTLSArgs(dir, id string) []string {
	crt, key, ca := filepath.Join(dir, id+".crt"), filepath.Join(dir, id+".key"), filepath.Join(dir, tlsconf.CACertFile)
	return []string{
		"--cert-file", crt, "--key-file", key, "--trusted-ca-file", ca, "--client-cert-auth",
		"--peer-cert-file", crt, "--peer-key-file", key, "--peer-trusted-ca-file", ca,
	}
}

// certHTTPClient is an HTTPS client with dir's CA and root certificate.
func certHTTPClient(dir string) (*http.Client, error) {
	pem, err := os.ReadFile(filepath.Join(dir, tlsconf.CACertFile))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", filepath.Join(dir, tlsconf.CACertFile))
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, rootUser+".crt"), filepath.Join(dir, rootUser+".key"))
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}}
	return &http.Client{Timeout: time.Second, Transport: tr}, nil
}

func printTLSUsage(f clusterFlags, dir string, grpcEndpoints, httpEndpoints []string) {
	ca, crt, key := filepath.Join(dir, tlsconf.CACertFile), filepath.Join(dir, rootUser+".crt"), filepath.Join(dir, rootUser+".key")
	fmt.Printf(`
dialkv cluster of %d nodes is ready, with TLS on every link (mutual on the
client port too). Certificates in %s, data under %s, logs %s.
Press Ctrl-C to stop it.

kvctl (or export KVCTL_CACERT=%s KVCTL_CERT=%s KVCTL_KEY=%s):
  bin/kvctl --cacert %s --cert %s --key %s --endpoints %s put greeting hello
  bin/kvctl --cacert %s --cert %s --key %s --endpoints %s get greeting

curl:
  curl --cacert %s --cert %s --key %s -X PUT --data-binary hello %s/v1/kv/greeting
  curl --cacert %s --cert %s --key %s %s/v1/kv/greeting

grpcurl:
  grpcurl -cacert %s -cert %s -key %s %s list
`, f.nodes, dir, f.dataDir, logsWhere(f), ca, crt, key,
		ca, crt, key, strings.Join(grpcEndpoints, ","),
		ca, crt, key, strings.Join(grpcEndpoints, ","),
		ca, crt, key, httpEndpoints[0],
		ca, crt, key, httpEndpoints[0],
		ca, crt, key, grpcEndpoints[0])
}
