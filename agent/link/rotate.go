package link

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"outpost.dev/wire"
)

// Rotation renews the node certificate on the live link (wire.CertRequest).
// Once the certificate has passed At percent of its lifetime, the link
// generates a new key, sends a cert-request and checks the answer (same
// node name, signed by the relay CA the node trusts, for the new key,
// lasting longer); Save stores the new pair durably, and only then does
// the link reconnect with it. The old pair stays in use for any dial the
// new one fails, until a connection with the new one got its hello-ack
// (Connected). A certificate expired less than wire.CertGrace ago still
// dials, for the relay to renew it; one expired longer needs a re-join.
// A renewed certificate already due when it arrives (too short for At, or
// a clock ahead of the relay's) is renewed at most every 10 minutes, not
// on every connection.
type Rotation struct {
	// At is the share of the certificate's lifetime, in percent, after
	// which a new one is asked for; 0 means DefaultRotateAt.
	At int
	// Now is the clock rotation decisions use; nil means time.Now.
	Now func() time.Time
	// Save stores the new key and certificate (PEM) next to the current
	// pair; it must be durable (fsynced) when it returns.
	Save func(keyPEM, certPEM []byte) error
	// Connected is called once a connection with the new pair got its
	// hello-ack: the pair it replaced may be dropped.
	Connected func() error
}

// DefaultRotateAt is Rotation.At's default: a 30-day certificate is
// renewed after 22.5 days, leaving a week for a link that is down.
const DefaultRotateAt = 75

// Rotation timing. The wall clock (Rotation.Now) says when a certificate
// is due; it may jump either way (NTP, a board without a real-time clock
// setting it late), so the link looks at it again at least every
// renewRecheck rather than arming a timer for the due time once. How long
// a cert-request has been waiting is elapsed time, on the monotonic clock:
// a jump neither re-sends one in flight nor defers a retry.
const (
	// retryRotation is how long the link waits after a cert-request
	// before it asks again on the same connection (no answer, the relay
	// refused, or its answer was not usable).
	retryRotation = 10 * time.Minute
	// renewRecheck bounds the time between renewal checks on a
	// connection whose heartbeat interval is longer.
	renewRecheck = time.Minute
)

// errRotated ends a connection after the renewed pair was saved, so the
// next one uses it at once.
var errRotated = errors.New("node certificate renewed; connecting with it")

// RotationDue says whether a certificate valid from notBefore to notAfter
// is due for renewal at now, past at percent of its lifetime.
func RotationDue(notBefore, notAfter, now time.Time, at int) bool {
	if at <= 0 || at >= 100 {
		at = DefaultRotateAt
	}
	life := notAfter.Sub(notBefore)
	return !now.Before(notBefore.Add(life / 100 * time.Duration(at)))
}

// identity is the link's key pairs: the one in use and a renewed one that
// has not connected yet.
type identity struct {
	cur, next *tls.Certificate
	// skipNext makes the next dial use cur after one with next failed;
	// the pairs take turns until next connects.
	skipNext bool
	// pending is the key of the cert-request in flight; asked is when
	// this connection last sent one (time.Now, for its monotonic
	// reading), answered or not: the next waits retryRotation.
	pending *ecdsa.PrivateKey
	asked   time.Time
	// nextDue says next was due for renewal when it arrived (the relay
	// issues certificates too short for At, or this clock is ahead of
	// the relay's). Such a pair, once in use since dueSince (time.Now),
	// is renewed at most every retryRotation, not on every connection.
	nextDue  bool
	dueSince time.Time
}

