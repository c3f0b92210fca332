package relay_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"outpost.dev/cloud/asnode"
	"outpost.dev/cloud/identity"
	"outpost.dev/cloud/pki"
	"outpost.dev/cloud/pki/mint"
	"outpost.dev/cloud/relay"
	"outpost.dev/wire"
)

func newCSR(t *testing.T, cn string) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

// expectWarning reads until a non-fatal error frame saying why.
func expectWarning(t *testing.T, c *websocket.Conn, why string) {
	t.Helper()
	for {
		f, err := recv(t, c)
		if err != nil {
			t.Fatalf("connection ended (%v) before a warning saying %q", err, why)
		}
		if f.Type == wire.TypeCertIssued {
			t.Fatalf("certificate issued, want a refusal saying %q", why)
		}
		if f.Type != wire.TypeError {
			continue
		}
		var e wire.Error
		if err := f.DecodeBody(&e); err != nil || e.Fatal || !strings.Contains(e.Reason, why) {
			t.Fatalf("error frame %+v (%v), want a non-fatal one saying %q", e, err, why)
		}
		return
	}
}

func recvIssued(t *testing.T, c *websocket.Conn) *x509.Certificate {
	t.Helper()
	f := mustRecv(t, c, wire.TypeCertIssued)
	var ci wire.CertIssued
	if err := f.DecodeBody(&ci); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(ci.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// A node renews its certificate on its link: the relay signs for the
// connection's name only, accepts both certificates until the new one
// connects, then only the new one.
func TestRotationOnLink(t *testing.T) {
	// UIDs as a real API server gives them, so the record gets bound
	// once; the fake has no optimistic concurrency to keep that write
	// from overwriting the rotation's.
	tr := newTestRelay(t, func(cfg *relay.Config) {
		cfg.NodeCertValidity = 2 * time.Hour
		cfg.Client.(*fake.Clientset).PrependReactor("create", "nodes", func(a k8stesting.Action) (bool, runtime.Object, error) {
			n := a.(k8stesting.CreateAction).GetObject().(*corev1.Node)
			n.UID = types.UID("uid-" + n.Name)
			return false, nil, nil
		})
	})
	ctx := context.Background()
	ids := identity.New(tr.client, relay.DefaultNamespace)
	old := tr.nodeCert(t, "gw-rot")
	c := tr.hello(t, "gw-rot")
	waitFor(t, "the record bound to the created Node", func() bool {
		rec, _ := ids.Fresh(ctx, "gw-rot")
		return rec != nil && rec.NodeUID == "uid-gw-rot"
	})

	send(t, c, encode(t, wire.TypeCertRequest, 0, &wire.CertRequest{CSR: []byte{0x30, 0x03, 0x02, 0x01, 0x00}}))
	expectWarning(t, c, "csr does not parse")
	_, other := newCSR(t, "system:node:gw-other")
	send(t, c, encode(t, wire.TypeCertRequest, 0, &wire.CertRequest{CSR: other}))
	expectWarning(t, c, "renews only its own certificate")

	key, csr := newCSR(t, "system:node:gw-rot")
	send(t, c, encode(t, wire.TypeCertRequest, 0, &wire.CertRequest{CSR: csr}))
	cert := recvIssued(t, c)
	if cert.Subject.CommonName != "gw-rot" || !key.PublicKey.Equal(cert.PublicKey) || !cert.NotAfter.After(old.Leaf.NotAfter) {
		t.Fatalf("issued CN %q, key match %v, not after %s (old %s)", cert.Subject.CommonName, key.PublicKey.Equal(cert.PublicKey), cert.NotAfter, old.Leaf.NotAfter)
	}
	rec, _ := ids.Fresh(ctx, "gw-rot")
	if !rec.Accepts(identity.Serial(old.Leaf)) || !rec.Accepts(identity.Serial(cert)) {
		t.Fatalf("during the overlap the record holds %v (old %s, new %s)", rec.Serials, identity.Serial(old.Leaf), identity.Serial(cert))
	}

	fresh := tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
	nc, _, err := tr.dialCert(t, &fresh)
	if err != nil {
		t.Fatalf("connect with the rotated certificate: %v", err)
	}
	send(t, nc, helloFrame(t))
	mustRecv(t, nc, wire.TypeHelloAck)
	waitFor(t, "the replaced certificate dropped", func() bool {
		rec, _ := ids.Fresh(ctx, "gw-rot")
		return rec != nil && !rec.Accepts(identity.Serial(old.Leaf)) && rec.Accepts(identity.Serial(cert))
	})
	if oc, resp, err := tr.dialCert(t, &old); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		if oc != nil {
			oc.CloseNow()
		}
		t.Fatalf("the replaced certificate: %v", err)
	}
}

// expiredCert is name's certificate that expired ago, recorded as accepted.
func (tr *testRelay) expiredCert(t *testing.T, name string, ago time.Duration) tls.Certificate {
	t.Helper()
	end := time.Now().Add(-ago)
	pair, err := mint.NewPair(mint.Spec{CommonName: name, Organizations: []string{pki.NodesGroup}, Client: true,
		NotBefore: end.Add(-time.Hour), NotAfter: end}, tr.ca.Cert, tr.ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := identity.New(tr.client, relay.DefaultNamespace).Issue(context.Background(), name, identity.Serial(pair.Leaf), "", true); err != nil {
		t.Fatal(err)
	}
	return pair
}

// A certificate expired within the grace connects only to rotate: the
// relay acts on nothing else, answers the cert-request and closes. Past the
// grace the handshake fails.
func TestExpiredCertificateOnlyRotates(t *testing.T) {
	// A CA that signed certificates long ago.
	ca, err := pki.Generate(time.Now().Add(-2 * wire.CertGrace))
	if err != nil {
		t.Fatal(err)
	}
	tr := newTestRelay(t, func(cfg *relay.Config) { cfg.CA = ca })
	exp := tr.expiredCert(t, "gw-exp", 24*time.Hour)
	c, _, err := tr.dialCert(t, &exp)
	if err != nil {
		t.Fatalf("certificate expired a day ago: %v", err)
	}
	send(t, c, helloFrame(t))
	mustRecv(t, c, wire.TypeHelloAck)
	send(t, c, encode(t, wire.TypeNodeStatus, 1, &wire.NodeStatus{Node: info()}))
	key, csr := newCSR(t, "system:node:gw-exp")
	send(t, c, encode(t, wire.TypeCertRequest, 0, &wire.CertRequest{CSR: csr}))
	// Nothing comes before the certificate: no ack, no sync.
	f, err := recvAny(t, c)
	if err != nil || f.Type != wire.TypeCertIssued {
		t.Fatalf("got %v (%v), want cert-issued first", f.Type, err)
	}
	var ci wire.CertIssued
	if err := f.DecodeBody(&ci); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(ci.Certificate)
	if cert == nil || !key.PublicKey.Equal(cert.PublicKey) || cert.Subject.CommonName != "gw-exp" {
		t.Fatalf("issued %+v", cert)
	}
	if _, err := recvAny(t, c); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("after the certificate: %v, want a normal close", err)
	}
	if getNode(tr, "gw-exp") != nil {
		t.Fatal("a connection with an expired certificate wrote the Node")
	}

	// The new certificate connects as usual.
	fresh := tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
	nc, _, err := tr.dialCert(t, &fresh)
	if err != nil {
		t.Fatal(err)
	}
	send(t, nc, helloFrame(t))
	mustRecv(t, nc, wire.TypeHelloAck)

	// Revoked, or past the grace: refused.
	stale := tr.expiredCert(t, "gw-old", wire.CertGrace+time.Hour)
	if oc, _, err := tr.dialCert(t, &stale); err == nil {
		oc.CloseNow()
		t.Fatal("certificate expired past the grace accepted")
	}
	revoked := tr.expiredCert(t, "gw-rev", time.Hour)
	if err := identity.New(tr.client, relay.DefaultNamespace).Revoke(context.Background(), "gw-rev", "stolen"); err != nil {
		t.Fatal(err)
	}
	if oc, resp, err := tr.dialCert(t, &revoked); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		if oc != nil {
			oc.CloseNow()
		}
		t.Fatalf("revoked expired certificate: %v", err)
	}
}

// A node certificate validity under the minimum is refused at start: the
// certificates would be due for renewal the moment they are issued.
func TestNodeCertValidityMinimum(t *testing.T) {
	ca, err := pki.Generate(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset()
	for _, v := range []time.Duration{time.Second, relay.MinNodeCertValidity - time.Second} {
		_, err := relay.New(relay.Config{Client: client, AsNode: asnode.Same{C: client}, CA: ca, NodeCertValidity: v,
			Log: slog.New(slog.DiscardHandler)})
		if err == nil || !strings.Contains(err.Error(), "raise --node-cert-validity") {
			t.Errorf("validity %s: %v", v, err)
		}
	}
	newTestRelay(t, func(cfg *relay.Config) { cfg.NodeCertValidity = relay.MinNodeCertValidity })
}
