package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// URI SAN forms of node and user certificates.
const (
	uriScheme   = "dialkv"
	uriNodeHost = "node"
	uriUserHost = "user"
)

// ErrNotNode is returned by NodeIDFromCert for a certificate that names no
// node (a client certificate, or a foreign one).
var ErrNotNode = errors.New("tlsconf: certificate names no dialkv node")

// NodeIDFromCert returns the node id of a dialkv node certificate, from its
// URI SAN dialkv://node/<id>.
func NodeIDFromCert(c *x509.Certificate) (string, error) {
	for _, u := range c.URIs {
		if u.Scheme != uriScheme || u.Host != uriNodeHost {
			continue
		}
		id := strings.TrimPrefix(u.Path, "/")
		if id == "" || strings.Contains(id, "/") {
			return "", fmt.Errorf("%w: malformed URI SAN %q", ErrNotNode, u.String())
		}
		return id, nil
	}
	return "", fmt.Errorf("%w (subject %q)", ErrNotNode, c.Subject.CommonName)
}

func nodeURI(id string) *url.URL {
	return &url.URL{Scheme: uriScheme, Host: uriNodeHost, Path: "/" + id}
}
func userURI(n string) *url.URL { return &url.URL{Scheme: uriScheme, Host: uriUserHost, Path: "/" + n} }

func baseConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12}
}

// ServerConfig is the client port's server side: s's certificate, and with
// clientCertAuth every client must present a certificate that s's CA
// signed. Without clientCertAuth but with a CA, a certificate a client
// chooses to present is still verified.
func ServerConfig(s *Source, clientCertAuth bool) (*tls.Config, error) {
	if !s.HasCert() {
		return nil, errors.New("tlsconf: a server needs a certificate and key")
	}
	if clientCertAuth && !s.HasCA() {
		return nil, errors.New("tlsconf: client certificate authentication needs a trusted CA file")
	}
	c := baseConfig()
	c.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.certificate() }
	if !s.HasCA() {
		return c, nil
	}
	// Verification is ours, not crypto/tls's, so that it uses the CA pool
	// as re-read from disk rather than one frozen into the config.
	c.ClientAuth = tls.RequestClientCert
	if clientCertAuth {
		c.ClientAuth = tls.RequireAnyClientCert
	}
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 && !clientCertAuth {
			return nil
		}
		_, err := s.verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth, "")
		return err
	}
	return c, nil
}

// ClientConfig dials a client port at host (a name or an IP address): the
// server's certificate must chain to s's CA and name host; s's
// certificate, if any, is presented.
func ClientConfig(s *Source, host string) (*tls.Config, error) {
	if !s.HasCA() {
		return nil, errors.New("tlsconf: a client needs a trusted CA file")
	}
	if host == "" {
		return nil, errors.New("tlsconf: a client needs the server's host to verify")
	}
	c := baseConfig()
	// crypto/tls's own check would use a pool frozen at start; ours, in
	// VerifyConnection, does the same checks against the current one.
	c.InsecureSkipVerify = true
	c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if cert, _ := s.current(); cert != nil {
			return cert, nil
		}
		return &tls.Certificate{}, nil
	}
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		_, err := s.verify(cs.PeerCertificates, x509.ExtKeyUsageServerAuth, host)
		return err
	}
	return c, nil
}

// PeerServerConfig accepts peer connections: the peer must present a node
// certificate signed by s's CA, whose node id allow accepts (a registered
// member). A client certificate is refused.
func PeerServerConfig(s *Source, allow func(nodeID string) error) (*tls.Config, error) {
	if !s.HasCert() || !s.HasCA() {
		return nil, errors.New("tlsconf: the peer port needs a certificate, its key and a trusted CA file")
	}
	c := baseConfig()
	c.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.certificate() }
	c.ClientAuth = tls.RequireAnyClientCert
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		leaf, err := s.verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth, "")
		if err != nil {
			return err
		}
		id, err := NodeIDFromCert(leaf)
		if err != nil {
			return err
		}
		return allow(id)
	}
	return c, nil
}

// PeerClientConfig dials peers: s's node certificate is presented, and the
// peer's must be a node certificate signed by s's CA. The peer's host name
// is not checked: a Raft address need not be a name its certificate holds.
func PeerClientConfig(s *Source) (*tls.Config, error) {
	if !s.HasCert() || !s.HasCA() {
		return nil, errors.New("tlsconf: the peer port needs a certificate, its key and a trusted CA file")
	}
	c := baseConfig()
	c.InsecureSkipVerify = true // verified in VerifyConnection, by node id
	c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return s.certificate() }
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		leaf, err := s.verify(cs.PeerCertificates, x509.ExtKeyUsageServerAuth, "")
		if err != nil {
			return err
		}
		_, err = NodeIDFromCert(leaf)
		return err
	}
	return c, nil
}
