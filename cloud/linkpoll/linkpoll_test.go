//go:build linux

package linkpoll

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"outpost.dev/cloud/pki"
	"outpost.dev/test/wait"
)

const testMax = 200 << 10

// handler echoes every message unless onMessage says otherwise, and
// records why connections closed.
type handler struct {
	onMessage func(c *Conn, msg []byte)
	closed    chan error
}

func newHandler() *handler { return &handler{closed: make(chan error, 128)} }

func (h *handler) Message(c *Conn, msg []byte) {
	if h.onMessage != nil {
		h.onMessage(c, msg)
		return
	}
	c.WriteMessage(msg)
}

func (h *handler) Closed(c *Conn, err error) { h.closed <- err }

func (h *handler) waitClosed(t *testing.T) error {
	t.Helper()
	select {
	case err := <-h.closed:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("connection not closed within 30s")
		return nil
	}
}

// server is an HTTPS server whose upgrade endpoint hands connections to
// a poller, as the relay would.
type server struct {
	addr string
	tls  *tls.Config // for clients
	p    *Poller
}

func serve(t *testing.T, cfg Config, h Handler) *server {
	t.Helper()
	if cfg.MaxMessage == 0 {
		cfg.MaxMessage = testMax
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.Generate(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServingCert([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /connect", func(w http.ResponseWriter, r *http.Request) {
		conn, rw, _, err := ws.UpgradeHTTP(r, w)
		if err != nil {
			return
		}
		if rw.Reader.Buffered() > 0 {
			conn.Close() // the peer did not wait for the upgrade
			return
		}
		tc, ok := conn.(*tls.Conn)
		if !ok {
			conn.Close()
			return
		}
		if _, err := p.Adopt(tc, h); err != nil {
			t.Errorf("adopt: %v", err)
		}
	})
	hs := &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}}
	go hs.ServeTLS(p.Listener(ln), "", "")
	t.Cleanup(func() {
		hs.Close()
		p.Close()
	})
	return &server{addr: ln.Addr().String(), p: p,
		tls: &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}}
}

// dial connects with coder/websocket, the agent's library.
func (s *server) dial(t *testing.T, ctx context.Context) *websocket.Conn {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: s.tls, DisableKeepAlives: true}}
	c, _, err := websocket.Dial(ctx, "wss://"+s.addr+"/connect", &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(2 * testMax)
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func TestEcho(t *testing.T) {
	s := serve(t, Config{}, newHandler())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := s.dial(t, ctx)
	for _, n := range []int{0, 1, 125, 126, 65535, 65536, testMax} {
		msg := bytes.Repeat([]byte{byte(n)}, n)
		if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
			t.Fatal(err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if typ != websocket.MessageBinary || !bytes.Equal(got, msg) {
			t.Fatalf("%d bytes: echo is %v of %d bytes", n, typ, len(got))
		}
	}
	// A message in fragments: each Write of the writer is a frame.
	w, err := c.Writer(ctx, websocket.MessageBinary)
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	for i := range 5 {
		part := bytes.Repeat([]byte{byte('a' + i)}, 30000)
		want = append(want, part...)
		if _, err := w.Write(part); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_, got, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("fragmented message echoed as %d bytes, want %d", len(got), len(want))
	}
}

func TestRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(ctx context.Context, c *websocket.Conn) error
		code websocket.StatusCode
		err  error
	}{
		{"message over the limit", func(ctx context.Context, c *websocket.Conn) error {
			return c.Write(ctx, websocket.MessageBinary, make([]byte, testMax+1))
		}, websocket.StatusMessageTooBig, errTooLarge},
		{"fragments over the limit", func(ctx context.Context, c *websocket.Conn) error {
			w, err := c.Writer(ctx, websocket.MessageBinary)
			if err != nil {
				return err
			}
			for range 3 {
				if _, err := w.Write(make([]byte, testMax/2)); err != nil {
					return err
				}
			}
			return w.Close()
		}, websocket.StatusMessageTooBig, errTooLarge},
		{"text message", func(ctx context.Context, c *websocket.Conn) error {
			return c.Write(ctx, websocket.MessageText, []byte("hello"))
		}, websocket.StatusUnsupportedData, errTextRefuse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHandler()
			s := serve(t, Config{}, h)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c := s.dial(t, ctx)
			tc.send(ctx, c) // may fail once the server closed
			_, _, err := c.Read(ctx)
			if got := websocket.CloseStatus(err); got != tc.code {
				t.Fatalf("client read %v (close status %d), want close status %d", err, got, tc.code)
			}
			if err := h.waitClosed(t); !errors.Is(err, tc.err) {
				t.Fatalf("closed with %v, want %v", err, tc.err)
			}
		})
	}
}

func TestClose(t *testing.T) {
	h := newHandler()
	h.onMessage = func(c *Conn, msg []byte) { c.Close(ws.StatusGoingAway, "relay shutting down") }
	s := serve(t, Config{}, h)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := s.dial(t, ctx)
	if err := c.Write(ctx, websocket.MessageBinary, []byte("bye?")); err != nil {
		t.Fatal(err)
	}
	_, _, err := c.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusGoingAway || ce.Reason != "relay shutting down" {
		t.Fatalf("client read %v, want going away with the reason", err)
	}
	h.waitClosed(t)
}

