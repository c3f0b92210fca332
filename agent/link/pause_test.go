package link

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/coder/websocket"

	"outpost.dev/agent/internal/testpki"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

// TestPauseProbesUntilTheRelayListens: with a long back-off drawn, an
// agent whose relay was unreachable probes about every second and stops
// waiting at the first probe that finds it listening.
func TestPauseProbesUntilTheRelayListens(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := New(Config{})
		start := time.Now()
		back := 5 * time.Second // the relay listens again 5 s into the wait
		probes := 0
		l.probe = func(context.Context) bool {
			probes++
			return time.Since(start) >= back
		}
		if !l.pause(t.Context(), 20*time.Second, probeUp) {
			t.Fatal("pause ended as if cancelled")
		}
		waited := time.Since(start)
		if waited < back || waited > back+l.probeEvery*5/4 {
			t.Fatalf("waited %v; want between %v and one probe period (at most %v) later", waited, back, l.probeEvery*5/4)
		}
		if probes < 4 || probes > 7 {
			t.Fatalf("%d probes in %v; want one about every %v", probes, waited, l.probeEvery)
		}
	})
}

// TestPauseAfterDisconnect: after a connection ended, a relay that went
// away (its address refuses the probe) and comes back 5 s into a 20 s
// back-off is dialed within a probe period of its return; one that is up
// all along (it closed the connection itself) is probed once and waited
// out in full.
func TestPauseAfterDisconnect(t *testing.T) {
	for _, tc := range []struct {
		name      string
		downFor   time.Duration // the address refuses probes this long
		min, max  time.Duration // when the pause may end
		maxProbes int
	}{
		{"relay gone and back", 5 * time.Second, 5 * time.Second, 5*time.Second + time.Second*5/4, 7},
		{"relay up all along", 0, 20 * time.Second, 20 * time.Second, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := New(Config{})
				start := time.Now()
				probes := 0
				l.probe = func(context.Context) bool {
					probes++
					return time.Since(start) >= tc.downFor
				}
				if !l.pause(t.Context(), 20*time.Second, probeBack) {
					t.Fatal("pause ended as if cancelled")
				}
				waited := time.Since(start)
				if waited < tc.min || waited > tc.max {
					t.Fatalf("waited %v; want between %v and %v", waited, tc.min, tc.max)
				}
				if probes > tc.maxProbes || probes == 0 {
					t.Fatalf("%d probes in %v; want 1 to %d", probes, waited, tc.maxProbes)
				}
			})
		})
	}
}

// TestPauseWithoutProbes: a relay that answered (busy, or any error but
// unreachable) is waited out in full; so is a back-off shorter than the
// probe period.
func TestPauseWithoutProbes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		delay  time.Duration
		probes probeMode
	}{
		{"relay answered", 12 * time.Second, noProbe},
		{"short back-off", 800 * time.Millisecond, probeUp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := New(Config{})
				l.probe = func(context.Context) bool { t.Error("probed"); return true }
				start := time.Now()
				if !l.pause(t.Context(), tc.delay, tc.probes) {
					t.Fatal("pause ended as if cancelled")
				}
				if got := time.Since(start); got != tc.delay {
					t.Fatalf("waited %v, want %v", got, tc.delay)
				}
			})
		})
	}
}

func TestPauseEndsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := New(Config{})
		l.probe = func(context.Context) bool { return false }
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(3*time.Second, cancel)
		start := time.Now()
		if l.pause(ctx, time.Minute, probeUp) {
			t.Fatal("pause reported the wait over after its context ended")
		}
		if got := time.Since(start); got != 3*time.Second {
			t.Fatalf("returned %v after start, want at the cancel (3s)", got)
		}
	})
}

