// Command etcdnode runs one etcd member in-process through etcd's embed
// package, so that a comparison cluster needs nothing but Go modules:
//
//	etcdnode -name e1 -data-dir /tmp/e1 \
//	  -client-url http://127.0.0.1:27111 -peer-url http://127.0.0.1:27112 \
//	  -initial-cluster e1=http://127.0.0.1:27112,e2=...,e3=...
//
// Durability is etcd's default: every WAL append is fsynced (the unsafe
// no-fsync mode is never set). SIGTERM or SIGINT stops the member cleanly.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// readyTimeout bounds the wait for the member to join its cluster.
const readyTimeout = 60 * time.Second

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "etcdnode:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("etcdnode", flag.ContinueOnError)
	var (
		name, dataDir, clientURL, peerURL string
		initialCluster, state, token      string
		logLevel                          string
		quota                             int64
	)
	fs.StringVar(&name, "name", "default", "member name")
	fs.StringVar(&dataDir, "data-dir", "", "data directory (required)")
	fs.StringVar(&clientURL, "client-url", "http://127.0.0.1:2379", "client URL, listened on and advertised")
	fs.StringVar(&peerURL, "peer-url", "http://127.0.0.1:2380", "peer URL, listened on and advertised")
	fs.StringVar(&initialCluster, "initial-cluster", "", "name=peer-url,... of the founding members (default: this member alone)")
	fs.StringVar(&state, "initial-cluster-state", "new", "new or existing")
	fs.StringVar(&token, "initial-cluster-token", "kvbench", "cluster token")
	fs.StringVar(&logLevel, "log-level", "warn", "debug, info, warn or error")
	fs.Int64Var(&quota, "quota-backend-bytes", 8<<30, "backend size quota")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		os.Exit(2)
	}
	if dataDir == "" {
		fmt.Fprintln(os.Stderr, "etcdnode: -data-dir is required")
		os.Exit(2)
	}
	cu, err := url.Parse(clientURL)
	if err != nil {
		return fmt.Errorf("-client-url: %w", err)
	}
	pu, err := url.Parse(peerURL)
	if err != nil {
		return fmt.Errorf("-peer-url: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = name, dataDir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	if initialCluster == "" {
		initialCluster = name + "=" + peerURL
	}
	cfg.InitialCluster, cfg.ClusterState, cfg.InitialClusterToken = initialCluster, state, token
	cfg.LogLevel = logLevel
	cfg.QuotaBackendBytes = quota
	if err := cfg.Validate(); err != nil {
		return err
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
		fmt.Printf("etcdnode %s ready: client %s peer %s\n", name, clientURL, peerURL)
	case err := <-e.Err():
		return err
	case sig := <-sigs:
		return fmt.Errorf("%v before the member was ready", sig)
	case <-time.After(readyTimeout):
		return fmt.Errorf("member not ready after %v", readyTimeout)
	}
	select {
	case err := <-e.Err():
		return err
	case sig := <-sigs:
		fmt.Printf("etcdnode %s: %v, stopping\n", name, sig)
		return nil
	}
}
