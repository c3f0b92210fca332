// Package pki owns the relay's certificate authority: the CA key pair kept
// in a Kubernetes Secret and shared by every relay replica, the serving
// certificate each replica mints from it at start, and the client
// certificates it signs for joining nodes.
//
// The CA is the root of the node identity: a node's name is the common name
// of a certificate this CA signed, so the relay never needs to trust a name
// inside a message.
package pki

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/cloud/pki/mint"
)

const (
	// SecretName is the Secret holding the CA, in the relay's namespace.
	SecretName = "outpost-relay-ca"
	// NodesGroup is the organization of every node certificate. The relay
	// accepts an agent connection only from a certificate carrying it, so a
	// serving certificate from the same CA can never pass as a node.
	NodesGroup = "outpost:nodes"

	caValidity = 10 * 365 * 24 * time.Hour
	// clockSkew backdates certificates so a node with a slightly slow
	// clock does not reject a certificate minted a moment ago.
	clockSkew = 5 * time.Minute
)

// CA is the relay's certificate authority.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte // the CA certificate as handed to agents
	keyPEM  []byte
}

// Generate creates a new self-signed CA (ECDSA P-256, valid ten years).
func Generate(now time.Time) (*CA, error) {
	key, err := mint.NewKey()
	if err != nil {
		return nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	cert, err := mint.Issue(mint.Spec{
		CommonName: "outpost-relay-ca", Organizations: []string{"outpost"},
		CA: true, MaxPathLenZero: true,
		NotBefore: now.Add(-clockSkew), NotAfter: now.Add(caValidity),
	}, key.Public(), nil, key)
	if err != nil {
		return nil, fmt.Errorf("pki: self-sign CA: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: marshal CA key: %w", err)
	}
	return Parse(
		mint.CertPEM(cert),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	)
}

// Parse loads a CA from PEM certificate and key, checking that they belong
// together and that the certificate is a CA.
func Parse(certPEM, keyPEM []byte) (*CA, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: CA key pair: %w", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("pki: CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, errors.New("pki: CA certificate is not a CA (basicConstraints CA:false)")
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("pki: CA key cannot sign")
	}
	// Only the first certificate is handed to agents.
	block, _ := pem.Decode(certPEM)
	return &CA{
		Cert:    cert,
		Key:     signer,
		CertPEM: pem.EncodeToMemory(block),
		keyPEM:  keyPEM,
	}, nil
}

// Secrets reads and creates Secrets in the relay's namespace. client-go's
// CoreV1().Secrets(namespace) satisfies it.
type Secrets interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Secret, error)
	Create(ctx context.Context, s *corev1.Secret, opts metav1.CreateOptions) (*corev1.Secret, error)
}

// LoadOrCreate reads the CA from Secret SecretName in namespace, creating it
// on first start. Two replicas starting together may both try to create it;
// the loser gets AlreadyExists and reads the winner's, so all replicas end
// up with one CA. A Secret that exists but does not hold a usable CA is an
// error: overwriting it would orphan every joined node.
func LoadOrCreate(ctx context.Context, secrets Secrets, namespace string) (*CA, error) {
	sec, err := secrets.Get(ctx, SecretName, metav1.GetOptions{})
	if err == nil {
		return fromSecret(namespace, sec)
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("pki: read CA secret %s/%s: %w", namespace, SecretName, err)
	}
	ca, err := Generate(time.Now())
	if err != nil {
		return nil, err
	}
	sec = &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      SecretName,
			Namespace: namespace,
			Labels:    map[string]string{"app.kubernetes.io/name": "outpost-relay"},
		},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{
			corev1.TLSCertKey:       ca.CertPEM,
			corev1.TLSPrivateKeyKey: ca.keyPEM,
		},
	}
	created, err := secrets.Create(ctx, sec, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// Another replica won the race; use its CA.
		sec, err = secrets.Get(ctx, SecretName, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("pki: re-read CA secret %s/%s after a concurrent create: %w", namespace, SecretName, err)
		}
		return fromSecret(namespace, sec)
	}
	if err != nil {
		return nil, fmt.Errorf("pki: create CA secret %s/%s: %w", namespace, SecretName, err)
	}
	return fromSecret(namespace, created)
}

