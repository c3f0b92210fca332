package link

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/coder/websocket"

	"outpost.dev/agent/internal/testpki"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

// event is something the test relay saw on connection conn.
type event struct {
	conn  int
	what  string // hello, heartbeat, frame, closed
	frame wire.Frame
	hello wire.Hello
	cn    string
	leaf  *x509.Certificate // the client certificate of the connection
	close websocket.StatusCode
	at    time.Time // when the relay saw it
}

// relay is a protocol-level peer: it accepts the agent's WebSocket over
// mTLS and plays the relay's side of the wire protocol as script says.
type relay struct {
	srv    *httptest.Server
	conns  atomic.Int32
	events chan event
	script func(p *peer)
	// busy is how many more connect requests are answered 503 with
	// Retry-After: 1; requests records when each connect request came.
	busy     atomic.Int32
	mu       sync.Mutex
	requests []time.Time
}

type peer struct {
	n      int
	c      *websocket.Conn
	r      *relay
	ctx    context.Context
	closed bool
}

func newRelay(t *testing.T, ca *testpki.CA, script func(p *peer)) *relay {
	r := &relay{events: make(chan event, 1000), script: script}
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != wire.PathConnect {
			http.NotFound(w, req)
			return
		}
		r.mu.Lock()
		r.requests = append(r.requests, time.Now())
		r.mu.Unlock()
		if r.busy.Add(-1) >= 0 {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		c, err := websocket.Accept(w, req, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(wire.MaxFrameSize)
		p := &peer{n: int(r.conns.Add(1)), c: c, r: r, ctx: req.Context()}
		f, err := p.read()
		if err != nil || f.Type != wire.TypeHello {
			r.emit(event{conn: p.n, what: fmt.Sprintf("bad hello: %v %v", f.Type, err)})
			return
		}
		var h wire.Hello
		if err := f.DecodeBody(&h); err != nil {
			r.emit(event{conn: p.n, what: "bad hello body: " + err.Error()})
			return
		}
		r.emit(event{conn: p.n, what: "hello", hello: h, cn: req.TLS.PeerCertificates[0].Subject.CommonName, leaf: req.TLS.PeerCertificates[0]})
		script(p)
	}))
	r.srv.TLS = ca.ServerTLS(t)
	r.srv.TLS.ClientAuth = tls.RequireAndVerifyClientCert
	r.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point of some tests
	r.srv.StartTLS()
	t.Cleanup(r.srv.Close)
	return r
}

func (r *relay) emit(e event) {
	e.at = time.Now()
	select {
	case r.events <- e:
	default: // a test that stopped listening must not wedge the relay
	}
}

func (p *peer) read() (wire.Frame, error) {
	typ, b, err := p.c.Read(p.ctx)
	if err != nil {
		return wire.Frame{}, err
	}
	if typ != websocket.MessageBinary {
		return wire.Frame{}, errors.New("text message")
	}
	return wire.Decode(b)
}

func (p *peer) send(t wire.Type, seq uint64, body wire.Body) {
	b, err := wire.Encode(t, seq, body)
	if err != nil {
		panic(err)
	}
	p.c.Write(p.ctx, websocket.MessageBinary, b)
}

func (p *peer) ack(hb uint32) {
	p.send(wire.TypeHelloAck, 0, &wire.HelloAck{Version: 1, NodeName: "gw-1", HeartbeatSeconds: hb, RelayVersion: "test"})
}

// serve answers heartbeats and reports every frame until the connection
// ends, reporting how it ended.
func (p *peer) serve(echo bool) {
	for {
		f, err := p.read()
		if err != nil {
			p.r.emit(event{conn: p.n, what: "closed", close: websocket.CloseStatus(err)})
			return
		}
		if f.Type == wire.TypeHeartbeat {
			if echo {
				p.send(wire.TypeHeartbeat, 0, nil)
			}
			p.r.emit(event{conn: p.n, what: "heartbeat"})
			continue
		}
		p.r.emit(event{conn: p.n, what: "frame", frame: f})
	}
}

