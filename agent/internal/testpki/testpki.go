// Package testpki is a throwaway certificate authority for the agent's
// tests: a CA, a serving certificate for 127.0.0.1, and node certificates
// issued from CSRs the way the relay issues them. It mints through
// outpost.dev/cloud/pki/mint, as the relay does (standard library only).
package testpki

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	"outpost.dev/cloud/pki/mint"
)

// CA is a certificate authority held in memory.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// PEM is the CA certificate, as a relay publishes it.
	PEM []byte
}

// NewCA makes a CA valid from an hour ago for a day.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key, err := mint.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := mint.Issue(mint.Spec{CommonName: name, CA: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}, key.Public(), nil, key)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, Key: key, PEM: mint.CertPEM(cert)}
}

// ServerTLS returns a serving certificate for 127.0.0.1 and localhost.
// ClientAuth is left to the caller.
func (ca *CA) ServerTLS(t testing.TB) *tls.Config {
	t.Helper()
	pair, err := mint.NewPair(mint.Spec{CommonName: "outpost-relay", Server: true,
		Hosts:     []string{"127.0.0.1", "::1", "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return &tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientCAs:    pool,
	}
}

// Sign issues a client certificate for csrPEM's key, valid from notBefore
// to notAfter, named by cn.
func (ca *CA) Sign(t testing.TB, csrPEM []byte, cn string, notBefore, notAfter time.Time) ([]byte, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil {
		return nil, errors.New("no PEM block")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, err
	}
	cert, err := mint.Issue(mint.Spec{CommonName: cn, Organizations: []string{"system:nodes"}, Client: true,
		NotBefore: notBefore, NotAfter: notAfter}, csr.PublicKey, ca.Cert, ca.Key)
	if err != nil {
		return nil, err
	}
	return mint.CertPEM(cert), nil
}

// NodeIdentity makes a node key and a certificate from this CA, returning
// both as PEM, for tests that skip the join.
func (ca *CA) NodeIdentity(t testing.TB, name string, notAfter time.Time) (keyPEM, certPEM []byte) {
	t.Helper()
	key, err := mint.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err = ca.Sign(t, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}), "system:node:"+name, time.Now().Add(-2*time.Hour).Add(-time.Minute), notAfter)
	if err != nil {
		t.Fatal(err)
	}
	if keyPEM, err = mint.KeyPEM(key); err != nil {
		t.Fatal(err)
	}
	return keyPEM, certPEM
}
