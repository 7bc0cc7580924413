package jepsen

// TLS and auth for a run (Options.TLS, Config.TLS, `make jepsen TLS=1`):
// a CA and certificates made in the nodes' folder, every kvd with mutual
// TLS on its client and peer ports, every harness connection over TLS, and
// auth turned on with two users: root (the nemesis, the harness and the
// final reads) and the workload's user, identified by their client
// certificates.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/internal/tlsconf"
)

// Users and the role of a run with TLS. RootUser is the auth package's
// root; WorkloadUser is who every client operation runs as, through
// WorkloadRole (readwrite on the workload's key spaces).
const (
	RootUser     = "root"
	WorkloadUser = "jepsen"
	WorkloadRole = "rw"
)

// workloadPrefixes are the key spaces WorkloadRole grants readwrite on.
var workloadPrefixes = []string{RegisterPrefix, ListPrefix, SetPrefix, WatchPrefix, LeasePrefix, BankPrefix, AppendPrefix}

// CertDir is where Start writes the CA and certificates when Options.TLS
// is set: Dir/certs (ca.crt, n<i>.crt and .key, root.crt and .key,
// jepsen.crt and .key).
func (o *Options) CertDir() string { return filepath.Join(o.Dir, "certs") }

// makeCerts writes a fresh CA, a node certificate per node and the client
// certificates of RootUser and WorkloadUser into dir.
func makeCerts(dir string, nodes int) error {
	ca, err := tlsconf.NewCA("dialkv jepsen CA", tlsconf.Lifetime{})
	if err != nil {
		return fmt.Errorf("jepsen: %w", err)
	}
	p, err := ca.Pair()
	if err != nil {
		return fmt.Errorf("jepsen: %w", err)
	}
	if err := p.Write(dir, "ca"); err != nil {
		return fmt.Errorf("jepsen: %w", err)
	}
	for i := range nodes {
		if p, err = ca.IssueNode(nodeID(i), tlsconf.Lifetime{}); err == nil {
			err = p.Write(dir, nodeID(i))
		}
		if err != nil {
			return fmt.Errorf("jepsen: certificate of %s: %w", nodeID(i), err)
		}
	}
	for _, u := range []string{RootUser, WorkloadUser} {
		if p, err = ca.IssueClient(u, tlsconf.Lifetime{}); err == nil {
			err = p.Write(dir, u)
		}
		if err != nil {
			return fmt.Errorf("jepsen: certificate of %s: %w", u, err)
		}
	}
	return nil
}

// tlsArgs are node id's TLS flags (none without TLS): its certificate on
// both ports, client certificates required on the client port.
func (o *Options) tlsArgs(id string) []string {
	if !o.TLS {
		return nil
	}
	dir := o.CertDir()
	crt, key, ca := filepath.Join(dir, id+".crt"), filepath.Join(dir, id+".key"), filepath.Join(dir, tlsconf.CACertFile)
	return []string{
		"--cert-file", crt, "--key-file", key, "--trusted-ca-file", ca, "--client-cert-auth",
		"--peer-cert-file", crt, "--peer-key-file", key, "--peer-trusted-ca-file", ca,
	}
}

