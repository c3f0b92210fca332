package mint

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"
)

// A CA, a server and a client certificate from it: each verifies for its
// own use only, with the names and key usages asked for.
func TestIssueChain(t *testing.T) {
	now := time.Now()
	caKey, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := Issue(Spec{CommonName: "ca", CA: true, MaxPathLenZero: true, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)}, caKey.Public(), nil, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.IsCA || !ca.MaxPathLenZero || ca.KeyUsage&x509.KeyUsageCertSign == 0 || ca.CheckSignatureFrom(ca) != nil {
		t.Fatalf("CA: IsCA %v, MaxPathLenZero %v, usage %b", ca.IsCA, ca.MaxPathLenZero, ca.KeyUsage)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)

	srv, err := NewPair(Spec{CommonName: "relay", Hosts: []string{"127.0.0.1", "relay.example"}, Server: true,
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)}, ca, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if len(srv.Leaf.IPAddresses) != 1 || len(srv.Leaf.DNSNames) != 1 || srv.Leaf.DNSNames[0] != "relay.example" {
		t.Fatalf("server names: %v %v", srv.Leaf.IPAddresses, srv.Leaf.DNSNames)
	}
	if _, err := srv.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "127.0.0.1"}); err != nil {
		t.Fatalf("server certificate: %v", err)
	}
	if _, err := srv.Leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Fatal("a server certificate verifies for client authentication")
	}

	cli, err := NewPair(Spec{CommonName: "gw-1", Organizations: []string{"outpost:nodes"}, Client: true,
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)}, ca, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if cli.Leaf.Subject.CommonName != "gw-1" || len(cli.Leaf.Subject.Organization) != 1 || cli.Leaf.SerialNumber.Sign() <= 0 {
		t.Fatalf("client subject %v, serial %v", cli.Leaf.Subject, cli.Leaf.SerialNumber)
	}
	if _, err := cli.Leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("client certificate: %v", err)
	}
	if cli.Leaf.SerialNumber.Cmp(srv.Leaf.SerialNumber) == 0 {
		t.Fatal("two certificates share a serial")
	}

	// Self-signed: signed by its own key (not a CA, so not a parent).
	self, err := NewPair(Spec{CommonName: "self", Client: true, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := self.Leaf.CheckSignature(self.Leaf.SignatureAlgorithm, self.Leaf.RawTBSCertificate, self.Leaf.Signature); err != nil {
		t.Fatalf("self-signed: %v", err)
	}
}

// An RSA key gets key encipherment (TLS 1.2 RSA key exchange); keys
// round-trip through KeyPEM.
func TestRSAAndPEM(t *testing.T) {
	now := time.Now()
	caKey, _ := NewKey()
	ca, err := Issue(Spec{CommonName: "ca", CA: true, NotBefore: now, NotAfter: now.Add(time.Hour)}, caKey.Public(), nil, caKey)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Issue(Spec{CommonName: "rsa", Client: true, NotBefore: now, NotAfter: now.Add(time.Hour)}, rk.Public(), ca, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if c.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
		t.Fatal("RSA certificate without key encipherment")
	}
	b, err := KeyPEM(caKey)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		t.Fatalf("KeyPEM: %q", b)
	}
	if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err != nil || !caKey.Equal(k) {
		t.Fatalf("KeyPEM does not round-trip: %v", err)
	}
	if blk, _ := pem.Decode(CertPEM(ca)); blk == nil || string(blk.Bytes) != string(ca.Raw) {
		t.Fatal("CertPEM does not round-trip")
	}
}

// A spec without a validity, a use or a signer is refused.
func TestIssueRefusesIncompleteSpecs(t *testing.T) {
	now := time.Now()
	key, _ := NewKey()
	for _, tt := range []struct {
		spec Spec
		want string
	}{
		{Spec{CommonName: "x", Client: true}, "needs a validity"},
		{Spec{CommonName: "x", Client: true, NotBefore: now, NotAfter: now}, "needs a validity"},
		{Spec{CommonName: "x", NotBefore: now, NotAfter: now.Add(time.Hour)}, "none of CA, Client, Server"},
	} {
		if _, err := Issue(tt.spec, key.Public(), nil, key); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want %q", tt.spec, err, tt.want)
		}
	}
	if _, err := Issue(Spec{CommonName: "x", Client: true, NotBefore: now, NotAfter: now.Add(time.Hour)}, key.Public(), nil, nil); err == nil {
		t.Error("issued without a signing key")
	}
}