func TestSilent(t *testing.T) {
	h := newHandler()
	s := serve(t, Config{Silent: 200 * time.Millisecond}, h)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s.dial(t, ctx)
	if err := h.waitClosed(t); !errors.Is(err, ErrSilent) {
		t.Fatalf("closed with %v, want ErrSilent", err)
	}
}

// A handler that pauses gets nothing more, even what was already read,
// until it resumes; then everything, in order.
func TestPauseResume(t *testing.T) {
	h := newHandler()
	var mu sync.Mutex
	var got []string
	paused := make(chan *Conn, 1)
	h.onMessage = func(c *Conn, msg []byte) {
		mu.Lock()
		got = append(got, string(msg))
		mu.Unlock()
		if string(msg) == "1" {
			c.PauseReading()
			paused <- c
			return
		}
		c.WriteMessage(msg)
	}
	s := serve(t, Config{}, h)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := s.dial(t, ctx)
	for _, m := range []string{"1", "2", "3"} {
		if err := c.Write(ctx, websocket.MessageBinary, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	sc := <-paused
	mu.Lock()
	before := fmt.Sprint(got)
	mu.Unlock()
	if before != "[1]" {
		t.Fatalf("while paused the handler got %s, want [1]", before)
	}
	sc.ResumeReading()
	for _, want := range []string{"2", "3"} {
		_, msg, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(msg) != want {
			t.Fatalf("echo %q, want %q", msg, want)
		}
	}
}

// A peer that does not read is closed once MaxQueued bytes wait for it;
// the writer is never blocked.
func TestSlowPeer(t *testing.T) {
	h := newHandler()
	errs := make(chan error, 1)
	h.onMessage = func(c *Conn, msg []byte) {
		big := make([]byte, 256<<10)
		for range 4096 { // 1 GiB: far past any socket buffers
			if err := c.WriteMessage(big); err != nil {
				errs <- err
				return
			}
		}
		errs <- nil
	}
	s := serve(t, Config{MaxQueued: 1 << 20}, h)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := s.dial(t, ctx)
	if err := c.Write(ctx, websocket.MessageBinary, []byte("flood me")); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; !errors.Is(err, ErrSlowPeer) {
		t.Fatalf("writes ended with %v, want ErrSlowPeer", err)
	}
	if err := h.waitClosed(t); !errors.Is(err, ErrSlowPeer) {
		t.Fatalf("closed with %v, want ErrSlowPeer", err)
	}
}

// Connections cost no goroutine once adopted.
func TestNoGoroutinePerConn(t *testing.T) {
	const n = 64
	s := serve(t, Config{Loops: 2}, newHandler())
	base := runtime.NumGoroutine()
	var conns []net.Conn
	for range n {
		// gobwas/ws's dialer: no goroutine on the client side either.
		d := ws.Dialer{TLSConfig: s.tls}
		c, br, _, err := d.Dial(context.Background(), "wss://"+s.addr+"/connect")
		if err != nil {
			t.Fatal(err)
		}
		if br != nil {
			ws.PutReader(br)
		}
		conns = append(conns, c)
		if err := wsutil.WriteClientBinary(c, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		if msg, err := wsutil.ReadServerBinary(c); err != nil || string(msg) != "ping" {
			t.Fatalf("echo %q, %v", msg, err)
		}
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// The upgrades' HTTP goroutines end just after their handlers return.
	wait.For(t, 10*time.Second, "the upgrades' goroutines to end", func() bool {
		return runtime.NumGoroutine()-base < n/8
	})
	for _, c := range conns {
		if err := wsutil.WriteClientBinary(c, []byte("still there")); err != nil {
			t.Fatal(err)
		}
		if msg, err := wsutil.ReadServerBinary(c); err != nil || string(msg) != "still there" {
			t.Fatalf("echo %q, %v", msg, err)
		}
	}
}

func TestAdoptRefusesForeignConn(t *testing.T) {
	p, err := New(Config{MaxMessage: 1024, Loops: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	a, b := net.Pipe()
	defer b.Close()
	if _, err := p.Adopt(tls.Server(a, &tls.Config{}), newHandler()); err == nil {
		t.Fatal("adopted a connection that did not come from the poller's listener")
	}
}

// A handler that panics closes its connection only.
func TestHandlerPanic(t *testing.T) {
	h := newHandler()
	h.onMessage = func(c *Conn, msg []byte) {
		if string(msg) == "boom" {
			panic("handler bug")
		}
		c.WriteMessage(msg)
	}
	s := serve(t, Config{Loops: 1}, h)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bad, good := s.dial(t, ctx), s.dial(t, ctx)
	if err := bad.Write(ctx, websocket.MessageBinary, []byte("boom")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := bad.Read(ctx); websocket.CloseStatus(err) != websocket.StatusInternalError {
		t.Fatalf("client read %v, want close status %d", err, websocket.StatusInternalError)
	}
	if err := h.waitClosed(t); !errors.Is(err, ErrPanic) {
		t.Fatalf("closed with %v, want ErrPanic", err)
	}
	if err := good.Write(ctx, websocket.MessageBinary, []byte("fine")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := good.Read(ctx); err != nil || string(msg) != "fine" {
		t.Fatalf("the other connection: echo %q, %v", msg, err)
	}
}
