// Package peer is a protocol-level edge agent written from the wire package
// alone: it joins through the relay's HTTP join protocol and speaks frames
// on the WebSocket link, so end-to-end tests can send what a real agent
// never would and watch exactly what the relay sends a node.
package peer

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
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/coder/websocket"

	"outpost.dev/test/stack"
	"outpost.dev/wire"
)

// Peer is a joined node: its client certificate and the relay's CA.
type Peer struct {
	Name string
	Cert tls.Certificate
	CA   *x509.CertPool
	// Addr is the relay's host:port.
	Addr string
}

// Join joins node name through relay r with a new bootstrap token, checking
// the relay's CA signature as the agent does; the relay is allowed to act
// as name first (stack.AllowNode).
func Join(ctx context.Context, s *stack.Stack, r *stack.Relay, name string) (*Peer, error) {
	if err := s.AllowNode(ctx, name); err != nil {
		return nil, err
	}
	tok, err := s.CreateToken(ctx, time.Hour)
	if err != nil {
		return nil, err
	}
	return JoinWithToken(ctx, r, name, tok)
}

// JoinError is a join the relay refused: its HTTP status and reason.
type JoinError struct {
	Status int
	Reason string
}

func (e *JoinError) Error() string {
	return fmt.Sprintf("join refused: HTTP %d: %s", e.Status, e.Reason)
}

// JoinWithToken joins node name through relay r with token tok. A refusal
// is a *JoinError.
func JoinWithToken(ctx context.Context, r *stack.Relay, name, tok string) (*Peer, error) {
	id, secret, err := wire.ParseToken(tok)
	if err != nil {
		return nil, err
	}
	insecure := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := insecure.Get(r.URL + wire.PathJoinCA + "?token-id=" + id)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		defer resp.Body.Close()
		return nil, joinError(resp)
	}
	var jca wire.JoinCA
	err = json.NewDecoder(io.LimitReader(resp.Body, wire.MaxJoinBody)).Decode(&jca)
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("join CA: %w", err)
	}
	if !wire.CheckCASignature(secret, []byte(jca.CA), jca.Signature) {
		return nil, errors.New("join CA: bad signature")
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(jca.CA))

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(wire.JoinRequest{NodeName: name, CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))})
	req, _ := http.NewRequestWithContext(ctx, "POST", r.URL+wire.PathJoin, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	verified := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err = verified.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, joinError(resp)
	}
	var jr wire.JoinResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, wire.MaxJoinBody)).Decode(&jr); err != nil {
		return nil, err
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	cert, err := tls.X509KeyPair([]byte(jr.Certificate), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		return nil, err
	}
	return &Peer{Name: name, Cert: cert, CA: pool, Addr: r.Addr}, nil
}

func joinError(resp *http.Response) *JoinError {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var je wire.JoinError
	if json.Unmarshal(b, &je) != nil {
		je.Reason = string(b)
	}
	return &JoinError{Status: resp.StatusCode, Reason: je.Reason}
}

// TLSConfig presents the peer's certificate and trusts the relay's CA.
func (p *Peer) TLSConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.Cert}, RootCAs: p.CA, ServerName: "127.0.0.1"}
}

// Dial opens the link, with the frame size limit the agent uses.
func (p *Peer) Dial(ctx context.Context) (*websocket.Conn, error) {
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: p.TLSConfig()}}
	c, _, err := websocket.Dial(ctx, "wss://"+p.Addr+wire.PathConnect, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		return nil, fmt.Errorf("dial as %s: %w", p.Name, err)
	}
	c.SetReadLimit(wire.MaxFrameSize)
	return c, nil
}

// Hello is a plausible hello from a sim-board gateway named host.
func Hello(host string) *wire.Hello {
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

// Send writes one frame.
func Send(ctx context.Context, c *websocket.Conn, typ wire.Type, seq uint64, body wire.Body) error {
	b, err := wire.Encode(typ, seq, body)
	if err != nil {
		return err
	}
	return c.Write(ctx, websocket.MessageBinary, b)
}

// Session is a link after the hello-ack.
type Session struct {
	Conn *websocket.Conn
	// Cancel stops the reader and the heartbeats and closes the link.
	Cancel context.CancelFunc
	// Done is closed when the reader has returned.
	Done <-chan struct{}
}

// Connect dials, sends hello and waits for the hello-ack; then it sends a
// heartbeat every heartbeat and passes every later frame to handle, from
// one reader goroutine, until handle returns false or the link ends.
func (p *Peer) Connect(ctx context.Context, hello *wire.Hello, heartbeat time.Duration, handle func(context.Context, wire.Frame) bool) (*Session, error) {
	c, err := p.Dial(ctx)
	if err != nil {
		return nil, err
	}
	if err := Send(ctx, c, wire.TypeHello, 0, hello); err != nil {
		c.CloseNow()
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := func() { cancel(); c.CloseNow() }
	acked := make(chan error, 1)
	done := make(chan struct{})
	go func() { // the only reader of c
		defer close(done)
		_, b, err := c.Read(ctx)
		if err == nil {
			var f wire.Frame
			if f, err = wire.Decode(b); err == nil && f.Type != wire.TypeHelloAck {
				err = fmt.Errorf("first frame %s, want hello-ack", f.Type)
			}
		}
		acked <- err
		if err != nil {
			return
		}
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			f, err := wire.Decode(b)
			if err != nil || !handle(ctx, f) {
				return
			}
		}
	}()
	go Heartbeat(ctx, c, heartbeat) // so the relay keeps the link
	select {
	case err := <-acked:
		if err != nil {
			stop()
			return nil, fmt.Errorf("hello as %s: %w", p.Name, err)
		}
	case <-time.After(15 * time.Second):
		stop()
		return nil, fmt.Errorf("hello as %s: no hello-ack within 15s", p.Name)
	}
	return &Session{Conn: c, Cancel: stop, Done: done}, nil
}

// Heartbeat sends a heartbeat on c every interval until ctx ends or a
// write fails: what keeps a protocol-level agent's link open.
func Heartbeat(ctx context.Context, c *websocket.Conn, every time.Duration) {
	tick := time.NewTicker(every)
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
}
