package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"outpost.dev/cloud/pki"
	"outpost.dev/cloud/pki/mint"
	"outpost.dev/wire"
)

// TestConnDesigns checks that every design BenchmarkRelayConns measures
// does what the relay needs of it: TLS 1.3 with the client certificate
// verified against the relay CA, a connection without a certificate or
// with one from another CA refused, and heartbeats answered.
func TestConnDesigns(t *testing.T) {
	ca, err := pki.Generate(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.Generate(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	serving, err := ca.ServingCert([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	verify := func(certs []*x509.Certificate) error { return verifyConnCert(ca.Pool(), certs) }
	for _, d := range connDesigns(serving, verify, 16) {
		t.Run(d.name, func(t *testing.T) {
			srv := d.start(t)
			defer srv.close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for _, tc := range []struct {
				name string
				ca   *pki.CA // signs the client certificate; nil: none
				ok   bool
			}{
				{"node certificate", ca, true},
				{"no certificate", nil, false},
				{"another CA's certificate", other, false},
			} {
				t.Run(tc.name, func(t *testing.T) {
					c, err := dialAs(ctx, ca, tc.ca, srv.addr())
					if !tc.ok {
						if err == nil {
							c.CloseNow()
							t.Fatal("connected; want refused")
						}
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					defer c.CloseNow()
					for range 3 {
						if err := c.Write(ctx, websocket.MessageBinary, heartbeatFrame); err != nil {
							t.Fatal(err)
						}
						_, msg, err := c.Read(ctx)
						if err != nil {
							t.Fatal(err)
						}
						if !isHeartbeat(msg) {
							t.Fatalf("answer %x is not a heartbeat", msg)
						}
					}
				})
			}
			connected, echoed, tls13 := srv.stats()
			if echoed != 3 || tls13 < 1 || connected > 1 {
				t.Fatalf("server counted %d connected, %d heartbeats answered, %d TLS 1.3; want at most 1, 3, 1", connected, echoed, tls13)
			}
		})
	}
}

// dialAs connects to addr, trusting root, with a node certificate signed
// by signer (none when nil), TLS 1.3 only.
func dialAs(ctx context.Context, root, signer *pki.CA, addr string) (*websocket.Conn, error) {
	tc := &tls.Config{RootCAs: root.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
	if signer != nil {
		key, err := mint.NewKey()
		if err != nil {
			return nil, err
		}
		cert, err := signer.SignNode(key.Public(), "node-1", time.Hour)
		if err != nil {
			return nil, err
		}
		tc.Certificates = []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}}
	c, _, err := websocket.Dial(ctx, "wss://"+addr+wire.PathConnect, &websocket.DialOptions{HTTPClient: hc})
	return c, err
}