// waitFor returns the first event matching, failing the test after a while.
func (r *relay) waitFor(t *testing.T, conn int, what string) event {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case e := <-r.events:
			if strings.HasPrefix(e.what, "bad") {
				t.Fatalf("relay: %s", e.what)
			}
			if e.conn == conn && e.what == what {
				return e
			}
		case <-deadline:
			t.Fatalf("relay never saw %q on connection %d", what, conn)
		}
	}
}

// waitForAny returns the first event on conn that is one of whats.
func (r *relay) waitForAny(t *testing.T, conn int, whats ...string) event {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case e := <-r.events:
			if strings.HasPrefix(e.what, "bad") {
				t.Fatalf("relay: %s", e.what)
			}
			if e.conn == conn && slices.Contains(whats, e.what) {
				return e
			}
		case <-deadline:
			t.Fatalf("relay never saw any of %q on connection %d", whats, conn)
		}
	}
}

// logBuf collects log output across goroutines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type agent struct {
	link *Link
	log  *logBuf
	stop func() error
}

// startAgent runs a Link against r with a node identity from ca and test
// timing: a heartbeat "second" is 20ms, backoff 5-50ms.
func startAgent(t *testing.T, srvURL string, ca *testpki.CA, certCA *testpki.CA, notAfter time.Time, mod func(c *Config, h *Handlers)) *agent {
	t.Helper()
	return startTunedAgent(t, srvURL, ca, certCA, notAfter, mod, nil)
}

// startTunedAgent is startAgent with tune, if set, changing the link's
// timing before it runs.
func startTunedAgent(t *testing.T, srvURL string, ca *testpki.CA, certCA *testpki.CA, notAfter time.Time, mod func(c *Config, h *Handlers), tune func(l *Link)) *agent {
	t.Helper()
	key, cert := certCA.NodeIdentity(t, "gw-1", notAfter)
	lb := &logBuf{}
	cfg := Config{
		Server: srvURL, NodeName: "gw-1",
		CertPEM: cert, KeyPEM: key, CAPEM: ca.PEM,
		AgentVersion: "v0.0.0-test",
		NodeInfo: func() (wire.NodeInfo, error) {
			return wire.NodeInfo{Arch: "arm64", OS: "linux", Board: "sim",
				Capacity:    wire.Resources{CPUMillis: 1000, MemoryBytes: 1 << 30, Pods: 10},
				Allocatable: wire.Resources{CPUMillis: 900, MemoryBytes: 1 << 29, Pods: 10}}, nil
		},
		Log: slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	var h Handlers
	if mod != nil {
		mod(&cfg, &h)
	}
	l := New(cfg)
	l.heartbeatUnit = 20 * time.Millisecond
	l.backoffMin, l.backoffMax = 5*time.Millisecond, 50*time.Millisecond
	l.helloTimeout = 2 * time.Second
	if tune != nil {
		tune(l)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, h) }()
	a := &agent{link: l, log: lb}
	var once sync.Once
	var runErr error
	a.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(10 * time.Second):
				runErr = errors.New("Run did not return after cancel")
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := a.stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", lb.String())
		}
	})
	return a
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	wait.For(t, 5*time.Second, what, cond)
}

func TestHelloAndHeartbeats(t *testing.T) {
	ca := testpki.NewCA(t, "relay-ca")
	r := newRelay(t, ca, func(p *peer) { p.ack(2); p.serve(true) })
	a := startAgent(t, r.srv.URL, ca, ca, time.Now().Add(time.Hour), nil)

	h := r.waitFor(t, 1, "hello")
	if h.cn != "system:node:gw-1" {
		t.Errorf("client certificate CN = %q", h.cn)
	}
	if h.hello.MinVersion != wire.ProtocolMin || h.hello.MaxVersion != wire.ProtocolMax || h.hello.AgentVersion != "v0.0.0-test" || h.hello.Node.Board != "sim" || h.hello.Upgrades {
		t.Errorf("hello = %+v", h.hello)
	}
	for range 3 {
		r.waitFor(t, 1, "heartbeat")
	}
	eventually(t, "Connected", a.link.Connected)
	if !strings.Contains(a.log.String(), "msg=connected node=gw-1") {
		t.Errorf("no connect line in log:\n%s", a.log)
	}
}