func fromSecret(namespace string, sec *corev1.Secret) (*CA, error) {
	ca, err := Parse(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s does not hold a usable CA (%w): fix or delete it; deleting it invalidates every joined node", namespace, SecretName, err)
	}
	return ca, nil
}

// Pool returns a pool holding only this CA, for verifying node certificates.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// ServingCert mints a server certificate for hosts (DNS names or IP
// addresses) with a fresh key. It is ephemeral: each replica mints its own
// at start, so no serving key is ever stored.
func (ca *CA) ServingCert(hosts []string, validity time.Duration) (tls.Certificate, error) {
	if len(hosts) == 0 {
		return tls.Certificate{}, errors.New("pki: serving certificate needs at least one host name or address")
	}
	now := time.Now()
	pair, err := mint.NewPair(mint.Spec{
		CommonName: hosts[0], Hosts: hosts, Server: true,
		NotBefore: now.Add(-clockSkew), NotAfter: ca.clamp(now.Add(validity)),
	}, ca.Cert, ca.Key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: serving certificate: %w", err)
	}
	pair.Certificate = append(pair.Certificate, ca.Cert.Raw)
	return pair, nil
}

// ParseCSR decodes a PEM certificate request and checks that it is signed
// by the key it carries and that the key is one we sign for: ECDSA P-256 or
// P-384, Ed25519, or RSA of at least 2048 bits. The subject is not checked:
// SignNode sets its own.
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	block, rest := pem.Decode(csrPEM)
	if block == nil {
		return nil, errors.New("csr is not PEM")
	}
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("csr PEM block is %q, want CERTIFICATE REQUEST", block.Type)
	}
	if len(bytesTrimSpace(rest)) != 0 {
		return nil, errors.New("csr has trailing data after the PEM block")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("csr does not parse: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr signature does not verify: %w", err)
	}
	if err := CheckPublicKey(csr.PublicKey); err != nil {
		return nil, err
	}
	return csr, nil
}

// CheckPublicKey reports whether pub is a key type and size we sign for.
func CheckPublicKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384():
			return nil
		}
		return fmt.Errorf("csr key is ECDSA %s: use P-256 or P-384", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("csr key is RSA-%d: use at least 2048 bits, or ECDSA P-256", k.N.BitLen())
		}
		return nil
	default:
		return fmt.Errorf("csr key type %T is not supported: use ECDSA P-256, P-384, Ed25519 or RSA >= 2048", pub)
	}
}

// SignNode issues a client certificate for node nodeName to pub:
// CN=nodeName, O=NodesGroup, client authentication only.
func (ca *CA) SignNode(pub crypto.PublicKey, nodeName string, validity time.Duration) (*x509.Certificate, error) {
	if err := CheckPublicKey(pub); err != nil {
		return nil, err
	}
	now := time.Now()
	cert, err := mint.Issue(mint.Spec{
		CommonName: nodeName, Organizations: []string{NodesGroup}, Client: true,
		NotBefore: now.Add(-clockSkew), NotAfter: ca.clamp(now.Add(validity)),
	}, pub, ca.Cert, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: node certificate: %w", err)
	}
	return cert, nil
}

// EncodeCert returns cert as PEM.
func EncodeCert(cert *x509.Certificate) []byte { return mint.CertPEM(cert) }

// clamp keeps a certificate from outliving the CA that signed it.
func (ca *CA) clamp(t time.Time) time.Time {
	if t.After(ca.Cert.NotAfter) {
		return ca.Cert.NotAfter
	}
	return t
}

func bytesTrimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\r' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}