// clientTLS is the TLS configuration of a client presenting user's
// certificate, nil without TLS. Servers are verified against the run's CA
// (node certificates name 127.0.0.1).
func (o *Options) clientTLS(user string) (*tls.Config, error) {
	if !o.TLS {
		return nil, nil
	}
	dir := o.CertDir()
	pem, err := os.ReadFile(filepath.Join(dir, tlsconf.CACertFile))
	if err != nil {
		return nil, fmt.Errorf("jepsen: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("jepsen: %s holds no PEM certificate", filepath.Join(dir, tlsconf.CACertFile))
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, user+".crt"), filepath.Join(dir, user+".key"))
	if err != nil {
		return nil, fmt.Errorf("jepsen: certificate of %s: %w", user, err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// harnessClient is the HTTP client of the harness's own requests
// (/readyz, status): as RootUser over TLS when the run has it.
func (o *Options) harnessClient() (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tc, err := o.clientTLS(RootUser)
	if err != nil {
		return nil, err
	}
	tr.TLSClientConfig = tc
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}

// scheme is the nodes' HTTP scheme.
func (o *Options) scheme() string {
	if o.TLS {
		return "https"
	}
	return "http"
}

// TLS reports whether the cluster runs with TLS on every link.
func (c *Cluster) TLS() bool { return c.opts.TLS }

// expandNemeses is ExpandNemeses for a run with or without TLS:
// auth-revoke needs auth, hence TLS; with TLS, all includes it.
func expandNemeses(list []string, withTLS bool) (kinds, notes []string, err error) {
	kinds, notes, err = ExpandNemeses(list)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case !withTLS && slices.Contains(kinds, NemAuthRevoke):
		kinds = slices.DeleteFunc(kinds, func(k string) bool { return k == NemAuthRevoke })
		notes = append(notes, NemAuthRevoke+" skipped: it needs auth, which needs TLS (--tls)")
	case withTLS && slices.Contains(list, NemAll) && !slices.Contains(kinds, NemAuthRevoke):
		kinds = append(kinds, NemAuthRevoke)
	}
	return kinds, notes, nil
}

// authSetupAttempts bounds the tries of one auth mutation at the start.
const authSetupAttempts = 5

// authStep is one auth mutation; already is the code a retry gets when
// an earlier, unanswered try was applied after all (alreadyFirst: a first
// try too, when the change may have been there before).
type authStep struct {
	what         string
	already      codes.Code
	call         func(ctx context.Context, a kvpb.AuthClient) error
	alreadyFirst bool
}

// setupAuth, on a cluster with TLS, creates RootUser and WorkloadUser
// (both identified by their client certificates), WorkloadRole with
// readwrite on the workload's prefixes, turns auth on, and returns
// connections as WorkloadUser for the clients; admin are the connections
// as RootUser. Without TLS it returns admin.
func setupAuth(ctx context.Context, c *Cluster, admin *Conns, logf func(string, ...any)) (*Conns, error) {
	if !c.TLS() {
		return admin, nil
	}
	addUser := func(name string) authStep {
		return authStep{what: "add user " + name, already: codes.AlreadyExists, call: func(ctx context.Context, a kvpb.AuthClient) error {
			_, err := a.UserAdd(ctx, &kvpb.UserAddRequest{Name: name})
			return err
		}}
	}
	steps := []authStep{
		addUser(RootUser),
		grantRole(RootUser, "root"),
		addUser(WorkloadUser),
		{what: "add role " + WorkloadRole, already: codes.AlreadyExists, call: func(ctx context.Context, a kvpb.AuthClient) error {
			_, err := a.RoleAdd(ctx, &kvpb.RoleAddRequest{Name: WorkloadRole})
			return err
		}},
	}
	for _, p := range workloadPrefixes {
		steps = append(steps, authStep{what: "grant readwrite on prefix " + p + " to " + WorkloadRole, call: func(ctx context.Context, a kvpb.AuthClient) error {
			_, err := a.RoleGrantPermission(ctx, &kvpb.RoleGrantPermissionRequest{Role: WorkloadRole, Permission: &kvpb.Permission{
				Access: kvpb.Permission_READWRITE, Key: []byte(p), Prefix: true,
			}})
			return err
		}})
	}
	steps = append(steps, grantRole(WorkloadUser, WorkloadRole), authStep{what: "enable auth", call: func(ctx context.Context, a kvpb.AuthClient) error {
		_, err := a.AuthEnable(ctx, &kvpb.AuthEnableRequest{})
		return err
	}})
	for _, s := range steps {
		if err := authCall(ctx, admin, authSetupAttempts, s); err != nil {
			return nil, fmt.Errorf("jepsen: auth setup: %w", err)
		}
	}
	wcs, err := dialCluster(c, WorkloadUser)
	if err != nil {
		return nil, err
	}
	logf("jepsen: TLS on every link; auth enabled: users %s and %s (role %s: readwrite on prefixes %v), both by client certificate", RootUser, WorkloadUser, WorkloadRole, workloadPrefixes)
	return wcs, nil
}

func grantRole(user, role string) authStep {
	return authStep{what: "grant role " + role + " to " + user, already: codes.AlreadyExists, call: func(ctx context.Context, a kvpb.AuthClient) error {
		_, err := a.UserGrantRole(ctx, &kvpb.UserGrantRoleRequest{User: user, Role: role})
		return err
	}}
}

// revokeRole sets *bound to the revocation bound the server answers with
// (left alone when a retry finds the role already revoked).
func revokeRole(user, role string, bound *time.Duration) authStep {
	return authStep{what: "revoke role " + role + " from " + user, already: codes.NotFound, call: func(ctx context.Context, a kvpb.AuthClient) error {
		resp, err := a.UserRevokeRole(ctx, &kvpb.UserRevokeRoleRequest{User: user, Role: role})
		if err == nil {
			*bound = time.Duration(resp.GetResult().GetRevocationBoundSeconds()) * time.Second
		}
		return err
	}}
}

// authCall runs s through the nodes in turn, at most attempts times, and
// returns once it was acknowledged. A retry refused with s.already (the
// earlier try was applied after all) counts as acknowledged then.
func authCall(ctx context.Context, cs *Conns, attempts int, s authStep) error {
	var last error
	for a := range attempts {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := s.call(cctx, kvpb.NewAuthClient(cs.grpc[a%len(cs.grpc)]))
		cancel()
		if err == nil || ((a > 0 || s.alreadyFirst) && s.already != codes.OK && status.Code(err) == s.already) {
			return nil
		}
		last = fmt.Errorf("%s via %s: %w", s.what, cs.ids[a%len(cs.ids)], err)
		select {
		case <-ctx.Done():
			return errors.Join(last, ctx.Err())
		case <-time.After(300 * time.Millisecond):
		}
	}
	return last
}
