package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// reloadEvery bounds how often a Source looks at its files: at most once a
// second, on the next handshake after that.
const reloadEvery = time.Second

// Files names what a Source reads. Cert and Key go together; CA may be
// given alone (a client that only verifies) or left out (a server that asks
// for no client certificate).
type Files struct {
	Cert, Key, CA string
}

// Source holds a certificate, its key and a CA pool read from Files, and
// re-reads them when a file's modification time or size changed. A reload
// that fails (a half-written file, a key that does not match the new
// certificate yet) keeps the previous material and is tried again later,
// so a rotation in several steps never breaks handshakes.
type Source struct {
	files Files
	log   *slog.Logger
	now   func() time.Time

	mu      sync.Mutex
	checked time.Time
	stamps  [3]stamp
	cert    *tls.Certificate
	pool    *x509.CertPool
}

type stamp struct {
	mod  time.Time
	size int64
}

// Load reads f. Errors name the file at fault.
func Load(f Files, log *slog.Logger) (*Source, error) { return load(f, log, time.Now) }

func load(f Files, log *slog.Logger, now func() time.Time) (*Source, error) {
	if (f.Cert == "") != (f.Key == "") {
		return nil, errors.New("tlsconf: a certificate file needs its key file and a key file its certificate file")
	}
	if f.Cert == "" && f.CA == "" {
		return nil, errors.New("tlsconf: no certificate and no CA file given")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Source{files: f, log: log, now: now}
	stamps, err := s.stat()
	if err != nil {
		return nil, err
	}
	if err := s.load(stamps); err != nil {
		return nil, err
	}
	s.checked = s.now()
	return s, nil
}

func (s *Source) paths() [3]string { return [3]string{s.files.Cert, s.files.Key, s.files.CA} }

func (s *Source) stat() ([3]stamp, error) {
	var out [3]stamp
	for i, p := range s.paths() {
		if p == "" {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return out, fmt.Errorf("tlsconf: %w", err)
		}
		out[i] = stamp{mod: fi.ModTime(), size: fi.Size()}
	}
	return out, nil
}

// load reads every file and installs the result; s.mu is held or s is not
// shared yet.
func (s *Source) load(stamps [3]stamp) error {
	var cert *tls.Certificate
	if s.files.Cert != "" {
		certPEM, err := os.ReadFile(s.files.Cert)
		if err != nil {
			return fmt.Errorf("tlsconf: %w", err)
		}
		keyPEM, err := os.ReadFile(s.files.Key)
		if err != nil {
			return fmt.Errorf("tlsconf: %w", err)
		}
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return fmt.Errorf("tlsconf: certificate %s with key %s: %w", s.files.Cert, s.files.Key, err)
		}
		cert = &c
	}
	var pool *x509.CertPool
	if s.files.CA != "" {
		caPEM, err := os.ReadFile(s.files.CA)
		if err != nil {
			return fmt.Errorf("tlsconf: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return fmt.Errorf("tlsconf: CA file %s holds no PEM certificate", s.files.CA)
		}
	}
	s.cert, s.pool, s.stamps = cert, pool, stamps
	return nil
}

// current returns the certificate and CA pool, re-reading the files first
// if they changed and were last looked at over reloadEvery ago.
func (s *Source) current() (*tls.Certificate, *x509.CertPool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if now.Sub(s.checked) < reloadEvery {
		return s.cert, s.pool
	}
	s.checked = now
	stamps, err := s.stat()
	if err != nil {
		s.log.Warn("TLS files unreadable; keeping the loaded ones", "err", err)
		return s.cert, s.pool
	}
	if stamps == s.stamps {
		return s.cert, s.pool
	}
	if err := s.load(stamps); err != nil {
		s.log.Warn("TLS files changed but do not load; keeping the loaded ones", "err", err)
		return s.cert, s.pool
	}
	s.log.Info("TLS files reloaded", "cert", s.files.Cert, "ca", s.files.CA)
	return s.cert, s.pool
}

// HasCert reports whether the Source was given a certificate and key.
func (s *Source) HasCert() bool { return s.files.Cert != "" }

// HasCA reports whether the Source was given a CA file.
func (s *Source) HasCA() bool { return s.files.CA != "" }

func (s *Source) certificate() (*tls.Certificate, error) {
	c, _ := s.current()
	if c == nil {
		return nil, errors.New("tlsconf: no certificate configured")
	}
	return c, nil
}

// verify checks a presented chain against the current CA pool for usage,
// and the host name when host is not empty, and returns its leaf.
func (s *Source) verify(chain []*x509.Certificate, usage x509.ExtKeyUsage, host string) (*x509.Certificate, error) {
	_, pool := s.current()
	if pool == nil {
		return nil, errors.New("tlsconf: no trusted CA configured")
	}
	if len(chain) == 0 {
		return nil, errors.New("tlsconf: no certificate presented")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{usage},
		DNSName:       host,
		CurrentTime:   s.now(),
	})
	if err != nil {
		return nil, fmt.Errorf("tlsconf: certificate %q: %w", chain[0].Subject.CommonName, err)
	}
	return chain[0], nil
}
