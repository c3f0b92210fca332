package pki

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// memSecrets is an in-memory Secrets; createHook runs before a create, to
// stage a race.
type memSecrets struct {
	mu         sync.Mutex
	m          map[string]*corev1.Secret
	creates    int
	createHook func()
}

var secretsGR = schema.GroupResource{Resource: "secrets"}

func (s *memSecrets) Get(_ context.Context, name string, _ metav1.GetOptions) (*corev1.Secret, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sec, ok := s.m[name]; ok {
		return sec.DeepCopy(), nil
	}
	return nil, apierrors.NewNotFound(secretsGR, name)
}

func (s *memSecrets) Create(_ context.Context, sec *corev1.Secret, _ metav1.CreateOptions) (*corev1.Secret, error) {
	if s.createHook != nil {
		s.createHook()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.creates++
	if _, ok := s.m[sec.Name]; ok {
		return nil, apierrors.NewAlreadyExists(secretsGR, sec.Name)
	}
	s.m[sec.Name] = sec.DeepCopy()
	return sec, nil
}

func TestLoadOrCreateCreatesThenReuses(t *testing.T) {
	ctx := context.Background()
	s := &memSecrets{m: map[string]*corev1.Secret{}}
	ca1, err := LoadOrCreate(ctx, s, "outpost-system")
	if err != nil {
		t.Fatal(err)
	}
	sec := s.m[SecretName]
	if sec.Type != corev1.SecretTypeTLS || len(sec.Data[corev1.TLSCertKey]) == 0 || len(sec.Data[corev1.TLSPrivateKeyKey]) == 0 {
		t.Fatalf("CA secret: type %q, keys %v", sec.Type, sec.Data)
	}
	if _, ok := ca1.Key.(*ecdsa.PrivateKey); !ok || ca1.Cert.PublicKeyAlgorithm != x509.ECDSA {
		t.Fatalf("CA key is %T, want ECDSA", ca1.Key)
	}
	if life := ca1.Cert.NotAfter.Sub(ca1.Cert.NotBefore); life < 9*365*24*time.Hour {
		t.Errorf("CA lifetime %s, want about 10 years", life)
	}
	ca2, err := LoadOrCreate(ctx, s, "outpost-system")
	if err != nil {
		t.Fatal(err)
	}
	if !ca1.Cert.Equal(ca2.Cert) || s.creates != 1 {
		t.Fatalf("second start made a new CA (creates=%d)", s.creates)
	}
}

func TestLoadOrCreateLosesRace(t *testing.T) {
	ctx := context.Background()
	s := &memSecrets{m: map[string]*corev1.Secret{}}
	winner, err := Generate(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// Another replica creates the Secret between our Get and Create.
	s.createHook = func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.m[SecretName]; !ok {
			s.m[SecretName] = &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: SecretName},
				Type:       corev1.SecretTypeTLS,
				Data:       map[string][]byte{corev1.TLSCertKey: winner.CertPEM, corev1.TLSPrivateKeyKey: winner.keyPEM},
			}
		}
	}
	got, err := LoadOrCreate(ctx, s, "outpost-system")
	if err != nil {
		t.Fatal(err)
	}
	if !got.Cert.Equal(winner.Cert) {
		t.Fatal("loser of the create race did not adopt the winner's CA")
	}
}

func TestLoadOrCreateRefusesBrokenSecret(t *testing.T) {
	s := &memSecrets{m: map[string]*corev1.Secret{SecretName: {
		ObjectMeta: metav1.ObjectMeta{Name: SecretName},
		Data:       map[string][]byte{corev1.TLSCertKey: []byte("junk")},
	}}}
	_, err := LoadOrCreate(context.Background(), s, "ns")
	if err == nil || !strings.Contains(err.Error(), "does not hold a usable CA") {
		t.Fatalf("err = %v", err)
	}
	if s.creates != 0 {
		t.Fatal("overwrote a broken CA secret")
	}
}

func newCA(t *testing.T) *CA {
	t.Helper()
	ca, err := Generate(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestServingCert(t *testing.T) {
	ca := newCA(t)
	cert, err := ca.ServingCert([]string{"relay.example.com", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"relay.example.com", "127.0.0.1"} {
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: ca.Pool()}); err != nil {
			t.Errorf("verify for %s: %v", host, err)
		}
	}
	// A serving certificate must not pass as a client (node) certificate.
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("serving certificate verifies for client auth")
	}
}

func csrPEM(t *testing.T, key crypto.Signer, cn string) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn, Organization: []string{"system:masters"}}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestParseCSR(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsa2048, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)

	good := csrPEM(t, p256, "x")
	block, _ := pem.Decode(good)
	tampered := append([]byte(nil), block.Bytes...)
	tampered[len(tampered)-5] ^= 0xff // corrupt the signature

	for _, tc := range []struct {
		name    string
		pem     []byte
		wantErr string
	}{
		{"p256", good, ""},
		{"p384", csrPEM(t, p384, "x"), ""},
		{"ed25519", csrPEM(t, ed, "x"), ""},
		{"rsa2048", csrPEM(t, rsa2048, "x"), ""},
		{"p224", csrPEM(t, p224, "x"), "P-224"},
		{"p521", csrPEM(t, p521, "x"), "P-521"},
		{"rsa1024", csrPEM(t, rsa1024, "x"), "RSA-1024"},
		{"not pem", []byte("hello"), "not PEM"},
		{"wrong block", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes}), "want CERTIFICATE REQUEST"},
		{"garbage der", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{0x30, 0x03, 1, 2, 3}}), "does not parse"},
		{"bad signature", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered}), ""},
		{"trailing", append(append([]byte(nil), good...), good...), "trailing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseCSR(tc.pem)
			if tc.name == "bad signature" {
				if err == nil {
					t.Fatal("accepted a CSR with a broken signature")
				}
				return
			}
			if tc.wantErr == "" && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestSignNodeSetsOwnSubject(t *testing.T) {
	ca := newCA(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := ParseCSR(csrPEM(t, key, "admin"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.SignNode(csr.PublicKey, "gw-1", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "gw-1" || len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] != NodesGroup {
		t.Fatalf("subject %v: the CSR's subject leaked in", cert.Subject)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("node cert does not verify for client auth: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool()}); err == nil {
		t.Fatal("node cert verifies as a server certificate")
	}
	if cert.IsCA {
		t.Fatal("node cert is a CA")
	}
}

func FuzzParseCSR(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		csr, err := ParseCSR(b)
		if err == nil && CheckPublicKey(csr.PublicKey) != nil {
			t.Fatal("accepted a key type it refuses")
		}
	})
}
