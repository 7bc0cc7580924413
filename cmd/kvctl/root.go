package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/dialkv/dialkv/internal/version"

	"github.com/spf13/cobra"

	"github.com/dialkv/dialkv/api/client"
	"github.com/dialkv/dialkv/api/rpctypes"
)

// defaultEndpoints are the gRPC ports of the `make run` cluster.
const defaultEndpoints = "127.0.0.1:7010,127.0.0.1:7020,127.0.0.1:7030"

// env is everything kvctl takes from its process, so tests can run the
// command tree in-process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// Terminal detection decides the trailing newline of get and the
	// import progress bar.
	stdoutTTY, stderrTTY bool
	getenv               func(string) string
}

// app is one invocation: its environment and global flags.
type app struct {
	env *env

	endpoints []string
	format    string
	timeout   time.Duration

	// TLS: on when cacert is set (flag or KVCTL_CACERT).
	cacert, cert, key string

	// Credentials: --user NAME[:PASSWORD], --password (KVCTL_USER,
	// KVCTL_PASSWORD); see auth.go.
	user, password string

	// locality is where kvctl runs (--locality, KVCTL_LOCALITY): weaker
	// reads go to the replica nearest it.
	locality string

	// entered is set once a command's RunE starts: errors before that come
	// from cobra's parsing and are usage errors.
	entered bool
}

// run executes kvctl with args and returns the exit code.
func run(ctx context.Context, args []string, e *env) int {
	a := &app{env: e}
	root := a.rootCmd()
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err != nil && !a.entered {
		// cobra's parse errors do not say which command they are about.
		if cmd != nil && cmd != root {
			err = fmt.Errorf("%s: %w (see '%s --help')", cmd.CommandPath(), err, cmd.CommandPath())
		}
		err = usageError{err}
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "Error: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
	}
	return exitCode(err)
}

const rootLong = `kvctl talks to a dialkv cluster over gRPC.

Endpoints come from --endpoints, else the KVCTL_ENDPOINTS environment
variable (comma-separated), else the local "make run" cluster. Any node will
do: kvctl fetches the cluster's routing table and sends each request to the
leader of its key's range, falls back to the endpoints, which forward
requests, and retries on another endpoint when a node is down or not the
leader. Weaker reads (--consistency bounded, session, stale) go to the
nearest replica instead: the one sharing the most leading tiers with
--locality (env KVCTL_LOCALITY, e.g. region=eu,zone=a), else the first
endpoint that holds one, so "kvctl --endpoints NODE get K --consistency
stale" is answered by NODE when it holds a replica. A write whose outcome
is unknown is never retried blindly; it fails with exit code 3 and should
be checked with a read.

TLS is on when --cacert (env KVCTL_CACERT) names the CA bundle that
verifies the nodes; --cert and --key (KVCTL_CERT, KVCTL_KEY) are the client
certificate a node started with --client-cert-auth requires.

Output (-w, --write-out):
  simple  get prints the raw value; scan prints KEY<TAB>VALUE lines with raw
          bytes (keys containing tabs or newlines, or values containing
          newlines, do not survive this format: use json); writes print OK;
          cluster status, member list, node list and range list print the
          same columns as table; range split prints "ID [START, END)" lines.
  json    one JSON object per result, one per line. Keys and values are JSON
          strings when they are valid UTF-8, otherwise objects
          {"base64": "..."} holding the standard base64 of the bytes.
          range list prints a single object {"ranges": [...]}.
  table   aligned columns with a header; bytes that are not printable UTF-8
          are shown Go-quoted.

Exit codes:
  0 ok, 1 error, 2 usage (bad flags, arguments or input),
  3 unavailable (no leader, unreachable, timed out, or write outcome unknown),
  4 not found, 5 compare failed,
  6 permission denied or unauthenticated (PERMISSION_DENIED, UNAUTHENTICATED).

With auth enabled, --user NAME[:PASSWORD] and --password (env KVCTL_USER,
KVCTL_PASSWORD) authenticate every command; a client certificate naming
the user (--cert) does too.`

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "kvctl",
		Short:         "Command-line client for dialkv",
		Long:          rootLong,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.String(),
	}
	root.SetVersionTemplate("kvctl {{.Version}}\n")
	root.SetIn(a.env.stdin)
	root.SetOut(a.env.stdout)
	root.SetErr(a.env.stderr)

	pf := root.PersistentFlags()
	pf.StringSliceVar(&a.endpoints, "endpoints", strings.Split(defaultEndpoints, ","),
		"comma-separated gRPC endpoints (host:port); env KVCTL_ENDPOINTS")
	pf.StringVarP(&a.format, "write-out", "w", "simple", "output format: simple, json or table")
	pf.DurationVar(&a.timeout, "timeout", 5*time.Second, "timeout of the command (for import: of each put)")
	pf.StringVar(&a.cacert, "cacert", "", "CA bundle to verify the nodes with; turns TLS on; env KVCTL_CACERT")
	pf.StringVar(&a.cert, "cert", "", "client certificate for nodes that require one; env KVCTL_CERT")
	pf.StringVar(&a.key, "key", "", "key of --cert; env KVCTL_KEY")
	pf.StringVar(&a.user, "user", "", "authenticate as NAME, or NAME:PASSWORD; env KVCTL_USER")
	pf.StringVar(&a.password, "password", "", "password of --user (prompted on a terminal when omitted); env KVCTL_PASSWORD")
	pf.StringVar(&a.locality, "locality", "", "where kvctl runs, as kvd --locality (region=eu,zone=a): weaker reads go to the nearest replica; env KVCTL_LOCALITY")

	root.AddCommand(a.putCmd(), a.getCmd(), a.delCmd(), a.casCmd(), a.scanCmd(), a.importCmd(), a.exportCmd(),
		a.clusterCmd(), a.memberCmd(), a.rangeCmd(), a.nodeCmd(), a.authCmd(), a.userCmd(), a.roleCmd(),
		a.watchCmd(), a.leaseCmd(), a.backupCmd(), a.txnCmd())
	return root
}