func TestReconnectAfterDrop(t *testing.T) {
	ca := testpki.NewCA(t, "relay-ca")
	r := newRelay(t, ca, func(p *peer) {
		p.ack(2)
		if p.n == 1 {
			return // the handler's deferred CloseNow drops the connection
		}
		p.serve(true)
	})
	var downs atomic.Int32
	a := startAgent(t, r.srv.URL, ca, ca, time.Now().Add(time.Hour), func(_ *Config, h *Handlers) {
		h.OnDisconnect = func(error) { downs.Add(1) }
	})
	r.waitFor(t, 1, "hello")
	r.waitFor(t, 2, "hello")
	r.waitFor(t, 2, "heartbeat")
	eventually(t, "Connected after reconnect", a.link.Connected)
	if downs.Load() != 1 {
		t.Errorf("OnDisconnect called %d times, want 1", downs.Load())
	}
	if !strings.Contains(a.log.String(), "msg=disconnected") {
		t.Errorf("no disconnect line in log:\n%s", a.log)
	}
}

func TestBadFrameReconnects(t *testing.T) {
	tests := []struct {
		name string
		send func(p *peer)
		code wire.ErrorCode
	}{
		{"not CBOR", func(p *peer) { p.c.Write(p.ctx, websocket.MessageBinary, []byte{0xff, 0x00, 0x13}) }, wire.CodeMalformed},
		{"text message", func(p *peer) { p.c.Write(p.ctx, websocket.MessageText, []byte("hello")) }, wire.CodeMalformed},
		{"frame without type", func(p *peer) { p.c.Write(p.ctx, websocket.MessageBinary, []byte{0xa1, 0x02, 0x01}) }, wire.CodeMalformed},
		{"second hello-ack", func(p *peer) { p.ack(2) }, wire.CodeProtocol},
		{"error frame with no code", func(p *peer) {
			b, _ := wire.EncodeFrame(wire.Frame{Type: wire.TypeError, Body: []byte{0xa1, 0x02, 0x61, 0x78}})
			p.c.Write(p.ctx, websocket.MessageBinary, b)
		}, wire.CodeInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := testpki.NewCA(t, "relay-ca")
			r := newRelay(t, ca, func(p *peer) {
				p.ack(50) // heartbeats far apart: only the bad frame matters
				if p.n == 1 {
					tt.send(p)
				}
				p.serve(true)
			})
			startAgent(t, r.srv.URL, ca, ca, time.Now().Add(time.Hour), nil)
			e := r.waitFor(t, 1, "frame")
			var werr wire.Error
			if e.frame.Type != wire.TypeError || e.frame.DecodeBody(&werr) != nil || werr.Code != tt.code || !werr.Fatal {
				t.Errorf("agent answered %v %+v, want a fatal error with code %d", e.frame.Type, werr, tt.code)
			}
			if c := r.waitFor(t, 1, "closed"); c.close != websocket.StatusPolicyViolation {
				t.Errorf("close status %v, want %v", c.close, websocket.StatusPolicyViolation)
			}
			r.waitFor(t, 2, "hello")
		})
	}
}

