package link

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"outpost.dev/agent/internal/testpki"
	"outpost.dev/wire"
)

func TestRotationDue(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	end := start.Add(30 * 24 * time.Hour)
	for _, tt := range []struct {
		now  time.Time
		at   int
		want bool
	}{
		{start, 75, false},
		{start.Add(22*24*time.Hour + 11*time.Hour), 75, false},
		{start.Add(22*24*time.Hour + 12*time.Hour), 75, true},
		{end.Add(time.Hour), 75, true},
		{start.Add(15 * 24 * time.Hour), 50, true},
		{start.Add(15 * 24 * time.Hour), 0, false}, // the default, 75
	} {
		if got := RotationDue(start, end, tt.now, tt.at); got != tt.want {
			t.Errorf("at %d%%, %s into the lifetime: due %v, want %v", tt.at, tt.now.Sub(start), got, tt.want)
		}
	}
}

// fakeClock is the clock a Rotation decides with.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time       { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) set(t time.Time)      { c.ns.Store(t.UnixNano()) }
func newFakeClock(t time.Time) *fakeClock { c := &fakeClock{}; c.set(t); return c }

// stored is what Rotation.Save and Connected did.
type stored struct {
	mu        sync.Mutex
	key, cert []byte
	connected int
}

// renewingRelay answers hello and heartbeats, and signs cert-requests
// with ca as sign says; sign nil signs for gw-1 for three hours.
func renewingRelay(t *testing.T, ca *testpki.CA, sign func(csrPEM []byte) []byte) *relay {
	if sign == nil {
		sign = func(csrPEM []byte) []byte {
			b, err := ca.Sign(t, csrPEM, "system:node:gw-1", time.Now().Add(-time.Minute), time.Now().Add(3*time.Hour))
			if err != nil {
				t.Error(err)
			}
			p, _ := pem.Decode(b)
			return p.Bytes
		}
	}
	var r *relay
	r = newRelay(t, ca, func(p *peer) {
		p.ack(2)
		for {
			f, err := p.read()
			if err != nil {
				p.r.emit(event{conn: p.n, what: "closed"})
				return
			}
			switch f.Type {
			case wire.TypeHeartbeat:
				p.send(wire.TypeHeartbeat, 0, nil)
				p.r.emit(event{conn: p.n, what: "heartbeat"})
			case wire.TypeCertRequest:
				var req wire.CertRequest
				if err := f.DecodeBody(&req); err != nil {
					t.Error(err)
					return
				}
				p.r.emit(event{conn: p.n, what: "cert-request"})
				p.send(wire.TypeCertIssued, 0, &wire.CertIssued{Certificate: sign(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: req.CSR}))})
			}
		}
	})
	return r
}

func rotation(clock *fakeClock, st *stored) func(c *Config) {
	return func(c *Config) {
		c.Rotation = &Rotation{
			Now: clock.now,
			Save: func(k, c []byte) error {
				st.mu.Lock()
				defer st.mu.Unlock()
				st.key, st.cert = k, c
				return nil
			},
			Connected: func() error {
				st.mu.Lock()
				defer st.mu.Unlock()
				st.connected++
				return nil
			},
		}
	}
}

// Before the threshold nothing is asked; past it the link asks once,
// stores the new pair, reconnects with it and reports it connected.
func TestRotationOnLink(t *testing.T) {
	ca := testpki.NewCA(t, "relay-ca")
	r := renewingRelay(t, ca, nil)
	start := time.Now()
	clock := newFakeClock(start)
	st := &stored{}
	// Valid for 3h1m from 2h1m ago: due at 75 %, 16 minutes from now.
	a := startAgent(t, r.srv.URL, ca, ca, start.Add(time.Hour), rotation(clock, st))
	first := r.waitFor(t, 1, "hello")
	for range 3 {
		if e := r.waitForAny(t, 1, "heartbeat", "cert-request"); e.what != "heartbeat" {
			t.Fatal("cert-request before the threshold")
		}
	}
	clock.set(start.Add(17 * time.Minute))
	r.waitFor(t, 1, "cert-request")
	second := r.waitFor(t, 2, "hello")
	if second.leaf.SerialNumber.Cmp(first.leaf.SerialNumber) == 0 || !second.leaf.NotAfter.After(first.leaf.NotAfter) {
		t.Fatalf("second connection presented %s until %s, the first %s until %s", second.leaf.SerialNumber, second.leaf.NotAfter, first.leaf.SerialNumber, first.leaf.NotAfter)
	}
	eventually(t, "the new pair reported connected", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.connected == 1
	})
	st.mu.Lock()
	b, _ := pem.Decode(st.cert)
	st.mu.Unlock()
	if b == nil || string(b.Bytes) != string(second.leaf.Raw) {
		t.Fatal("the stored certificate is not the one the link connected with")
	}
	// The new certificate is not due: no further request.
	for range 3 {
		if e := r.waitForAny(t, 2, "heartbeat", "cert-request"); e.what != "heartbeat" {
			t.Fatal("asked again with a fresh certificate")
		}
	}
	if !a.link.Connected() {
		t.Fatal("not connected after the renewal")
	}
}

