package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialkv/dialkv/harness"
)

// fixture is a directory with two CAs (ca and other), and certificates of
// each kind signed by the first unless named otherwise.
type fixture struct {
	dir       string
	ca, other *CA
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir()}
	var err error
	if f.ca, err = NewCA("test CA", Lifetime{}); err != nil {
		t.Fatal(err)
	}
	if f.other, err = NewCA("other CA", Lifetime{}); err != nil {
		t.Fatal(err)
	}
	f.writeCA(t, "ca", f.ca)
	f.writeCA(t, "other", f.other)
	expired := Lifetime{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}
	for _, c := range []struct {
		name string
		ca   *CA
		node bool
		life Lifetime
	}{
		{"n1", f.ca, true, Lifetime{}},
		{"n2", f.ca, true, Lifetime{}},
		{"n9", f.ca, true, Lifetime{}},
		{"root", f.ca, false, Lifetime{}},
		{"n1-other", f.other, true, Lifetime{}},
		{"root-other", f.other, false, Lifetime{}},
		{"root-expired", f.ca, false, expired},
		{"n2-expired", f.ca, true, expired},
	} {
		var p Pair
		var err error
		id := c.name
		if i := len(id); i > 0 {
			for _, suffix := range []string{"-other", "-expired"} {
				if len(id) > len(suffix) && id[len(id)-len(suffix):] == suffix {
					id = id[:len(id)-len(suffix)]
				}
			}
		}
		if c.node {
			p, err = c.ca.IssueNode(id, c.life)
		} else {
			p, err = c.ca.IssueClient(id, c.life)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Write(f.dir, c.name); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *fixture) writeCA(t *testing.T, name string, ca *CA) {
	t.Helper()
	p, err := ca.Pair()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Write(f.dir, name); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) path(name string) string { return filepath.Join(f.dir, name) }

// source loads name.crt/name.key (name may be empty) with CA file ca.crt
// or another (empty: none).
func (f *fixture) source(t *testing.T, name, ca string) *Source {
	t.Helper()
	files := Files{}
	if name != "" {
		files.Cert, files.Key = f.path(name+".crt"), f.path(name+".key")
	}
	if ca != "" {
		files.CA = f.path(ca + ".crt")
	}
	s, err := Load(files, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// handshake runs a TLS handshake between the two configs and one byte from
// server to client, and returns what either side saw go wrong.
func handshake(t *testing.T, server, client *tls.Config) error {
	t.Helper()
	ln, err := harness.ListenLocal()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	deadline := time.Now().Add(5 * time.Second)
	serr := make(chan error, 1)
	go func() {
		a, err := ln.Accept()
		if err != nil {
			serr <- err
			return
		}
		a.SetDeadline(deadline)
		sc := tls.Server(a, server)
		defer sc.Close()
		if err := sc.Handshake(); err != nil {
			serr <- err
			return
		}
		_, err = sc.Write([]byte{1})
		serr <- err
	}()
	b, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	b.SetDeadline(deadline)
	cc := tls.Client(b, client)
	defer cc.Close()
	cerr := cc.Handshake()
	if cerr == nil {
		var one [1]byte
		_, cerr = cc.Read(one[:])
	}
	cc.Close()
	return errors.Join(<-serr, cerr)
}

// mustConfig(t)(XConfig(...)) fails t on XConfig's error.
func mustConfig(t *testing.T) func(*tls.Config, error) *tls.Config {
	return func(c *tls.Config, err error) *tls.Config {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
}

func TestClientPort_Handshakes(t *testing.T) {
	f := newFixture(t)
	serverSrc := f.source(t, "n1", "ca")
	for _, tc := range []struct {
		name       string
		clientAuth bool
		cert, ca   string // client's certificate and CA
		host       string
		ok         bool
	}{
		{"user cert of the trusted CA", true, "root", "ca", "127.0.0.1", true},
		{"node cert as a client", true, "n2", "ca", "localhost", true},
		{"no client cert with client auth", true, "", "ca", "127.0.0.1", false},
		{"no client cert without client auth", false, "", "ca", "127.0.0.1", true},
		{"client cert of another CA", true, "root-other", "ca", "127.0.0.1", false},
		{"client cert of another CA, given though not required", false, "root-other", "ca", "127.0.0.1", false},
		{"expired client cert", true, "root-expired", "ca", "127.0.0.1", false},
		{"client trusts another CA", true, "root", "other", "127.0.0.1", false},
		{"server cert does not name the host", true, "root", "ca", "db.example.com", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server := mustConfig(t)(ServerConfig(serverSrc, tc.clientAuth))
			client := mustConfig(t)(ClientConfig(f.source(t, tc.cert, tc.ca), tc.host))
			err := handshake(t, server, client)
			if (err == nil) != tc.ok {
				t.Fatalf("handshake error %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestPeerPort_Handshakes(t *testing.T) {
	f := newFixture(t)
	members := map[string]bool{"n1": true, "n2": true}
	allow := func(id string) error {
		if !members[id] {
			return errors.New("not a member: " + id)
		}
		return nil
	}
	for _, tc := range []struct {
		name           string
		server, client string // certificate names, both with ca.crt
		clientCA       string
		ok             bool
	}{
		{"member to member", "n1", "n2", "ca", true},
		{"node cert naming an unknown node", "n1", "n9", "ca", false},
		{"client (user) cert on the peer port", "n1", "root", "ca", false},
		{"node cert of another CA", "n1", "n1-other", "other", false},
		{"expired node cert", "n1", "n2-expired", "ca", false},
		{"server presents a user cert", "root", "n2", "ca", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var server, client *tls.Config
			if tc.server == "root" {
				// A user certificate cannot serve TLS (no server usage);
				// a plain server config shows the dialler refuses it.
				server = mustConfig(t)(ServerConfig(f.source(t, tc.server, "ca"), true))
			} else {
				server = mustConfig(t)(PeerServerConfig(f.source(t, tc.server, "ca"), allow))
			}
			if tc.client == "root" {
				client = mustConfig(t)(ClientConfig(f.source(t, tc.client, tc.clientCA), "127.0.0.1"))
			} else {
				client = mustConfig(t)(PeerClientConfig(f.source(t, tc.client, tc.clientCA)))
			}
			err := handshake(t, server, client)
			if (err == nil) != tc.ok {
				t.Fatalf("handshake error %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// fakeClock lets a test pass the once-a-second reload throttle without
// waiting for it.
// It stands still unless advanced.
type fakeClock struct {
	base   time.Time
	offset atomic.Int64
}

func (c *fakeClock) now() time.Time          { return c.base.Add(time.Duration(c.offset.Load())) }
func (c *fakeClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// copyFile replaces dst by src's content through a rename, as a rotation
// tool would, and moves its modification time on so a coarse file system
// clock cannot hide the change.
func copyFile(t *testing.T, src, dst string, mod time.Time) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeAtomic(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(dst, mod, mod); err != nil {
		t.Fatal(err)
	}
}

// Rotating the CA bundle on the server's side takes effect without a
// restart: once the file changed (and the throttle passed), clients of the
// new CA are accepted and those of the old one refused.
func TestReload_CARotation(t *testing.T) {
	f := newFixture(t)
	live := filepath.Join(f.dir, "live")
	os.MkdirAll(live, 0o755)
	copyFile(t, f.path("n1.crt"), filepath.Join(live, "n1.crt"), time.Now())
	copyFile(t, f.path("n1.key"), filepath.Join(live, "n1.key"), time.Now())
	copyFile(t, f.path("ca.crt"), filepath.Join(live, "ca.crt"), time.Now())
	clk := &fakeClock{base: time.Now()}
	src, err := load(Files{Cert: filepath.Join(live, "n1.crt"), Key: filepath.Join(live, "n1.key"), CA: filepath.Join(live, "ca.crt")}, nil, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	server := mustConfig(t)(ServerConfig(src, true))
	oldClient := mustConfig(t)(ClientConfig(f.source(t, "root", "ca"), "127.0.0.1"))
	// The new CA's client still trusts the server's (old CA) certificate:
	// only the server's trust in clients rotates here.
	newClient := mustConfig(t)(ClientConfig(f.source(t, "root-other", "ca"), "127.0.0.1"))

	steps := []struct {
		name         string
		do           func()
		oldOK, newOK bool
	}{
		{"before rotation", func() {}, true, false},
		{"file replaced, within the throttle", func() {
			copyFile(t, f.path("other.crt"), filepath.Join(live, "ca.crt"), time.Now().Add(time.Minute))
		}, true, false},
		{"a second later", func() { clk.advance(1100 * time.Millisecond) }, false, true},
		{"a broken file keeps the last good CA", func() {
			os.WriteFile(filepath.Join(live, "ca.crt"), []byte("not PEM"), 0o644)
			clk.advance(1100 * time.Millisecond)
		}, false, true},
	}
	for _, st := range steps {
		st.do()
		if err := handshake(t, server, oldClient); (err == nil) != st.oldOK {
			t.Errorf("%s: old CA's client: error %v, want ok=%v", st.name, err, st.oldOK)
		}
		if err := handshake(t, server, newClient); (err == nil) != st.newOK {
			t.Errorf("%s: new CA's client: error %v, want ok=%v", st.name, err, st.newOK)
		}
	}
}

// A rotated certificate and key are served from the next handshake after
// the throttle, without a restart.
func TestReload_CertRotation(t *testing.T) {
	f := newFixture(t)
	live := filepath.Join(f.dir, "live")
	os.MkdirAll(live, 0o755)
	copyFile(t, f.path("n1.crt"), filepath.Join(live, "srv.crt"), time.Now())
	copyFile(t, f.path("n1.key"), filepath.Join(live, "srv.key"), time.Now())
	clk := &fakeClock{base: time.Now()}
	src, err := load(Files{Cert: filepath.Join(live, "srv.crt"), Key: filepath.Join(live, "srv.key"), CA: f.path("ca.crt")}, nil, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	server := mustConfig(t)(PeerServerConfig(src, func(string) error { return nil }))
	served := func() string {
		t.Helper()
		var id string
		client := mustConfig(t)(PeerClientConfig(f.source(t, "n2", "ca")))
		client.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			c, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			id, err = NodeIDFromCert(c)
			return err
		}
		if err := handshake(t, server, client); err != nil {
			t.Fatal(err)
		}
		return id
	}
	if got := served(); got != "n1" {
		t.Fatalf("served %q before rotation, want n1", got)
	}
	later := time.Now().Add(time.Minute)
	copyFile(t, f.path("n9.key"), filepath.Join(live, "srv.key"), later)
	copyFile(t, f.path("n9.crt"), filepath.Join(live, "srv.crt"), later)
	clk.advance(1100 * time.Millisecond)
	if got := served(); got != "n9" {
		t.Fatalf("served %q after rotation, want n9", got)
	}
}

func TestNodeIDFromCert(t *testing.T) {
	for _, tc := range []struct {
		name string
		uris []string
		want string
		ok   bool
	}{
		{"node", []string{"dialkv://node/n1"}, "n1", true},
		{"node among others", []string{"spiffe://x/y", "dialkv://node/n2"}, "n2", true},
		{"user", []string{"dialkv://user/root"}, "", false},
		{"none", nil, "", false},
		{"empty id", []string{"dialkv://node/"}, "", false},
		{"nested path", []string{"dialkv://node/a/b"}, "", false},
		{"other scheme", []string{"https://node/n1"}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &x509.Certificate{}
			for _, s := range tc.uris {
				u, err := url.Parse(s)
				if err != nil {
					t.Fatal(err)
				}
				c.URIs = append(c.URIs, u)
			}
			got, err := NodeIDFromCert(c)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("got %q, %v; want %q ok=%v", got, err, tc.want, tc.ok)
			}
		})
	}
}

// The issued certificates carry what the rest of dialkv relies on.
func TestIssue_Contents(t *testing.T) {
	f := newFixture(t)
	parse := func(name string) *x509.Certificate {
		b, err := os.ReadFile(f.path(name + ".crt"))
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	node := parse("n1")
	if id, err := NodeIDFromCert(node); err != nil || id != "n1" {
		t.Errorf("node id %q, %v", id, err)
	}
	if err := node.VerifyHostname("localhost"); err != nil {
		t.Error(err)
	}
	if err := node.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	user := parse("root")
	if user.Subject.CommonName != "root" || len(user.URIs) != 1 || user.URIs[0].String() != "dialkv://user/root" {
		t.Errorf("user cert CN %q URIs %v", user.Subject.CommonName, user.URIs)
	}
	for _, name := range []string{"ca.key", "n1.key", "root.key"} {
		fi, err := os.Stat(f.path(name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
	if _, err := LoadCA(f.dir); err != nil {
		t.Errorf("LoadCA: %v", err)
	}
	if _, err := f.ca.IssueNode("a/b", Lifetime{}); err == nil {
		t.Error("a node id with a slash was accepted")
	}
}

func TestLoad_Errors(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name  string
		files Files
	}{
		{"cert without key", Files{Cert: f.path("n1.crt"), CA: f.path("ca.crt")}},
		{"key without cert", Files{Key: f.path("n1.key")}},
		{"nothing", Files{}},
		{"missing file", Files{CA: f.path("nope.crt")}},
		{"key of another cert", Files{Cert: f.path("n1.crt"), Key: f.path("n2.key")}},
		{"CA file not PEM", Files{CA: f.path("n1.key.missing")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Load(tc.files, nil); err == nil {
				t.Fatal("loaded")
			}
		})
	}
}