func (l *Link) now() time.Time {
	if r := l.cfg.Rotation; r != nil && r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// pick chooses the pair for the next dial.
func (l *Link) pick() (pair *tls.Certificate, isNext bool) {
	l.idMu.Lock()
	defer l.idMu.Unlock()
	l.id.pending, l.id.asked = nil, time.Time{} // a request is per connection
	if l.id.next != nil && !l.id.skipNext {
		return l.id.next, true
	}
	l.id.skipNext = false
	return l.id.cur, false
}

// connectedWith records the outcome of a dial with pair isNext.
func (l *Link) connectedWith(isNext, ok bool) {
	if !isNext {
		return
	}
	l.idMu.Lock()
	if !ok {
		l.id.skipNext = true
		l.idMu.Unlock()
		return
	}
	l.id.cur, l.id.next = l.id.next, nil
	l.id.dueSince = time.Time{}
	if l.id.nextDue {
		l.id.dueSince = time.Now()
	}
	notAfter := l.id.cur.Leaf.NotAfter
	l.idMu.Unlock()
	l.log.Info("connected with the renewed node certificate", "not_after", notAfter.UTC().Format(time.RFC3339))
	if err := l.cfg.Rotation.Connected(); err != nil {
		l.log.Warn("the replaced node certificate is still stored; dropped at the next start", "err", err)
	}
}

// certRequest returns a cert-request frame when the certificate in use is
// due for renewal and none is in flight, nil otherwise.
func (l *Link) certRequest() []byte {
	r := l.cfg.Rotation
	if r == nil {
		return nil
	}
	now := l.now()
	l.idMu.Lock()
	defer l.idMu.Unlock()
	leaf := l.id.cur.Leaf
	if l.id.next != nil || (!l.id.asked.IsZero() && time.Since(l.id.asked) < l.retryRotation) ||
		(!l.id.dueSince.IsZero() && time.Since(l.id.dueSince) < l.retryRotation) ||
		!RotationDue(leaf.NotBefore, leaf.NotAfter, now, r.At) {
		return nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		l.log.Error("cannot generate a key to renew the node certificate", "err", err)
		return nil
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: leaf.Subject}, key)
	if err != nil {
		l.log.Error("cannot build the request to renew the node certificate", "err", err)
		return nil
	}
	b, err := wire.Encode(wire.TypeCertRequest, 0, &wire.CertRequest{CSR: csr})
	if err != nil {
		l.log.Error("cannot encode the cert-request", "err", err)
		return nil
	}
	l.id.pending, l.id.asked = key, time.Now()
	l.log.Info("renewing the node certificate", "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	return b
}

// certIssued checks and stores the answer to the cert-request in flight.
// nil means the new pair is saved and the link should reconnect with it.
func (l *Link) certIssued(f wire.Frame) error {
	var ci wire.CertIssued
	if err := f.DecodeBody(&ci); err != nil {
		return err
	}
	l.idMu.Lock()
	defer l.idMu.Unlock()
	key := l.id.pending
	if key == nil {
		return errors.New("cert-issued without a cert-request in flight; ignored")
	}
	l.id.pending = nil
	cert, err := checkIssued(ci.Certificate, key, l.id.cur.Leaf, l.roots)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	if err := l.cfg.Rotation.Save(keyPEM, certPEM); err != nil {
		return fmt.Errorf("renewed node certificate not stored, so not used (%w): check the state directory", err)
	}
	l.id.next = &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
	l.id.skipNext = false
	l.id.nextDue = RotationDue(cert.NotBefore, cert.NotAfter, l.now(), l.cfg.Rotation.At)
	if l.id.nextDue {
		l.log.Warn("the renewed node certificate is due for renewal already; it is renewed at most every "+l.retryRotation.String(),
			"not_before", cert.NotBefore.UTC().Format(time.RFC3339), "not_after", cert.NotAfter.UTC().Format(time.RFC3339),
			"fix", "raise the relay's --node-cert-validity or this agent's certRotateAt, or check this gateway's clock (NTP)")
	}
	return nil
}

// checkIssued verifies a renewed certificate against the one it replaces:
// for key, the same node, signed by a CA in roots for client
// authentication, and lasting longer. The chain is checked as of the new
// certificate's start, so a wrong clock here does not throw it away.
func checkIssued(der []byte, key *ecdsa.PrivateKey, cur *x509.Certificate, roots *x509.CertPool) (*x509.Certificate, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("relay sent an unreadable certificate: %w", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("relay sent a certificate for another key")
	}
	if cert.Subject.CommonName != cur.Subject.CommonName {
		return nil, fmt.Errorf("relay sent a certificate for %q, this node is %q", cert.Subject.CommonName, cur.Subject.CommonName)
	}
	if !cert.NotAfter.After(cur.NotAfter) {
		return nil, fmt.Errorf("relay sent a certificate ending %s, not after the current one (%s)", cert.NotAfter.UTC().Format(time.RFC3339), cur.NotAfter.UTC().Format(time.RFC3339))
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots: roots, CurrentTime: cert.NotBefore.Add(time.Second),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, fmt.Errorf("relay sent a certificate that does not verify against the relay CA: %w", err)
	}
	return cert, nil
}