// TestRetryAfterIsHonouredWithJitter: a relay answering 503 with
// Retry-After is not asked again before that long, nor much later.
func TestRetryAfterIsHonouredWithJitter(t *testing.T) {
	ca := testpki.NewCA(t, "relay-ca")
	r := newRelay(t, ca, func(p *peer) { p.ack(2); p.serve(true) })
	r.busy.Store(2)
	a := startAgent(t, r.srv.URL, ca, ca, time.Now().Add(time.Hour), nil)
	wait.For(t, 30*time.Second, "connected after two busy answers", a.link.Connected)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.requests) != 3 {
		t.Fatalf("%d connect requests, want 3 (two busy, one accepted)", len(r.requests))
	}
	for i := 1; i < 3; i++ {
		// The agent's own back-off is 5-50 ms in these tests: only the
		// relay's Retry-After explains a gap of a second.
		if gap := r.requests[i].Sub(r.requests[i-1]); gap < time.Second || gap > 3*time.Second {
			t.Errorf("request %d came %v after a busy answer; want 1-1.5 s (plus scheduling)", i+1, gap)
		}
	}
	if !strings.Contains(a.log.String(), "relay busy") {
		t.Errorf("no busy line in the agent's log:\n%s", a.log)
	}
}

func TestDialErrorKinds(t *testing.T) {
	busy := &http.Response{StatusCode: http.StatusServiceUnavailable, Header: http.Header{"Retry-After": {"7"}}}
	var be *busyError
	if err := dialError(errors.New("failed to WebSocket dial"), busy); !errors.As(err, &be) || be.after != 7*time.Second {
		t.Fatalf("503 with Retry-After: 7 gave %v", err)
	}
	huge := &http.Response{StatusCode: http.StatusServiceUnavailable, Header: http.Header{"Retry-After": {"999999999"}}}
	if err := dialError(errors.New("x"), huge); !errors.As(err, &be) || be.after != maxRetryAfter {
		t.Fatalf("a huge Retry-After gave %v, want capped at %v", err, maxRetryAfter)
	}
	plain := &http.Response{StatusCode: http.StatusServiceUnavailable, Header: http.Header{"Retry-After": {"soon"}}}
	if err := dialError(errors.New("x"), plain); errors.As(err, &be) || !strings.Contains(err.Error(), "HTTP 503") {
		t.Fatalf("503 without a usable Retry-After gave %v", err)
	}
	// Nobody listening: unreachable, so the wait probes.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, derr := net.Dial("tcp", addr)
	var ue *unreachableError
	if err := dialError(derr, nil); !errors.As(err, &ue) || !strings.Contains(err.Error(), "cannot reach relay") {
		t.Fatalf("connection refused gave %v", err)
	}
}

// TestTCPProbe finds a listener and misses a closed port.
func TestTCPProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv("HTTPS_PROXY", "")
	t.Setenv("https_proxy", "")
	p := tcpProbe("https://"+ln.Addr().String()+"/v1/connect", time.Second, (&net.Dialer{}).DialContext)
	if p == nil || !p(t.Context()) {
		t.Fatal("probe missed a listening relay")
	}
	addr := ln.Addr().String()
	ln.Close()
	if p(t.Context()) {
		t.Fatalf("probe found %s listening after it closed", addr)
	}
}

// TestBackWithinSecondsOfAnOutage: the relay's address refuses
// connections for 30 s (a relay restarting, killed, rescheduled), then
// listens again. Whatever back-off the agent drew meanwhile (full jitter,
// capped at 30 s), its probe finds the relay and it dials within 3 s of
// its return: in fake time, over many draws. The same holds after an
// outage long enough for the back-off to reach its cap.
func TestBackWithinSecondsOfAnOutage(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "")
	t.Setenv("https_proxy", "")
	ca := testpki.NewCA(t, "relay-ca")
	const within, runs = 3 * time.Second, 40
	for _, outage := range []time.Duration{30 * time.Second, 5 * time.Minute} {
		t.Run(outage.String(), func(t *testing.T) {
			var worst time.Duration
			for range runs {
				took, dials := outageRun(t, ca, outage)
				if took > within {
					t.Fatalf("the agent dialed %v after the relay returned from a %v outage (after %d refused dials); want within %v", took, outage, dials, within)
				}
				worst = max(worst, took)
			}
			t.Logf("after a %v outage: the agent dialed at most %v after the relay returned (%d runs)", outage, worst, runs)
		})
	}
}

