package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"outpost.dev/wire"
)

// peer is a protocol-level agent written from the wire package alone, so
// tests can send what a real agent never would.
type peer struct {
	name string
	cert tls.Certificate
	ca   *x509.CertPool
}

// joinPeer joins a node by the HTTP join protocol, checking the relay's CA
// signature as the agent does.
func joinPeer(t *testing.T, ctx context.Context, name string) *peer {
	t.Helper()
	tok, err := st.CreateToken(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, secret, err := wire.ParseToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	insecure := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := insecure.Get(relay.URL + wire.PathJoinCA + "?token-id=" + id)
	if err != nil {
		t.Fatal(err)
	}
	var jca wire.JoinCA
	err = json.NewDecoder(io.LimitReader(resp.Body, wire.MaxJoinBody)).Decode(&jca)
	resp.Body.Close()
	if err != nil || !wire.CheckCASignature(secret, []byte(jca.CA), jca.Signature) {
		t.Fatalf("join CA: %v (signature ok: %v)", err, err == nil)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(jca.CA))

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(wire.JoinRequest{NodeName: name, CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))})
	req, _ := http.NewRequestWithContext(ctx, "POST", relay.URL+wire.PathJoin, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	verified := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err = verified.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		t.Fatalf("join %s: %s: %s", name, resp.Status, b)
	}
	var jr wire.JoinResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, wire.MaxJoinBody)).Decode(&jr); err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	cert, err := tls.X509KeyPair([]byte(jr.Certificate), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	return &peer{name: name, cert: cert, ca: pool}
}

func (p *peer) tlsConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.cert}, RootCAs: p.ca, ServerName: "127.0.0.1"}
}

func (p *peer) dial(t *testing.T, ctx context.Context) *websocket.Conn {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: p.tlsConfig()}}
	c, _, err := websocket.Dial(ctx, "wss://"+relay.Addr+wire.PathConnect, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatalf("dial as %s: %v", p.name, err)
	}
	c.SetReadLimit(wire.MaxFrameSize)
	return c
}

func helloFor(host string) *wire.Hello {
	return &wire.Hello{
		MinVersion: wire.ProtocolMin, MaxVersion: wire.ProtocolMax, AgentVersion: "v0.0.0-peer",
		Node: wire.NodeInfo{
			Arch: "arm64", OS: "linux", Board: "sim", Hostname: host, MachineID: "peer-" + host,
			Addresses:   []wire.Address{{Type: "InternalIP", Address: "192.0.2.99"}},
			Capacity:    wire.Resources{CPUMillis: 1000, MemoryBytes: 1 << 30, Pods: 10},
			Allocatable: wire.Resources{CPUMillis: 900, MemoryBytes: 1<<30 - 64<<20, Pods: 10},
		},
	}
}

func send(t *testing.T, ctx context.Context, c *websocket.Conn, typ wire.Type, seq uint64, body wire.Body) {
	t.Helper()
	b, err := wire.Encode(typ, seq, body)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Write(ctx, websocket.MessageBinary, b); err != nil {
		t.Fatal(err)
	}
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

// session connects as p, sends hello and waits for the hello-ack, then
// keeps the link alive with heartbeats and passes every later frame to
// handle, from one reader goroutine, until handle returns false or the
// connection ends. The returned cancel stops both goroutines; the returned
// done is closed when the reader has returned.
func (p *peer) session(t *testing.T, ctx context.Context, hello *wire.Hello, handle func(context.Context, wire.Frame) bool) (c *websocket.Conn, cancel context.CancelFunc, done <-chan struct{}) {
	t.Helper()
	c = p.dial(t, ctx)
	send(t, ctx, c, wire.TypeHello, 0, hello)
	ctx, cancel = context.WithCancel(ctx)
	t.Cleanup(func() { cancel(); c.CloseNow() })
	acked := make(chan error, 1)
	readerDone := make(chan struct{})
	go func() { // the only reader of c
		defer close(readerDone)
		first := true
		for {
			_, b, err := c.Read(ctx)
			if err == nil && first {
				var f wire.Frame
				if f, err = wire.Decode(b); err == nil && f.Type != wire.TypeHelloAck {
					err = fmt.Errorf("first frame %s, want hello-ack", f.Type)
				}
			}
			if first {
				first = false
				acked <- err
				if err != nil {
					return
				}
				continue
			}
			if err != nil {
				return
			}
			f, err := wire.Decode(b)
			if err != nil || !handle(ctx, f) {
				return
			}
		}
	}()
	go func() { // heartbeats, so the relay keeps the connection
		tick := time.NewTicker(heartbeatInterval / 2)
		defer tick.Stop()
		hb, _ := wire.Encode(wire.TypeHeartbeat, 0, nil)
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if c.Write(ctx, websocket.MessageBinary, hb) != nil {
					return
				}
			}
		}
	}()
	select {
	case err := <-acked:
		if err != nil {
			t.Fatalf("hello as %s: %v", p.name, err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("hello as %s: no hello-ack", p.name)
	}
	return c, cancel, readerDone
}
