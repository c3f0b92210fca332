package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"

	"outpost.dev/cloud/identity"
	"outpost.dev/cloud/pki"
	"outpost.dev/wire"
)

// Rotation limits, per connection: one request at a time, and at most
// maxRotations per rotationWindow. A legitimate agent rotates once per
// lifetime; the rest is a broken or hostile one.
const (
	maxRotations   = 3
	rotationWindow = time.Hour
	// expiredWithin bounds how long a connection with an expired
	// certificate may take to ask for its new one.
	expiredWithin = 30 * time.Second
)

// verifyNode checks a client certificate chain against the relay CA the
// way the TLS stack would (client authentication, the CA's pool), except
// that a certificate expired less than wire.CertGrace ago verifies as of
// its NotAfter and is reported expired: its connection may only rotate.
// No certificate at all passes (the join endpoints need none; the connect
// endpoint refuses it).
func (s *Server) verifyNode(certs []*x509.Certificate, now time.Time) (chain []*x509.Certificate, expired bool, err error) {
	if len(certs) == 0 {
		return nil, false, nil
	}
	opts := x509.VerifyOptions{
		Roots:         s.cfg.CA.Pool(),
		Intermediates: x509.NewCertPool(),
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	leaf := certs[0]
	if now.After(leaf.NotAfter) {
		if now.Sub(leaf.NotAfter) > wire.CertGrace {
			return nil, false, fmt.Errorf("node certificate %s expired at %s, over %s ago: %s", identity.Serial(leaf),
				leaf.NotAfter.UTC().Format(time.RFC3339), wire.CertGrace, identity.RejoinHint(leaf.Subject.CommonName))
		}
		opts.CurrentTime, expired = leaf.NotAfter, true
	}
	chains, err := leaf.Verify(opts)
	if err != nil {
		return nil, false, err
	}
	// The grace is the leaf's only: the CAs must be valid now.
	for _, ca := range chains[0][1:] {
		if now.Before(ca.NotBefore) || now.After(ca.NotAfter) {
			return nil, false, fmt.Errorf("the CA %q of this node certificate is not valid now", ca.Subject.CommonName)
		}
	}
	return chains[0], expired, nil
}

// rotation is a connection's certificate rotation state.
type rotation struct {
	mu          sync.Mutex
	outstanding bool
	recent      []time.Time
}

// begin reserves the connection's one outstanding request, or says why not.
func (r *rotation) begin(now time.Time) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.outstanding {
		return "a cert-request is already being answered on this connection; wait for its cert-issued"
	}
	kept := r.recent[:0]
	for _, t := range r.recent {
		if now.Sub(t) < rotationWindow {
			kept = append(kept, t)
		}
	}
	r.recent = kept
	if len(r.recent) >= maxRotations {
		return fmt.Sprintf("%d cert-requests within %s on this connection: try again later", maxRotations, rotationWindow)
	}
	r.outstanding = true
	r.recent = append(r.recent, now)
	return ""
}

func (r *rotation) end() {
	r.mu.Lock()
	r.outstanding = false
	r.mu.Unlock()
}

// certRequest answers a cert-request frame: refused at once (a non-fatal
// error) or signed by rotate on a goroutine of its own, which exists only
// while it signs (one request at a time per connection: rotation.begin).
// With renewThenClose (an expired certificate, serveExpired) reading is
// paused meanwhile and the connection closes once the certificate is
// sent.
func (c *conn) certRequest(f wire.Frame, renewThenClose bool) {
	var req wire.CertRequest
	if err := f.DecodeBody(&req); err != nil {
		c.fatalDecode(err)
		return
	}
	if why := c.rot.begin(time.Now()); why != "" {
		c.log.Warn("cert-request refused", "reason", why)
		c.sendError(wire.CodeProtocol, why, false)
		return
	}
	if renewThenClose {
		c.offload(func() bool {
			if c.rotate(c.s.ctx, req.CSR) {
				c.close(closeNormal, "certificate renewed: connect with it")
				return false
			}
			return true
		})
		return
	}
	c.spawn(func() { c.rotate(c.s.ctx, req.CSR) })
}

