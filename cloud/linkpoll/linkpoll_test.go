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
	cert *tls.Certificate
}

// adoptHook, when given to serveHook, sees each connection before Adopt
// and is told Adopt's error (which then fails no test).
type adoptHook struct {
	before func(*tls.Conn)
	failed chan error
}

func serve(t *testing.T, cfg Config, h Handler) *server {
	t.Helper()
	return serveHook(t, cfg, h, nil)
}

func serveHook(t *testing.T, cfg Config, h Handler, hook *adoptHook) *server {
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
		if hook != nil && hook.before != nil {
			hook.before(tc)
		}
		if _, err := p.Adopt(tc, func(*Conn) Handler { return h }); err != nil {
			if hook != nil && hook.failed != nil {
				hook.failed <- err
				return
			}
			t.Errorf("adopt: %v", err)
		}
	})
	hs := &http.Server{Handler: mux, TLSConfig: p.TLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})}
	go hs.ServeTLS(p.Listener(ln), "", "")
	t.Cleanup(func() {
		hs.Close()
		p.Close()
	})
	return &server{addr: ln.Addr().String(), p: p, cert: &cert,
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
		}, websocket.StatusMessageTooBig, ErrTooLarge},
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
		}, websocket.StatusMessageTooBig, ErrTooLarge},
		{"text message", func(ctx context.Context, c *websocket.Conn) error {
			return c.Write(ctx, websocket.MessageText, []byte("hello"))
		}, websocket.StatusUnsupportedData, ErrText},
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

