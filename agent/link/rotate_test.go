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

	"github.com/coder/websocket"

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

// fakeClock is the clock a Rotation decides with; reads counts its
// readings.
type fakeClock struct{ ns, reads atomic.Int64 }

func (c *fakeClock) now() time.Time       { c.reads.Add(1); return time.Unix(0, c.ns.Load()) }
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
	return rotatingRelay(t, ca, 2, sign, nil)
}

// reply is what rotatingRelay does with a cert-request.
type reply int

const (
	replySign   reply = iota // answer with a certificate
	replyIgnore              // never answer
	replyClose               // drop the connection
)

// rotatingRelay is renewingRelay with a heartbeat of hb units, doing with
// each cert-request on connection n what replyOn(n) says (nil: sign).
func rotatingRelay(t *testing.T, ca *testpki.CA, hb uint32, sign func(csrPEM []byte) []byte, replyOn func(conn int) reply) *relay {
	if replyOn == nil {
		replyOn = func(int) reply { return replySign }
	}
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
		p.ack(hb)
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
				switch replyOn(p.n) {
				case replyIgnore:
					continue
				case replyClose:
					p.c.Close(websocket.StatusGoingAway, "relay going away")
					continue // the read fails: "closed"
				}
				p.send(wire.TypeCertIssued, 0, &wire.CertIssued{Certificate: sign(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: req.CSR}))})
			}
		}
	})
	return r
}

