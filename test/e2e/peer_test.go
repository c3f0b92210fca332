package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	testpeer "outpost.dev/test/peer"
	"outpost.dev/wire"
)

// peer is a protocol-level agent (test/peer) with helpers that fail the
// test on error.
type peer struct {
	*testpeer.Peer
	name string
	ca   *x509.CertPool
}

// joinPeer joins a node by the HTTP join protocol.
func joinPeer(t *testing.T, ctx context.Context, name string) *peer {
	t.Helper()
	p, err := testpeer.Join(ctx, st, relay, name)
	if err != nil {
		t.Fatal(err)
	}
	return &peer{Peer: p, name: name, ca: p.CA}
}

func (p *peer) tlsConfig() *tls.Config { return p.TLSConfig() }

func (p *peer) dial(t *testing.T, ctx context.Context) *websocket.Conn {
	t.Helper()
	c, err := p.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func helloFor(host string) *wire.Hello { return testpeer.Hello(host) }

func send(t *testing.T, ctx context.Context, c *websocket.Conn, typ wire.Type, seq uint64, body wire.Body) {
	t.Helper()
	if err := testpeer.Send(ctx, c, typ, seq, body); err != nil {
		t.Fatal(err)
	}
}

// session connects as p (see testpeer.Peer.Connect) with heartbeats at half
// the relay's interval; the link closes when the test ends.
func (p *peer) session(t *testing.T, ctx context.Context, hello *wire.Hello, handle func(context.Context, wire.Frame) bool) (c *websocket.Conn, cancel context.CancelFunc, done <-chan struct{}) {
	t.Helper()
	s, err := p.Connect(ctx, hello, heartbeatInterval/2, handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Cancel)
	return s.Conn, s.Cancel, s.Done
}

// readUntilClosed reads frames until the relay closes the connection and
// returns the error frames it sent and the close error.
func readUntilClosed(ctx context.Context, c *websocket.Conn) (errs []wire.Error, closeErr error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			return errs, err
		}
		f, err := wire.Decode(b)
		if err != nil {
			return errs, fmt.Errorf("relay sent a bad frame: %v", err)
		}
		if f.Type == wire.TypeError {
			var e wire.Error
			if f.DecodeBody(&e) == nil {
				errs = append(errs, e)
			}
		}
	}
}

func reasons(errs []wire.Error) string {
	var s []string
	for _, e := range errs {
		s = append(s, fmt.Sprintf("%d:%s", e.Code, e.Reason))
	}
	return strings.Join(s, "; ")
}