func TestDeadLinkReconnects(t *testing.T) {
	ca := testpki.NewCA(t, "relay-ca")
	r := newRelay(t, ca, func(p *peer) {
		p.ack(1)
		p.serve(p.n > 1) // the first connection swallows heartbeats
	})
	a := startAgent(t, r.srv.URL, ca, ca, time.Now().Add(time.Hour), nil)
	start := time.Now()
	r.waitFor(t, 1, "hello")
	r.waitFor(t, 2, "hello")
	if d := time.Since(start); d < 3*20*time.Millisecond {
		t.Errorf("reconnected after %v, before three heartbeat intervals", d)
	}
	eventually(t, "log says why", func() bool { return strings.Contains(a.log.String(), "link dead: nothing from the relay for") })
}

func TestCleanShutdown(t *testing.T) {
	ca := testpki.NewCA(t, "relay-ca")
	r := newRelay(t, ca, func(p *peer) { p.ack(2); p.serve(true) })
	var downs atomic.Int32
	a := startAgent(t, r.srv.URL, ca, ca, time.Now().Add(time.Hour), func(_ *Config, h *Handlers) {
		h.OnDisconnect = func(error) { downs.Add(1) }
	})
	r.waitFor(t, 1, "heartbeat")
	if err := a.stop(); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if e := r.waitFor(t, 1, "closed"); e.close != websocket.StatusNormalClosure {
		t.Errorf("relay saw close status %v, want %v", e.close, websocket.StatusNormalClosure)
	}
	if a.link.Connected() || downs.Load() != 1 {
		t.Errorf("after shutdown: Connected=%v, OnDisconnect calls %d", a.link.Connected(), downs.Load())
	}
	if n := r.conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

func TestRelayErrorBeforeAck(t *testing.T) {
	ca := testpki.NewCA(t, "relay-ca")
	r := newRelay(t, ca, func(p *peer) {
		if p.n == 1 {
			p.send(wire.TypeError, 0, &wire.Error{Code: wire.CodeInternal, Reason: "apiserver unreachable, retry later", Fatal: true})
			p.c.Close(websocket.StatusTryAgainLater, "later")
			return
		}
		p.send(wire.TypeError, 0, &wire.Error{Code: wire.CodeInternal, Reason: "slow apiserver"}) // a warning, not fatal
		p.ack(2)
		p.serve(true)
	})
	a := startAgent(t, r.srv.URL, ca, ca, time.Now().Add(time.Hour), nil)
	r.waitFor(t, 2, "heartbeat")
	log := a.log.String()
	for _, want := range []string{"apiserver unreachable, retry later", "slow apiserver"} {
		if !strings.Contains(log, want) {
			t.Errorf("log does not mention %q:\n%s", want, log)
		}
	}
}

func TestSendAndHandler(t *testing.T) {
	ca := testpki.NewCA(t, "relay-ca")
	r := newRelay(t, ca, func(p *peer) {
		p.ack(50)
		for {
			f, err := p.read()
			if err != nil {
				return
			}
			p.r.emit(event{conn: p.n, what: "frame", frame: f})
			if f.Type == wire.TypeNodeStatus {
				b, _ := wire.EncodeFrame(wire.Frame{Type: wire.TypeAck, Ack: f.Seq})
				p.c.Write(p.ctx, websocket.MessageBinary, b)
			}
		}
	})
	acks := make(chan uint64, 1)
	connects := make(chan wire.HelloAck, 1)
	a := startAgent(t, r.srv.URL, ca, ca, time.Now().Add(time.Hour), func(_ *Config, h *Handlers) {
		h.Frame = func(f wire.Frame) {
			if f.Type == wire.TypeAck {
				acks <- f.Ack
			}
		}
		h.OnConnect = func(ack wire.HelloAck) { connects <- ack }
	})
	if ack := <-connects; ack.NodeName != "gw-1" {
		t.Errorf("OnConnect got %+v", ack)
	}
	ni, _ := a.link.cfg.NodeInfo()
	if err := a.link.Send(wire.TypeNodeStatus, 7, &wire.NodeStatus{Node: ni}); err != nil {
		t.Fatal(err)
	}
	e := r.waitFor(t, 1, "frame")
	if e.frame.Type != wire.TypeNodeStatus || e.frame.Seq != 7 {
		t.Errorf("relay got %v seq %d", e.frame.Type, e.frame.Seq)
	}
	select {
	case n := <-acks:
		if n != 7 {
			t.Errorf("handler got ack %d, want 7", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler never got the ack")
	}
	// Invalid bodies are refused at Send, not sent.
	if err := a.link.Send(wire.TypeNodeStatus, 8, &wire.NodeStatus{}); err == nil {
		t.Error("Send accepted an invalid body")
	}
}

func TestSendBounds(t *testing.T) {
	hb := func(l *Link) error { return l.Send(wire.TypeHeartbeat, 0, nil) }
	tests := []struct {
		name      string
		cfg       Config
		connected bool
		sends     int
		want      error
	}{
		{name: "not connected", sends: 1, want: ErrNotConnected},
		{name: "frame bound", cfg: Config{QueueFrames: 2}, connected: true, sends: 3, want: ErrQueueFull},
		{name: "byte bound", cfg: Config{QueueBytes: 7}, connected: true, sends: 3, want: ErrQueueFull},
		{name: "within bounds", cfg: Config{QueueFrames: 3}, connected: true, sends: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(tt.cfg)
			l.connected.Store(tt.connected)
			var err error
			for range tt.sends {
				err = hb(l)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("last Send = %v, want %v", err, tt.want)
			}
			l.drain()
			if n := l.queuedBytes.Load(); n != 0 {
				t.Errorf("queued bytes after drain = %d", n)
			}
		})
	}
}

// SendWait waits out a full queue: it returns once the connection takes
// a frame off it, when its context ends, or when the connection drops.
func TestSendWait(t *testing.T) {
	for _, tt := range []struct {
		name string
		end  func(l *Link, cancel context.CancelFunc)
		want error
	}{
		{name: "room made", end: func(l *Link, _ context.CancelFunc) { l.dequeued((<-l.queue).b) }},
		{name: "context ended", end: func(_ *Link, cancel context.CancelFunc) { cancel() }, want: context.Canceled},
		{name: "connection dropped", end: func(l *Link, _ context.CancelFunc) { l.connected.Store(false); l.drain() }, want: ErrNotConnected},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := New(Config{QueueFrames: 1})
				l.connected.Store(true)
				if err := l.Send(wire.TypeHeartbeat, 0, nil); err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				done := make(chan error, 1)
				go func() { done <- l.SendWait(ctx, wire.TypeHeartbeat, 0, nil) }()
				synctest.Wait()
				select {
				case err := <-done:
					t.Fatalf("SendWait on a full queue returned %v at once", err)
				default:
				}
				tt.end(l, cancel)
				synctest.Wait()
				select {
				case err := <-done:
					if !errors.Is(err, tt.want) {
						t.Fatalf("SendWait = %v, want %v", err, tt.want)
					}
				default:
					t.Fatal("SendWait still waiting")
				}
				if tt.want == nil && len(l.queue) != 1 {
					t.Errorf("queue holds %d frames, want SendWait's one", len(l.queue))
				}
			})
		})
	}
}

