package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/agent/store"
	"outpost.dev/cloud/identity"
	"outpost.dev/cloud/pki"
	"outpost.dev/cloud/pki/mint"
	testpeer "outpost.dev/test/peer"
	"outpost.dev/test/stack"
	"outpost.dev/wire"
)

var (
	shortRelayOnce sync.Once
	shortRelay     *stack.Relay
	shortRelayErr  error
)

// shortCertRelay is a relay replica issuing two-minute node certificates.
func shortCertRelay(t *testing.T) *stack.Relay {
	t.Helper()
	shortRelayOnce.Do(func() {
		shortRelay, shortRelayErr = st.StartRelay(ctxFor(t, 2*time.Minute), "--node-cert-validity", "2m")
	})
	if shortRelayErr != nil {
		t.Fatal(shortRelayErr)
	}
	return shortRelay
}

// recordSerials are the serials node's identity record accepts.
func recordSerials(ctx context.Context, node string) ([]string, error) {
	rec, err := identity.New(st.CP.Client(), stack.RelayNamespace).Fresh(ctx, node)
	if err != nil || rec == nil {
		return nil, fmt.Errorf("record of %s: %v", node, err)
	}
	return rec.Serials, nil
}

// storedCert is the node certificate in the agent's state directory; the
// agent holds the store open, so it is read from a copy.
func storedCert(t *testing.T, a *stack.Agent) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(a.StateDir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, store.FileName), b, 0o600); err != nil {
		t.Fatal(err)
	}
	id := identityIn(t, dir)
	p, _ := pem.Decode(id.CertPEM)
	c, err := x509.ParseCertificate(p.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// An agent renews its short-lived certificate on the live link, with no
// restart: the node stays Ready, the record accepts the new serial only.
func TestCertificateRotatesOnLink(t *testing.T) {
	needStack(t)
	r := shortCertRelay(t)
	ctx := ctxFor(t, 4*time.Minute)
	a, err := st.Join(ctx, r, "rot-1")
	if err != nil {
		t.Fatal(err)
	}
	first, err := recordSerials(ctx, "rot-1")
	if err != nil || len(first) != 1 {
		t.Fatalf("record after join: %v %v", first, err)
	}
	// Certificates start five minutes back (clock skew): two minutes of
	// validity is a seven-minute lifetime, renewed at 75 % 15 s after issue.
	a.ExtraConfig = "certRotateAt: 75"
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	if err := st.WaitNodeReady(ctx, "rot-1", true, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	stack.WaitFor(t, ctx, 90*time.Second, "the renewed certificate connected and the old one dropped", func() (bool, string) {
		s, err := recordSerials(ctx, "rot-1")
		return err == nil && len(s) == 1 && s[0] != first[0], fmt.Sprint(s, err)
	})
	if st, err := st.NodeReady(ctx, "rot-1"); err != nil || st != "True" {
		t.Fatalf("node after the renewal: %v %v", st, err)
	}
	if a.Proc.Exited() {
		t.Fatal("the agent restarted to renew its certificate")
	}
	if !strings.Contains(a.Proc.LogTail(400), "connected with the renewed node certificate") {
		t.Fatalf("agent log lacks the renewal:\n%s", a.Proc.LogTail(60))
	}
	// What the agent stored is what the record now accepts.
	now, _ := recordSerials(ctx, "rot-1")
	stack.WaitFor(t, ctx, 30*time.Second, "the stored certificate is the accepted one", func() (bool, string) {
		c := storedCert(t, a)
		s, _ := recordSerials(ctx, "rot-1")
		return len(s) > 0 && identity.Serial(c) == s[len(s)-1], fmt.Sprintf("stored %s, record %v (was %v)", identity.Serial(c), s, now)
	})
}

// An agent offline past its certificate's end, within the grace, connects
// only to renew it and then carries on; past the grace it is told to
// re-join, and the relay refuses the certificate.
func TestExpiredCertificateRenewsWithinGrace(t *testing.T) {
	needStack(t)
	r := shortCertRelay(t)
	ctx := ctxFor(t, 5*time.Minute)
	a, err := st.Join(ctx, r, "rot-2")
	if err != nil {
		t.Fatal(err)
	}
	// The gateway was off while its certificate ran out.
	id := loadIdentity(t, a)
	p, _ := pem.Decode(id.CertPEM)
	old, _ := x509.ParseCertificate(p.Bytes)
	stack.WaitFor(t, ctx, 3*time.Minute, "the certificate to expire", func() (bool, string) {
		return time.Now().After(old.NotAfter.Add(time.Second)), "not after " + old.NotAfter.String()
	})
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	if err := st.WaitNodeReady(ctx, "rot-2", true, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	s, err := recordSerials(ctx, "rot-2")
	if err != nil || len(s) != 1 || s[0] == identity.Serial(old) {
		t.Fatalf("record after the renewal: %v %v (expired %s)", s, err, identity.Serial(old))
	}

	// Past the grace: a certificate that ended 91 days ago, still listed.
	b, err := st.CP.Client().CoreV1().Secrets(stack.RelayNamespace).Get(ctx, pki.SecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.Parse(b.Data["tls.crt"], b.Data["tls.key"])
	if err != nil {
		t.Fatal(err)
	}
	a3, err := st.Join(ctx, r, "rot-3")
	if err != nil {
		t.Fatal(err)
	}
	stale := staleCert(t, ca, "rot-3", wire.CertGrace+24*time.Hour)
	if err := identity.New(st.CP.Client(), stack.RelayNamespace).Issue(ctx, "rot-3", identity.Serial(stale.Leaf), "", true); err != nil {
		t.Fatal(err)
	}
	id3 := loadIdentity(t, a3)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(stale.PrivateKey)
	id3.KeyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	id3.CertPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: stale.Leaf.Raw})
	saveIdentity(t, a3, id3)
	peer := &testpeer.Peer{Name: "rot-3", Cert: stale, CA: x509.NewCertPool(), Addr: r.Addr}
	peer.CA.AppendCertsFromPEM(id3.CAPEM)
	if c, err := peer.Dial(ctx); err == nil {
		c.CloseNow()
		t.Fatal("relay accepted a certificate expired past the grace")
	}
	if err := a3.Start(); err != nil {
		t.Fatal(err)
	}
	defer a3.Stop()
	stack.WaitFor(t, ctx, 60*time.Second, "the agent says to re-join", func() (bool, string) {
		l := a3.Proc.LogTail(50)
		return strings.Contains(l, "this node must re-join") && strings.Contains(l, "the relay still renews one"), l
	})
}

func loadIdentity(t *testing.T, a *stack.Agent) store.Identity {
	t.Helper()
	return identityIn(t, a.StateDir)
}

// identityIn is the node identity in the store under dir.
func identityIn(t *testing.T, dir string) store.Identity {
	t.Helper()
	s, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	id, err := s.LoadIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func saveIdentity(t *testing.T, a *stack.Agent, id store.Identity) {
	t.Helper()
	s, err := store.Open(a.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.SaveIdentity(id); err != nil {
		t.Fatal(err)
	}
}

// staleCert is a node certificate for name from ca that ended ago.
func staleCert(t *testing.T, ca *pki.CA, name string, ago time.Duration) tls.Certificate {
	t.Helper()
	end := time.Now().Add(-ago)
	pair, err := mint.NewPair(mint.Spec{CommonName: name, Organizations: []string{pki.NodesGroup}, Client: true,
		NotBefore: end.Add(-30 * 24 * time.Hour), NotAfter: end}, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}