// A certificate for another node, key or CA is not stored or used.
func TestRotationRefusesBadCertificates(t *testing.T) {
	ca := testpki.NewCA(t, "relay-ca")
	other := testpki.NewCA(t, "other-ca")
	stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tt := range []struct {
		name string
		sign func(csrPEM []byte) ([]byte, error)
		want string
	}{
		{"other node", func(csr []byte) ([]byte, error) {
			return ca.Sign(t, csr, "system:node:gw-2", time.Now(), time.Now().Add(3*time.Hour))
		}, "this node is"},
		{"other CA", func(csr []byte) ([]byte, error) {
			return other.Sign(t, csr, "system:node:gw-1", time.Now(), time.Now().Add(3*time.Hour))
		}, "does not verify"},
		{"shorter", func(csr []byte) ([]byte, error) {
			return ca.Sign(t, csr, "system:node:gw-1", time.Now(), time.Now().Add(time.Minute))
		}, "not after the current one"},
		{"other key", func([]byte) ([]byte, error) {
			der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, stranger)
			return ca.Sign(t, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), "system:node:gw-1", time.Now(), time.Now().Add(3*time.Hour))
		}, "another key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := renewingRelay(t, ca, func(csr []byte) []byte {
				b, err := tt.sign(csr)
				if err != nil {
					t.Error(err)
					return []byte{1}
				}
				p, _ := pem.Decode(b)
				return p.Bytes
			})
			start := time.Now()
			st := &stored{}
			a := startAgent(t, r.srv.URL, ca, ca, start.Add(time.Hour), rotation(newFakeClock(start.Add(17*time.Minute)), st))
			r.waitFor(t, 1, "cert-request")
			eventually(t, "the refusal logged", func() bool {
				return strings.Contains(a.log.String(), "renewed node certificate not used") && strings.Contains(a.log.String(), tt.want)
			})
			r.waitFor(t, 1, "heartbeat") // the link carries on
			st.mu.Lock()
			defer st.mu.Unlock()
			if st.cert != nil || r.conns.Load() != 1 {
				t.Fatalf("stored %q, %d connections", st.cert, r.conns.Load())
			}
		})
	}
}

// A certificate expired within the grace (on the agent's clock) still
// dials, to renew; past the grace the link says to re-join.
func TestExpiredCertificateRenews(t *testing.T) {
	ca := testpki.NewCA(t, "relay-ca")
	r := renewingRelay(t, ca, nil)
	// Only the agent's clock has moved on; the relay's grace is tested in
	// cloud/relay and end to end.
	start := time.Now()
	st := &stored{}
	startAgent(t, r.srv.URL, ca, ca, start.Add(time.Hour), rotation(newFakeClock(start.Add(48*time.Hour)), st))
	r.waitFor(t, 1, "cert-request")
	r.waitFor(t, 2, "hello")

	r2 := renewingRelay(t, ca, nil)
	a := startAgent(t, r2.srv.URL, ca, ca, start.Add(time.Hour), rotation(newFakeClock(start.Add(wire.CertGrace+2*time.Hour)), &stored{}))
	eventually(t, "a re-join line", func() bool { return strings.Contains(a.log.String(), "this node must re-join") })
	if !strings.Contains(a.log.String(), "longer than the 2160h0m0s the relay still renews one") || r2.conns.Load() != 0 {
		t.Fatalf("past the grace: %d connections, log:\n%s", r2.conns.Load(), a.log.String())
	}
}