// Close says goodbye with its code and reason; what the peer sent after
// the message that closed is not handed to the handler.
func TestClose(t *testing.T) {
	h := newHandler()
	got := make(chan string, 8)
	h.onMessage = func(c *Conn, msg []byte) {
		got <- string(msg)
		c.Close(ws.StatusGoingAway, "relay shutting down")
	}
	s := serve(t, Config{}, h)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := s.dial(t, ctx)
	for _, m := range []string{"bye?", "more", "and more"} {
		if err := c.Write(ctx, websocket.MessageBinary, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err := c.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusGoingAway || ce.Reason != "relay shutting down" {
		t.Fatalf("client read %v, want going away with the reason", err)
	}
	h.waitClosed(t)
	close(got)
	var msgs []string
	for m := range got {
		msgs = append(msgs, m)
	}
	if fmt.Sprint(msgs) != "[bye?]" {
		t.Fatalf("the handler got %q, want only the message before the close", msgs)
	}
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
	if _, err := p.Adopt(tls.Server(a, &tls.Config{}), func(*Conn) Handler { return newHandler() }); err == nil {
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
	_, _, err := bad.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusInternalError || ce.Reason != "internal error" {
		t.Fatalf("client read %v, want close status %d saying only \"internal error\"", err, websocket.StatusInternalError)
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

// The relay's pattern for work that may wait: a handler that finds its
// bounded queue full pauses reading and has a goroutine resume it once
// there is room. Nothing is lost or reordered, the queue never holds more
// than its bound, the handler never blocks, and another connection of
// the same loop is served while this one is held back.
func TestPauseWhileQueueFull(t *testing.T) {
	const n = 500
	queue := make(chan string, 4)
	var pauses sync.WaitGroup
	paused := make(chan struct{}, n)
	h := newHandler()
	h.onMessage = func(c *Conn, msg []byte) {
		if string(msg) == "echo" {
			c.WriteMessage(msg)
			return
		}
		m := string(msg)
		select {
		case queue <- m:
			return
		default:
		}
		c.PauseReading()
		paused <- struct{}{}
		pauses.Go(func() {
			queue <- m // waits here, off the loop, until there is room
			c.ResumeReading()
		})
	}
	s := serve(t, Config{Loops: 1}, h)
	t.Cleanup(pauses.Wait)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, other := s.dial(t, ctx), s.dial(t, ctx)
	sent := make(chan error, 1)
	go func() {
		for i := range n {
			if err := c.Write(ctx, websocket.MessageBinary, fmt.Appendf(bytes.Repeat([]byte{'x'}, 1000), "%d", i)); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	// Nothing is taken from the queue yet: the connection pauses.
	select {
	case <-paused:
	case <-ctx.Done():
		t.Fatal("the handler never paused")
	}
	if err := other.Write(ctx, websocket.MessageBinary, []byte("echo")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := other.Read(ctx); err != nil || string(msg) != "echo" {
		t.Fatalf("the other connection while this one is paused: %q, %v", msg, err)
	}
	for i := range n {
		select {
		case m := <-queue:
			if want := fmt.Sprintf("%s%d", bytes.Repeat([]byte{'x'}, 1000), i); m != want {
				t.Fatalf("message %d out of order: got %q...", i, m[1000:])
			}
		case <-ctx.Done():
			t.Fatalf("message %d never came", i)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
}

// A peer that never reads is closed as slow while another connection of
// the same loop keeps being served: the writer is never blocked.
func TestNeverReadingPeerAlone(t *testing.T) {
	h := newHandler()
	flooded := make(chan error, 1)
	h.onMessage = func(c *Conn, msg []byte) {
		if string(msg) != "flood me" {
			c.WriteMessage(msg)
			return
		}
		big := make([]byte, 256<<10)
		for range 4096 {
			if err := c.WriteMessage(big); err != nil {
				flooded <- err
				return
			}
		}
		flooded <- nil
	}
	s := serve(t, Config{Loops: 1, MaxQueued: 1 << 20}, h)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bad, good := s.dial(t, ctx), s.dial(t, ctx)
	if err := bad.Write(ctx, websocket.MessageBinary, []byte("flood me")); err != nil {
		t.Fatal(err)
	}
	if err := <-flooded; !errors.Is(err, ErrSlowPeer) {
		t.Fatalf("writes to the peer that never reads ended with %v, want ErrSlowPeer", err)
	}
	if err := h.waitClosed(t); !errors.Is(err, ErrSlowPeer) {
		t.Fatalf("closed with %v, want ErrSlowPeer", err)
	}
	for range 3 {
		if err := good.Write(ctx, websocket.MessageBinary, []byte("fine")); err != nil {
			t.Fatal(err)
		}
		if _, msg, err := good.Read(ctx); err != nil || string(msg) != "fine" {
			t.Fatalf("the other connection: echo %q, %v", msg, err)
		}
	}
}

// WaitQueued waits for the peer to take what is queued: it gives up
// after its timeout while the peer reads nothing, and returns once the
// peer read it.
func TestWaitQueued(t *testing.T) {
	h := newHandler()
	conns := make(chan *Conn, 1)
	h.onMessage = func(c *Conn, msg []byte) { conns <- c }
	s := serve(t, Config{MaxQueued: 64 << 20}, h)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := s.dial(t, ctx)
	c.SetReadLimit(1 << 20)
	if err := c.Write(ctx, websocket.MessageBinary, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	sc := <-conns
	big := make([]byte, 512<<10)
	sent := 0
	for sc.Queued() == 0 { // past the socket buffers
		if err := sc.WriteMessage(big); err != nil {
			t.Fatal(err)
		}
		sent++
	}
	if err := sc.WaitQueued(0, 50*time.Millisecond); !errors.Is(err, ErrSlowPeer) {
		t.Fatalf("WaitQueued while the peer reads nothing: %v, want ErrSlowPeer", err)
	}
	read := make(chan error, 1)
	go func() {
		for range sent {
			if _, _, err := c.Read(ctx); err != nil {
				read <- err
				return
			}
		}
		read <- nil
	}()
	if err := sc.WaitQueued(0, 30*time.Second); err != nil {
		t.Fatalf("WaitQueued while the peer reads: %v", err)
	}
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	sc.Close(ws.StatusNormalClosure, "")
	if err := sc.WaitQueued(0, time.Second); err != nil && !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitQueued after close: %v", err)
	}
}

// refuser answers refused messages with a last message of its own.
type refuser struct {
	*handler
	refused chan error
}

func (r refuser) Refused(c *Conn, err error) {
	r.refused <- err
	c.WriteMessage([]byte("refused: " + err.Error()))
}

// A Refuser's last message reaches the peer before the close frame, even
// when the peer is still sending the message that was refused.
func TestRefuserLastWord(t *testing.T) {
	h := refuser{newHandler(), make(chan error, 1)}
	s := serve(t, Config{}, h)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := s.dial(t, ctx)
	go c.Write(ctx, websocket.MessageBinary, make([]byte, 4*testMax)) // refused from its header on
	_, msg, err := c.Read(ctx)
	if err != nil || !bytes.HasPrefix(msg, []byte("refused: message too large")) {
		t.Fatalf("first read %q, %v; want the refusal", msg, err)
	}
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
		t.Fatalf("then %v, want close status %d", err, websocket.StatusMessageTooBig)
	}
	if err := <-h.refused; !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Refused told %v, want ErrTooLarge", err)
	}
	if err := h.waitClosed(t); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("closed with %v, want ErrTooLarge", err)
	}
}
