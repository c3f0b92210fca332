// Package mint issues X.509 certificates: the one place in the project
// that builds a certificate and signs it. The relay's CA (cloud/pki), the
// control plane the tests run (test/harness) and the agent's test CA
// (agent/internal/testpki) all mint through it. It imports only the
// standard library, so the agent's tests may use it.
package mint

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// Spec is a certificate to issue.
type Spec struct {
	// CommonName and Organizations are the subject: for a client of the
	// Kubernetes API, its user name and groups.
	CommonName    string
	Organizations []string
	// Hosts are a server's subject alternative names, each an IP address
	// or a DNS name.
	Hosts []string
	// Client and Server select the extended key usages.
	Client, Server bool
	// CA makes a certificate authority; MaxPathLenZero keeps it from
	// signing other CAs.
	CA, MaxPathLenZero bool
	// NotBefore and NotAfter bound the validity; both are required.
	NotBefore, NotAfter time.Time
}

// NewKey returns a new ECDSA P-256 key, the key type of every certificate
// the project mints.
func NewKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// Issue signs a certificate for pub as spec says with parent's key
// parentKey. A nil parent makes it self-signed: parentKey is then the
// private key of pub.
func Issue(spec Spec, pub crypto.PublicKey, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, error) {
	if spec.NotBefore.IsZero() || !spec.NotAfter.After(spec.NotBefore) {
		return nil, fmt.Errorf("mint: certificate %q needs a validity (from %s to %s)", spec.CommonName, spec.NotBefore, spec.NotAfter)
	}
	if !spec.CA && !spec.Client && !spec.Server {
		return nil, fmt.Errorf("mint: certificate %q is none of CA, Client, Server", spec.CommonName)
	}
	if parentKey == nil {
		return nil, errors.New("mint: no signing key")
	}
	tmpl := &x509.Certificate{
		SerialNumber: Serial(),
		Subject:      pkix.Name{CommonName: spec.CommonName, Organization: spec.Organizations},
		NotBefore:    spec.NotBefore,
		NotAfter:     spec.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	for _, h := range spec.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if spec.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	if spec.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if spec.CA {
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.MaxPathLenZero = true, true, spec.MaxPathLenZero
		tmpl.KeyUsage |= x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else if _, isRSA := pub.(*rsa.PublicKey); isRSA {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		return nil, fmt.Errorf("mint: sign certificate %q: %w", spec.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

// NewPair is a new key and a certificate for it, issued as Issue does;
// with a nil parent it is self-signed.
func NewPair(spec Spec, parent *x509.Certificate, parentKey crypto.Signer) (tls.Certificate, error) {
	key, err := NewKey()
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("mint: generate key: %w", err)
	}
	if parent == nil {
		parentKey = key
	}
	cert, err := Issue(spec, key.Public(), parent, parentKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

// Serial returns a random positive serial number of up to 127 bits
// (RFC 5280: at most 20 octets, unpredictable).
func Serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n.Add(n, big.NewInt(1))
}

// CertPEM is cert as PEM.
func CertPEM(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

// KeyPEM is key as PKCS #8 PEM.
func KeyPEM(key crypto.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("mint: marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