// rotate signs csr for the connection's node, records the new serial next
// to the current one and sends it. It reports whether the certificate
// was sent.
func (c *conn) rotate(ctx context.Context, csrDER []byte) bool {
	cert, err := c.s.signRotation(ctx, c.node, c.serial, csrDER)
	// The request is answered once its outcome is known: released before
	// the answer is sent, so an agent that asks again on reading the
	// answer is never told that one is still outstanding.
	c.rot.end()
	if err != nil {
		c.log.Warn("cert-request refused", "err", err)
		c.sendError(wire.CodeForbidden, "cert-request refused: "+err.Error(), false)
		return false
	}
	c.s.metrics.rotations.Inc()
	c.log.Info("node certificate rotated", "serial", identity.Serial(cert), "not_after", cert.NotAfter.UTC().Format(time.RFC3339))
	return c.send(wire.TypeCertIssued, &wire.CertIssued{Certificate: cert.Raw})
}

// signRotation checks a rotation CSR (with the join's parser), signs it
// for node (the connection's certificate's name: a CSR naming another node
// is refused) and records the new serial next to current.
func (s *Server) signRotation(ctx context.Context, node, current string, csrDER []byte) (*x509.Certificate, error) {
	csr, err := pki.ParseCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}))
	if err != nil {
		return nil, err
	}
	// The name is the connection's; a request naming another node is a
	// confused or hostile agent, not something to sign around.
	if cn := csr.Subject.CommonName; cn != "" && cn != node && cn != "system:node:"+node {
		return nil, fmt.Errorf("csr names %q, but this connection is node %s: a node renews only its own certificate", cn, node)
	}
	cert, err := s.cfg.CA.SignNode(csr.PublicKey, node, s.cfg.NodeCertValidity)
	if err != nil {
		return nil, err
	}
	if err := s.ids.AddSerial(ctx, node, current, identity.Serial(cert)); err != nil {
		if errors.Is(err, identity.ErrNotAccepted) {
			return nil, fmt.Errorf("this certificate of node %s is no longer accepted: %s", node, identity.RejoinHint(node))
		}
		return nil, errors.New("relay cannot record the new certificate; it asks again later")
	}
	return cert, nil
}

// serveExpired serves a connection whose certificate expired within the
// grace: after the hello-ack it answers heartbeats and one cert-request,
// acts on nothing else (durable reports are not acked, so the agent keeps
// them), and closes once the new certificate is sent, for the agent to
// connect with it (expiredFrame).
func (c *conn) serveExpired(version uint16) {
	c.log.Warn("node certificate expired; this connection may only rotate it")
	c.state.Store(stateExpired)
	if !c.send(wire.TypeHelloAck, &wire.HelloAck{
		Version: version, NodeName: c.node,
		HeartbeatSeconds: uint32(c.s.cfg.HeartbeatInterval / time.Second), RelayVersion: c.s.cfg.Version,
	}) {
		return
	}
	expiry := time.AfterFunc(max(expiredWithin, c.s.cfg.HelloTimeout), func() {
		c.fatal(wire.CodeForbidden, "node certificate expired and no cert-request came: an agent that rotates certificates connects again", CloseRevoked)
	})
	c.onEnd(func() { expiry.Stop() })
}

// expiredFrame handles a frame of a connection whose certificate expired.
func (c *conn) expiredFrame(f wire.Frame) {
	switch f.Type {
	case wire.TypeCertRequest:
		c.certRequest(f, true)
	case wire.TypeHeartbeat:
		c.send(wire.TypeHeartbeat, nil)
	case wire.TypeError:
		c.close(closeNormal, "agent reported an error")
	default:
		c.log.Debug("frame ignored: the certificate expired, only a cert-request is answered", "type", f.Type)
	}
}

// tlsVerify is the TLS configuration's VerifyConnection: a client
// certificate, if given, must verify against the relay CA (verifyNode).
func (s *Server) tlsVerify(cs tls.ConnectionState) error {
	_, _, err := s.verifyNode(cs.PeerCertificates, time.Now())
	return err
}