func TestRejoinNeeded(t *testing.T) {
	ca := testpki.NewCA(t, "relay-ca")
	other := testpki.NewCA(t, "other-ca")
	tests := []struct {
		name     string
		servedBy *testpki.CA // the relay's serving CA, and the CA it trusts for clients
		certBy   *testpki.CA // signs the node's certificate
		notAfter time.Time
		want     string
	}{
		{name: "relay CA changed", servedBy: other, certBy: ca, notAfter: time.Now().Add(time.Hour),
			want: "not signed by the CA this node joined with"},
		{name: "node certificate expired", servedBy: ca, certBy: ca, notAfter: time.Now().Add(-2 * time.Hour),
			want: "node certificate expired 2h0m0s ago"},
		{name: "relay refuses the node certificate", servedBy: nil, certBy: other, notAfter: time.Now().Add(time.Hour),
			want: "the relay refused this node's certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			served := tt.servedBy
			if served == nil {
				served = ca
			}
			r := newRelay(t, served, func(p *peer) { p.ack(2); p.serve(true) })
			a := startAgent(t, r.srv.URL, ca, tt.certBy, tt.notAfter, nil)
			eventually(t, "a re-join line", func() bool {
				return strings.Contains(a.log.String(), "this node must re-join")
			})
			log := a.log.String()
			if !strings.Contains(log, tt.want) || !strings.Contains(log, "outpost-agent join --force --server "+r.srv.URL) {
				t.Errorf("log lacks %q or the fix:\n%s", tt.want, log)
			}
			if n := r.conns.Load(); n != 0 {
				t.Errorf("relay accepted %d connections", n)
			}
			if a.link.Connected() {
				t.Error("Connected with a refused identity")
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	l := New(Config{})
	for attempt, cap := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second, 30 * time.Second} {
		if attempt == 7 {
			attempt = 1000 // shifts past the width of a Duration stay capped
		}
		var hi time.Duration
		for range 200 {
			d := l.backoff(attempt)
			if d < 0 || d > cap {
				t.Fatalf("backoff(%d) = %v, outside [0, %v]", attempt, d, cap)
			}
			hi = max(hi, d)
		}
		if hi < cap/2 {
			t.Errorf("backoff(%d) never above %v in 200 draws: not jittered over the full range", attempt, hi)
		}
	}
}

func TestRunRefusesUnusableIdentity(t *testing.T) {
	l := New(Config{Server: "https://relay:1", CertPEM: []byte("x"), KeyPEM: []byte("y"), CAPEM: []byte("z")})
	err := l.Run(context.Background(), Handlers{})
	if err == nil || !strings.Contains(err.Error(), "re-join") {
		t.Fatalf("Run = %v", err)
	}
}

// TestStaleFrameNotWritten: a frame queued for a connection that ended (a
// Send that raced with the drop) is not written on the next one; the
// frames after it are.
func TestStaleFrameNotWritten(t *testing.T) {
	ca := testpki.NewCA(t, "relay-ca")
	r := newRelay(t, ca, func(p *peer) {
		p.ack(50)
		if p.n == 1 {
			return
		}
		p.serve(true)
	})
	connects := make(chan struct{}, 2)
	a := startAgent(t, r.srv.URL, ca, ca, time.Now().Add(time.Hour), func(_ *Config, h *Handlers) {
		h.OnConnect = func(wire.HelloAck) { connects <- struct{}{} }
	})
	<-connects
	<-connects
	ni, _ := a.link.cfg.NodeInfo()
	stale, err := wire.Encode(wire.TypeNodeStatus, 7, &wire.NodeStatus{Node: ni})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.link.enqueue(queued{stale, a.link.conn.Load() - 1}); err != nil {
		t.Fatal(err)
	}
	if err := a.link.Send(wire.TypeNodeStatus, 8, &wire.NodeStatus{Node: ni}); err != nil {
		t.Fatal(err)
	}
	if e := r.waitFor(t, 2, "frame"); e.frame.Seq != 8 {
		t.Fatalf("first frame on the second connection has seq %d, want 8 (7 was queued for the first)", e.frame.Seq)
	}
}

func TestHelloSaysTheAgentTakesUpgrades(t *testing.T) {
	ca := testpki.NewCA(t, "relay-ca")
	r := newRelay(t, ca, func(p *peer) { p.ack(2); p.serve(true) })
	startAgent(t, r.srv.URL, ca, ca, time.Now().Add(time.Hour), func(c *Config, _ *Handlers) { c.Upgrades = true })
	if h := r.waitFor(t, 1, "hello"); !h.hello.Upgrades {
		t.Fatalf("hello = %+v", h.hello)
	}
}