// runE wraps a command body: it records that parsing succeeded and checks
// the global flags every command shares.
func (a *app) runE(body func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		a.entered = true
		if _, err := parseFormat(a.format); err != nil {
			return err
		}
		if a.timeout <= 0 {
			return usagef("--timeout must be positive, got %v", a.timeout)
		}
		if !cmd.Flags().Changed("endpoints") {
			if v := strings.TrimSpace(a.env.getenv("KVCTL_ENDPOINTS")); v != "" {
				a.endpoints = strings.Split(v, ",")
			}
		}
		for _, e := range []struct {
			flag string
			to   *string
		}{{"cacert", &a.cacert}, {"cert", &a.cert}, {"key", &a.key}, {"user", &a.user}, {"password", &a.password}, {"locality", &a.locality}} {
			if !cmd.Flags().Changed(e.flag) {
				if v := strings.TrimSpace(a.env.getenv("KVCTL_" + strings.ToUpper(e.flag))); v != "" {
					*e.to = v
				}
			}
		}
		if _, err := rpctypes.ParseLocality(a.locality); err != nil {
			return usagef("--locality: %v", err)
		}
		return body(cmd, args)
	}
}

// groupCmd is a command that only holds subcommands. It is runnable so that
// an unknown subcommand is a usage error instead of silent help.
func (a *app) groupCmd(use, short string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		}),
	}
	cmd.AddCommand(subs...)
	return cmd
}

// client connects to the endpoints. Invalid endpoints are a usage error.
func (a *app) client() (*client.Client, error) {
	tc, err := a.tlsConfig()
	if err != nil {
		return nil, err
	}
	cfg := client.Config{Endpoints: a.endpoints, TLS: tc, Locality: a.locality}
	if cfg.Username, cfg.Password, err = a.credentials(); err != nil {
		return nil, err
	}
	c, err := client.New(cfg)
	if err != nil {
		return nil, usageError{fmt.Errorf("--endpoints: %w", err)}
	}
	return c, nil
}

// withClient runs fn with a connected client and the command's deadline.
func (a *app) withClient(cmd *cobra.Command, fn func(ctx context.Context, c *client.Client) error) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), a.timeout)
	defer cancel()
	return fn(ctx, c)
}

func (a *app) out() format {
	f, _ := parseFormat(a.format) // validated in runE
	return f
}

// tlsConfig is the TLS configuration of --cacert, --cert and --key, or nil
// (plaintext) without --cacert. Bad flags or files are usage errors.
func (a *app) tlsConfig() (*tls.Config, error) {
	if (a.cert == "") != (a.key == "") {
		return nil, usagef("--cert and --key go together")
	}
	if a.cacert == "" {
		if a.cert != "" {
			return nil, usagef("--cert needs --cacert (TLS is on when --cacert is given)")
		}
		return nil, nil
	}
	pem, err := os.ReadFile(a.cacert)
	if err != nil {
		return nil, usagef("--cacert: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, usagef("--cacert %s holds no PEM certificate", a.cacert)
	}
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if a.cert != "" {
		pair, err := tls.LoadX509KeyPair(a.cert, a.key)
		if err != nil {
			return nil, usagef("--cert/--key: %v", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}
