package tlsconf

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Default lifetimes of what NewCA and the Issue methods make when a
// Lifetime is zero. Back-dated a little so a peer whose clock is slightly
// behind still accepts a certificate made just now.
const (
	DefaultCALifetime   = 10 * 365 * 24 * time.Hour
	DefaultLeafLifetime = 2 * 365 * 24 * time.Hour
	backdate            = 5 * time.Minute
)

// File names under a certificate directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// Lifetime bounds a certificate's validity; a zero field takes the default
// (now minus a few minutes; now plus the kind's default lifetime).
type Lifetime struct {
	NotBefore, NotAfter time.Time
}

func (l Lifetime) resolve(def time.Duration) (time.Time, time.Time) {
	now := time.Now()
	nb, na := l.NotBefore, l.NotAfter
	if nb.IsZero() {
		nb = now.Add(-backdate)
	}
	if na.IsZero() {
		na = now.Add(def)
	}
	return nb, na
}

// CA is a certificate authority that signs node and client certificates.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Pair is a PEM certificate and its PEM private key.
type Pair struct {
	CertPEM, KeyPEM []byte
}

// NewCA makes a self-signed ECDSA P-256 CA.
func NewCA(name string, life Lifetime) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: CA key: %w", err)
	}
	nb, na := life.resolve(DefaultCALifetime)
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"dialkv"}},
		NotBefore:             nb,
		NotAfter:              na,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCA reads dir/ca.crt and dir/ca.key.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("tlsconf: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("tlsconf: %w", err)
	}
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("tlsconf: %s holds no PEM certificate", filepath.Join(dir, CACertFile))
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: %s: %w", filepath.Join(dir, CACertFile), err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, fmt.Errorf("tlsconf: %s holds no PEM key", filepath.Join(dir, CAKeyFile))
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: %s: %w", filepath.Join(dir, CAKeyFile), err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("tlsconf: %s is not a signing key", filepath.Join(dir, CAKeyFile))
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("tlsconf: %s is not a CA certificate", filepath.Join(dir, CACertFile))
	}
	return &CA{Cert: cert, Key: signer}, nil
}

// Pair returns the CA's certificate and key in PEM.
func (ca *CA) Pair() (Pair, error) {
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return Pair{}, fmt.Errorf("tlsconf: CA key: %w", err)
	}
	return Pair{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// IssueNode makes the certificate of node id: URI SAN dialkv://node/<id>,
// DNS localhost and IP 127.0.0.1, usable as server and as client.
func (ca *CA) IssueNode(id string, life Lifetime) (Pair, error) {
	if err := checkName(id); err != nil {
		return Pair{}, err
	}
	return ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: id, Organization: []string{"dialkv node"}},
		URIs:        []*url.URL{nodeURI(id)},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, life)
}

// IssueClient makes the client certificate of user name: CN name and URI
// SAN dialkv://user/<name>.
func (ca *CA) IssueClient(name string, life Lifetime) (Pair, error) {
	if err := checkName(name); err != nil {
		return Pair{}, err
	}
	return ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: name},
		URIs:        []*url.URL{userURI(name)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, life)
}

func checkName(name string) error {
	if name == "" || strings.ContainsAny(name, "/\\?#%=, \t\n") || name == "." || name == ".." {
		return fmt.Errorf("tlsconf: name %q must be non-empty and free of '/', '\\', '?', '#', '%%', '=', ',' and spaces", name)
	}
	if name == strings.TrimSuffix(CACertFile, ".crt") {
		return errors.New(`tlsconf: "ca" is the CA's own file name`)
	}
	return nil
}

func (ca *CA) issue(tmpl *x509.Certificate, life Lifetime) (Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Pair{}, fmt.Errorf("tlsconf: key: %w", err)
	}
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return Pair{}, err
	}
	tmpl.NotBefore, tmpl.NotAfter = life.resolve(DefaultLeafLifetime)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return Pair{}, fmt.Errorf("tlsconf: certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Pair{}, fmt.Errorf("tlsconf: key: %w", err)
	}
	return Pair{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("tlsconf: serial number: %w", err)
	}
	return n, nil
}

// Write writes dir/name.crt and dir/name.key (mode 0600), each through a
// rename so that a Source reloading them never reads half a file. The key
// is written first: a reader that sees the new certificate sees its key.
func (p Pair) Write(dir, name string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("tlsconf: %w", err)
	}
	if err := writeAtomic(filepath.Join(dir, name+".key"), p.KeyPEM, 0o600); err != nil {
		return err
	}
	return writeAtomic(filepath.Join(dir, name+".crt"), p.CertPEM, 0o644)
}

func writeAtomic(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return fmt.Errorf("tlsconf: %w", err)
	}
	// WriteFile keeps the mode of a file that already exists.
	if err := os.Chmod(tmp, mode); err != nil {
		return fmt.Errorf("tlsconf: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("tlsconf: %w", err)
	}
	return nil
}