func rotation(clock *fakeClock, st *stored) func(c *Config, _ *Handlers) {
	return func(c *Config, _ *Handlers) {
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
			// The link carries on, without asking again at once.
			for range 3 {
				if e := r.waitForAny(t, 1, "heartbeat", "cert-request"); e.what != "heartbeat" {
					t.Fatal("asked again right after a refused answer")
				}
			}
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

// The wall clock jumping past the renewal point is noticed within
// renewRecheck even on a link whose heartbeats are far apart: renewal is
// not a timer armed once for the due time.
func TestRotationAfterForwardClockJump(t *testing.T) {
	ca := testpki.NewCA(t, "relay-ca")
	r := rotatingRelay(t, ca, 3600, nil, nil) // heartbeats 72 s apart
	start := time.Now()
	clock := newFakeClock(start)
	st := &stored{}
	startTunedAgent(t, r.srv.URL, ca, ca, start.Add(time.Hour), rotation(clock, st),
		func(l *Link) { l.renewRecheck = 20 * time.Millisecond })
	first := r.waitFor(t, 1, "hello")
	// Read before the dial and by the check as the connection is up.
	eventually(t, "the renewal check on connecting", func() bool { return clock.reads.Load() >= 2 })
	clock.set(start.Add(17 * time.Minute)) // past 75 % of 3h1m
	if e := r.waitForAny(t, 1, "heartbeat", "cert-request"); e.what != "cert-request" {
		t.Fatalf("%s before a cert-request after the clock jumped past the renewal point", e.what)
	}
	second := r.waitFor(t, 2, "hello")
	if second.leaf.SerialNumber.Cmp(first.leaf.SerialNumber) == 0 {
		t.Fatal("reconnected with the old certificate")
	}
}

// The clock jumping past the certificate's end (within the grace) on a
// live link: the link asks at once; when that connection is lost before
// the answer, the next one dials with the expired certificate, asks as
// soon as it is up and reconnects with the renewed one.
func TestRotationAfterClockJumpPastExpiry(t *testing.T) {
	ca := testpki.NewCA(t, "relay-ca")
	r := rotatingRelay(t, ca, 2, nil, func(conn int) reply {
		if conn == 1 {
			return replyClose
		}
		return replySign
	})
	start := time.Now()
	clock := newFakeClock(start)
	st := &stored{}
	startAgent(t, r.srv.URL, ca, ca, start.Add(time.Hour), rotation(clock, st))
	first := r.waitFor(t, 1, "hello")
	for range 3 {
		if e := r.waitForAny(t, 1, "heartbeat", "cert-request"); e.what != "heartbeat" {
			t.Fatal("cert-request before the clock jumped")
		}
	}
	clock.set(start.Add(2 * time.Hour)) // expired an hour ago
	r.waitFor(t, 1, "cert-request")
	r.waitFor(t, 1, "closed")
	second := r.waitFor(t, 2, "hello")
	if second.leaf.SerialNumber.Cmp(first.leaf.SerialNumber) != 0 {
		t.Fatal("the second connection did not present the expired certificate")
	}
	if e := r.waitForAny(t, 2, "heartbeat", "cert-request"); e.what != "cert-request" {
		t.Fatal("connected with an expired certificate and sent a heartbeat before asking to renew it")
	}
	third := r.waitFor(t, 3, "hello")
	if third.leaf.SerialNumber.Cmp(first.leaf.SerialNumber) == 0 || !third.leaf.NotAfter.After(clock.now()) {
		t.Fatalf("third connection presented %s until %s", third.leaf.SerialNumber, third.leaf.NotAfter)
	}
	eventually(t, "the renewed pair reported connected", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.connected == 1
	})
}

// The clock jumping back (before the certificate's start) neither renews
// nor reconnects, with the old certificate or a renewed one; jumping
// forward again past the renewal point renews promptly: nothing stale was
// kept from the jump back.
func TestRotationAfterBackwardClockJump(t *testing.T) {
	ca := testpki.NewCA(t, "relay-ca")
	r := renewingRelay(t, ca, nil)
	start := time.Now()
	clock := newFakeClock(start)
	st := &stored{}
	a := startAgent(t, r.srv.URL, ca, ca, start.Add(time.Hour), rotation(clock, st))
	first := r.waitFor(t, 1, "hello")
	clock.set(start.Add(-30 * 24 * time.Hour))
	for range 3 {
		if e := r.waitForAny(t, 1, "heartbeat", "cert-request"); e.what != "heartbeat" {
			t.Fatal("cert-request after the clock went back")
		}
	}
	clock.set(start.Add(17 * time.Minute))
	if e := r.waitForAny(t, 1, "heartbeat", "cert-request"); e.what != "cert-request" {
		// One heartbeat may already be on its way; the next check asks.
		r.waitForAny(t, 1, "cert-request")
	}
	second := r.waitFor(t, 2, "hello")
	if second.leaf.SerialNumber.Cmp(first.leaf.SerialNumber) == 0 {
		t.Fatal("reconnected with the old certificate")
	}
	clock.set(start.Add(-30 * 24 * time.Hour)) // before the renewed one's start too
	for range 3 {
		if e := r.waitForAny(t, 2, "heartbeat", "cert-request"); e.what != "heartbeat" {
			t.Fatal("cert-request for the renewed certificate after the clock went back")
		}
	}
	if n := r.conns.Load(); n != 2 || !a.link.Connected() {
		t.Fatalf("%d connections, connected %v: the link reconnected after the clock went back", n, a.link.Connected())
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.connected != 1 {
		t.Fatalf("renewed pair reported connected %d times", st.connected)
	}
}

// A cert-request in flight is asked again only after retryRotation of
// elapsed time, whatever the wall clock does: a jump forward does not
// send a second one at once, a jump back to before the first does not
// put the retry off until the clock catches up.
func TestRotationRetryIgnoresClockJumps(t *testing.T) {
	const retry = time.Second
	ca := testpki.NewCA(t, "relay-ca")
	var asked atomic.Int32
	// Heartbeats 200 ms apart: the test lasts a few seconds, and a loaded
	// machine must not make the link look dead meanwhile.
	r := rotatingRelay(t, ca, 10, nil, func(int) reply {
		if asked.Add(1) <= 2 {
			return replyIgnore
		}
		return replySign
	})
	start := time.Now()
	// The certificate ended at start+1h: due all along, within the grace.
	clock := newFakeClock(start.Add(5 * time.Hour))
	st := &stored{}
	startTunedAgent(t, r.srv.URL, ca, ca, start.Add(time.Hour), rotation(clock, st),
		func(l *Link) { l.retryRotation = retry })
	first := r.waitFor(t, 1, "hello")
	q1 := r.waitFor(t, 1, "cert-request")
	clock.set(start.Add(29 * time.Hour))
	q2 := r.waitFor(t, 1, "cert-request")
	if gap := q2.at.Sub(q1.at); gap < retry/2 {
		t.Fatalf("asked again %s after the clock jumped forward; the retry is %s", gap, retry)
	}
	clock.set(start.Add(90 * time.Minute)) // before both requests, still due
	q3 := r.waitFor(t, 1, "cert-request")
	if gap := q3.at.Sub(q2.at); gap < retry/2 {
		t.Fatalf("asked again %s after the clock jumped back; the retry is %s", gap, retry)
	}
	second := r.waitFor(t, 2, "hello")
	if second.leaf.SerialNumber.Cmp(first.leaf.SerialNumber) == 0 {
		t.Fatal("reconnected with the old certificate")
	}
}

// A renewed certificate that is due for renewal the moment it arrives is
// used, with a warning, and not renewed again on the new connection: the
// link does not reconnect in a loop.
func TestRotationOfCertificateDueOnArrival(t *testing.T) {
	ca := testpki.NewCA(t, "relay-ca")
	start := time.Now()
	r := renewingRelay(t, ca, func(csrPEM []byte) []byte {
		// Due at start+32m: the clock says start+50m.
		b, err := ca.Sign(t, csrPEM, "system:node:gw-1", start.Add(-55*time.Minute), start.Add(time.Hour+time.Minute))
		if err != nil {
			t.Error(err)
		}
		p, _ := pem.Decode(b)
		return p.Bytes
	})
	clock := newFakeClock(start.Add(50 * time.Minute))
	st := &stored{}
	a := startAgent(t, r.srv.URL, ca, ca, start.Add(time.Hour), rotation(clock, st))
	first := r.waitFor(t, 1, "hello")
	r.waitFor(t, 1, "cert-request")
	second := r.waitFor(t, 2, "hello")
	if second.leaf.SerialNumber.Cmp(first.leaf.SerialNumber) == 0 {
		t.Fatal("reconnected with the old certificate")
	}
	for range 5 {
		if e := r.waitForAny(t, 2, "heartbeat", "cert-request"); e.what != "heartbeat" {
			t.Fatal("asked to renew the certificate it just got")
		}
	}
	if n := r.conns.Load(); n != 2 {
		t.Fatalf("%d connections", n)
	}
	if !strings.Contains(a.log.String(), "due for renewal already") {
		t.Fatalf("no warning:\n%s", a.log.String())
	}
}
