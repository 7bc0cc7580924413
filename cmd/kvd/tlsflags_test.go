package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/dialkv/dialkv/internal/tlsconf"
)

// Flags that do not go together fail at start with a message naming the
// flag, before any port is claimed.
func TestTLSFlags_Load(t *testing.T) {
	dir := t.TempDir()
	if err := createCA(dir); err != nil {
		t.Fatal(err)
	}
	ca, err := tlsconf.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeLeaf(ca, dir, "n1", true); err != nil {
		t.Fatal(err)
	}
	crt, key, caf := filepath.Join(dir, "n1.crt"), filepath.Join(dir, "n1.key"), filepath.Join(dir, "ca.crt")
	for _, tc := range []struct {
		name    string
		f       tlsFlags
		joining bool
		wantErr string // empty: loads
	}{
		{"none", tlsFlags{}, false, ""},
		{"all", tlsFlags{crt, key, caf, true, crt, key, caf}, true, ""},
		{"client port without client auth", tlsFlags{certFile: crt, keyFile: key}, false, ""},
		{"cert without key", tlsFlags{certFile: crt}, false, "--cert-file needs --key-file"},
		{"key without cert", tlsFlags{keyFile: key}, false, "--key-file needs --cert-file"},
		{"client auth without CA", tlsFlags{certFile: crt, keyFile: key, clientCertAuth: true}, false, "--client-cert-auth needs --trusted-ca-file"},
		{"trusted CA without cert", tlsFlags{trustedCAFile: caf}, false, "--trusted-ca-file needs --cert-file"},
		{"peer cert without key", tlsFlags{peerCertFile: crt, peerTrustedCAFile: caf}, false, "--peer-cert-file needs --peer-key-file"},
		{"peer cert without CA", tlsFlags{peerCertFile: crt, peerKeyFile: key}, false, "--peer-cert-file needs --peer-trusted-ca-file"},
		{"peer CA without cert", tlsFlags{peerTrustedCAFile: caf}, false, "--peer-trusted-ca-file needs --peer-cert-file"},
		{"join over TLS with no CA", tlsFlags{certFile: crt, keyFile: key}, true, "--join with TLS"},
		{"missing file", tlsFlags{certFile: crt + ".nope", keyFile: key}, false, "--cert-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.f.load(tc.joining, nil)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