// outageRun runs a link, in a synctest bubble, against a relay address
// that refuses connections for outage and then accepts them. It returns
// how long after the relay's return the link's first WebSocket dial came
// (the probe's connections, which send nothing, do not count) and how
// many dials were refused before.
func outageRun(t *testing.T, ca *testpki.CA, outage time.Duration) (took time.Duration, refused int) {
	synctest.Test(t, func(t *testing.T) {
		key, cert := ca.NodeIdentity(t, "gw-1", time.Now().Add(24*time.Hour))
		l := New(Config{Server: "https://relay.example:8443", NodeName: "gw-1", CertPEM: cert, KeyPEM: key, CAPEM: ca.PEM,
			NodeInfo: func() (wire.NodeInfo, error) { return wire.NodeInfo{}, nil }})
		ctx, cancel := context.WithCancel(t.Context())
		back := time.Now().Add(outage)
		var dialed time.Time
		l.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr != "relay.example:8443" {
				t.Errorf("dialed %s", addr)
			}
			if time.Now().Before(back) {
				refused++
				return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
			}
			c, relay := net.Pipe()
			go func() {
				defer relay.Close()
				// A WebSocket dial starts its TLS handshake at once; a
				// probe closes without a byte.
				var b [1]byte
				if _, err := relay.Read(b[:]); err == nil && dialed.IsZero() {
					dialed = time.Now()
					cancel()
				}
			}()
			return c, nil
		}
		done := make(chan error, 1)
		go func() { done <- l.Run(ctx, Handlers{}) }()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if dialed.IsZero() {
			t.Fatal("the link never dialed the relay")
		}
		took = dialed.Sub(back)
	})
	return took, refused
}

// TestBackWithinSecondsOfAKill: the agent connected after a minute's
// outage (its back-off grown), the relay is killed ten seconds later —
// before the connection counts as stable, so the back-off drawn after it
// may be up to 30 s — and listens again 30 s (or 5 s) after that: the
// agent's hello reaches it within 3 s of its return. In fake time, over a
// real TLS WebSocket on in-memory connections.
func TestBackWithinSecondsOfAKill(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "")
	t.Setenv("https_proxy", "")
	const runs = 40
	for _, outage := range []time.Duration{30 * time.Second, 5 * time.Second} {
		t.Run(outage.String(), func(t *testing.T) {
			var worst time.Duration
			for range runs {
				worst = max(worst, killRun(t, outage))
			}
			t.Logf("hello at most %v after the relay returned from a %v outage (%d runs)", worst, outage, runs)
		})
	}
}

// killRun runs one kill of TestBackWithinSecondsOfAKill and returns how
// long after the relay's return the agent's hello came.
func killRun(t *testing.T, outage time.Duration) (took time.Duration) {
	synctest.Test(t, func(t *testing.T) {
		ca := testpki.NewCA(t, "relay-ca")
		key, cert := ca.NodeIdentity(t, "gw-1", time.Now().Add(24*time.Hour))
		r := newMemRelay(t, ca)
		start := time.Now()
		r.setDown(true)
		time.AfterFunc(time.Minute, func() { r.setDown(false) })
		l := New(Config{Server: "https://127.0.0.1:8443", NodeName: "gw-1", CertPEM: cert, KeyPEM: key, CAPEM: ca.PEM,
			AgentVersion: "v0.0.0-test",
			NodeInfo: func() (wire.NodeInfo, error) {
				return wire.NodeInfo{Arch: "arm64", OS: "linux", Board: "sim",
					Capacity:    wire.Resources{CPUMillis: 1000, MemoryBytes: 1 << 30, Pods: 10},
					Allocatable: wire.Resources{CPUMillis: 900, MemoryBytes: 1 << 29, Pods: 10}}, nil
			}})
		l.dial = r.dial
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- l.Run(ctx, Handlers{}) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
			r.close()
		}()
		if first := r.nextHello(t); first.Sub(start) < time.Minute {
			t.Fatalf("hello %v into a minute's outage", first.Sub(start))
		}
		time.Sleep(10 * time.Second) // fake time: connected for 10 s
		r.setDown(true)              // killed: connections cut, dials refused
		time.Sleep(outage)
		r.setDown(false)
		back := time.Now()
		took = r.nextHello(t).Sub(back)
		if took > 3*time.Second {
			t.Fatalf("the agent's hello came %v after the relay returned from a %v outage; want within 3s", took, outage)
		}
	})
	return took
}

// memRelay is a relay on in-memory connections for synctest bubbles: it
// accepts the link's TLS WebSocket, answers the hello and heartbeats, and
// can be down (dials refused, its connections cut).
type memRelay struct {
	srv    *http.Server
	accept chan net.Conn
	hellos chan time.Time
	mu     sync.Mutex
	down   bool
	conns  []net.Conn
	quit   chan struct{}
}

func newMemRelay(t *testing.T, ca *testpki.CA) *memRelay {
	r := &memRelay{accept: make(chan net.Conn), hellos: make(chan time.Time, 16), quit: make(chan struct{})}
	tc := ca.ServerTLS(t)
	tc.ClientAuth = tls.RequireAndVerifyClientCert
	r.srv = &http.Server{TLSConfig: tc, ErrorLog: log.New(io.Discard, "", 0),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			c, err := websocket.Accept(w, req, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			ctx := context.Background()
			if _, _, err := c.Read(ctx); err != nil { // the hello
				return
			}
			b, _ := wire.Encode(wire.TypeHelloAck, 0, &wire.HelloAck{Version: 1, NodeName: "gw-1", HeartbeatSeconds: 2, RelayVersion: "test"})
			if c.Write(ctx, websocket.MessageBinary, b) != nil {
				return
			}
			r.hellos <- time.Now()
			hb, _ := wire.Encode(wire.TypeHeartbeat, 0, nil)
			for {
				_, m, err := c.Read(ctx)
				if err != nil {
					return
				}
				if f, err := wire.Decode(m); err == nil && f.Type == wire.TypeHeartbeat {
					if c.Write(ctx, websocket.MessageBinary, hb) != nil {
						return
					}
				}
			}
		})}
	go func() { _ = r.srv.ServeTLS(r, "", "") }()
	return r
}

func (r *memRelay) setDown(down bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down = down
	if down {
		for _, c := range r.conns {
			c.Close()
		}
		r.conns = nil
	}
}

func (r *memRelay) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	r.mu.Lock()
	if r.down {
		r.mu.Unlock()
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	}
	c, s := net.Pipe()
	r.conns = append(r.conns, s)
	r.mu.Unlock()
	select {
	case r.accept <- s:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (r *memRelay) nextHello(t *testing.T) time.Time {
	t.Helper()
	select {
	case at := <-r.hellos:
		return at
	case <-time.After(10 * time.Minute):
		t.Fatal("no hello in 10 minutes")
		return time.Time{}
	}
}

func (r *memRelay) close() {
	r.setDown(true)
	close(r.quit)
	_ = r.srv.Close()
}

// Accept, Close and Addr make memRelay the server's listener.
func (r *memRelay) Accept() (net.Conn, error) {
	select {
	case c := <-r.accept:
		return c, nil
	case <-r.quit:
		return nil, net.ErrClosed
	}
}
func (r *memRelay) Close() error   { return nil }
func (r *memRelay) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8443} }
