//go:build linux

package linkpoll

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"outpost.dev/test/harness"
	"outpost.dev/test/wait"
)

// watchedConn is a client's connection under crypto/tls, followed by a
// capture as the server's rawConn is, so that the test knows the
// client's keys and sequence numbers after the upgrade.
type watchedConn struct {
	net.Conn
	w *capture
}

func (c *watchedConn) Read(p []byte) (int, error) {
	if l := c.w.readLimit(); l > 0 && len(p) > l {
		p = p[:l]
	}
	n, err := c.Conn.Read(p)
	c.w.feed(dirIn, p[:max(n, 0)])
	return n, err
}

func (c *watchedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.w.feed(dirOut, p[:max(n, 0)])
	return n, err
}

// rawClient is a client whose handshake and upgrade crypto/tls did and
// whose record layer the test then drives itself: it can send anything.
type rawClient struct {
	t          *testing.T
	tcp        net.Conn
	rd, wr     trafficKeys
	suite      uint16
	keyUpdates int // KeyUpdates read from the server
}

func (s *server) dialRaw(t *testing.T) *rawClient {
	t.Helper()
	tcp, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tcp.Close() })
	tcp.SetDeadline(time.Now().Add(30 * time.Second))
	w := newCapture(false)
	cfg := s.tls.Clone()
	cfg.KeyLogWriter = w
	tc := tls.Client(&watchedConn{tcp, w}, cfg)
	u, _ := url.Parse("wss://" + s.addr + "/connect")
	br, _, err := ws.Dialer{}.Upgrade(tc, u)
	if err != nil {
		t.Fatal(err)
	}
	if br != nil && br.Buffered() > 0 {
		t.Fatal("bytes after the 101")
	}
	suite := tc.ConnectionState().CipherSuite
	if w.suite == nil || w.suite.id != suite {
		t.Fatalf("the capture read suite %v from the server's hello, negotiated %s", w.suite, tls.CipherSuiteName(suite))
	}
	rd, wr, err := w.adoptKeys(suite)
	if err != nil {
		t.Fatal(err)
	}
	return &rawClient{t: t, tcp: tcp, rd: rd, wr: wr, suite: suite}
}

func (c *rawClient) sendBytes(b []byte) {
	c.t.Helper()
	if _, err := c.tcp.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawClient) sealed(typ byte, pt []byte) []byte {
	c.t.Helper()
	b, err := c.wr.seal(nil, typ, pt)
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}

func (c *rawClient) send(typ byte, pt []byte) { c.sendBytes(c.sealed(typ, pt)) }

func (c *rawClient) sendMessage(msg string) {
	c.send(recordApplicationData, clientFrame(true, ws.OpBinary, []byte(msg)))
}

// record reads and opens the server's next record.
func (c *rawClient) record() (byte, []byte, error) {
	hdr := make([]byte, recordHeaderLen)
	if _, err := io.ReadFull(c.tcp, hdr); err != nil {
		return 0, nil, err
	}
	n, err := checkHeader(hdr)
	if err != nil {
		return 0, nil, err
	}
	rec := append(hdr, make([]byte, n)...)
	if _, err := io.ReadFull(c.tcp, rec[recordHeaderLen:]); err != nil {
		return 0, nil, err
	}
	return c.rd.open(rec)
}

// message reads the server's next message (one frame in one record, as
// the server writes small messages), following its KeyUpdates.
func (c *rawClient) message() string {
	c.t.Helper()
	for {
		typ, pt, err := c.record()
		if err != nil {
			c.t.Fatal(err)
		}
		switch typ {
		case recordHandshake:
			if len(pt) != 5 || pt[0] != handshakeKeyUpdate {
				c.t.Fatalf("handshake message %x from the server", pt)
			}
			c.keyUpdates++
			if err := c.rd.update(); err != nil {
				c.t.Fatal(err)
			}
			if pt[4] == 1 {
				c.send(recordHandshake, keyUpdateMsg(false))
				if err := c.wr.update(); err != nil {
					c.t.Fatal(err)
				}
			}
		case recordApplicationData:
			f, err := ws.ReadFrame(bytes.NewReader(pt))
			if err != nil {
				c.t.Fatal(err)
			}
			return string(f.Payload)
		default:
			c.t.Fatalf("record of type %d from the server: %x", typ, pt)
		}
	}
}

func (c *rawClient) echo(msg string) {
	c.t.Helper()
	c.sendMessage(msg)
	if got := c.message(); got != msg {
		c.t.Fatalf("echo %q, want %q", got, msg)
	}
}

func echoGood(t *testing.T, ctx context.Context, c *websocket.Conn, msg string) {
	t.Helper()
	if err := c.Write(ctx, websocket.MessageBinary, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	if _, got, err := c.Read(ctx); err != nil || string(got) != msg {
		t.Fatalf("echo %q, %v; want %q", got, err, msg)
	}
}

// The real crypto/tls client (the agent's) after adoption: messages both
// ways, large ones over many records, many small ones in a row, and the
// *tls.Conn is let go (nothing keeps it).
func TestTLSInterop(t *testing.T) {
	released := make(chan struct{}, 4)
	hello := make(chan string, 4)
	s := serveHook(t, Config{}, newHandler(), &adoptHook{before: func(tc *tls.Conn) {
		runtime.AddCleanup(tc, func(ch chan struct{}) { ch <- struct{}{} }, released)
		// The server's capture read the suite from its own hello, so it
		// made only that suite's keys.
		w := tc.NetConn().(*rawConn).watch
		w.mu.Lock()
		got := fmt.Sprintf("hello %v, %d and %d keys made", w.suite != nil && w.suite.id == tc.ConnectionState().CipherSuite,
			len(w.dirs[dirIn].cands), len(w.dirs[dirOut].cands))
		w.mu.Unlock()
		hello <- got
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := s.dial(t, ctx)
	if got := <-hello; got != "hello true, 1 and 1 keys made" {
		t.Errorf("server capture: %s", got)
	}
	for _, n := range []int{maxPlaintext - 20, maxPlaintext, 3*maxPlaintext + 1, testMax} {
		msg := bytes.Repeat([]byte{byte(n)}, n)
		msg[n-1] = 'x'
		if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
			t.Fatal(err)
		}
		if _, got, err := c.Read(ctx); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("%d bytes: echo of %d, %v", n, len(got), err)
		}
	}
	const many = 2000
	go func() {
		for i := range many {
			if c.Write(ctx, websocket.MessageBinary, fmt.Appendf(nil, "m%d", i)) != nil {
				return
			}
		}
	}()
	for i := range many {
		_, got, err := c.Read(ctx)
		if err != nil || string(got) != fmt.Sprintf("m%d", i) {
			t.Fatalf("message %d: %q, %v", i, got, err)
		}
	}
	wait.For(t, 10*time.Second, "the adopted *tls.Conn to be collected", func() bool {
		runtime.GC()
		select {
		case <-released:
			return true
		default:
			return false
		}
	})
	echoGood(t, ctx, c, "still there")
}

// The relay side asks for a KeyUpdate: Go's client answers with its own
// and both sides move to their next keys; messages keep flowing.
func TestKeyUpdateInterop(t *testing.T) {
	h := newHandler()
	secrets := make(chan []byte, 16)
	h.onMessage = func(c *Conn, msg []byte) {
		secrets <- bytes.Clone(c.rd.keys.secret) // the loop goroutine's
		if string(msg) == "rotate" {
			c.raw.mu.Lock()
			before := bytes.Clone(c.raw.wr.secret)
			c.raw.mu.Unlock()
			if err := c.updateKeys(true); err != nil {
				t.Error(err)
			}
			c.raw.mu.Lock()
			if bytes.Equal(before, c.raw.wr.secret) || c.raw.wr.seq != 0 {
				t.Error("the write key did not move on")
			}
			c.raw.mu.Unlock()
		}
		c.WriteMessage(msg)
	}
	s := serve(t, Config{}, h)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := s.dial(t, ctx)
	for round := range 3 {
		echoGood(t, ctx, c, "rotate")
		at := <-secrets
		echoGood(t, ctx, c, "after")
		after := <-secrets
		if bytes.Equal(at, after) {
			t.Fatalf("round %d: the client's KeyUpdate did not move the read key on", round)
		}
	}
	echoGood(t, ctx, c, strings.Repeat("big", 30000))
	<-secrets
}

// After writeKeyLimit records under one key, the relay updates its write
// key by itself (not asking the peer to): Go's client follows.
func TestWriteKeyLimit(t *testing.T) {
	old := writeKeyLimit
	writeKeyLimit = 3
	t.Cleanup(func() { writeKeyLimit = old })
	h := newHandler()
	conns := make(chan *Conn, 1)
	h.onMessage = func(c *Conn, msg []byte) {
		select {
		case conns <- c:
		default:
		}
		c.WriteMessage(msg)
	}
	s := serve(t, Config{}, h)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := s.dial(t, ctx)
	echoGood(t, ctx, c, "first")
	sc := <-conns
	sc.raw.mu.Lock()
	first := bytes.Clone(sc.raw.wr.secret)
	sc.raw.mu.Unlock()
	for i := range 10 {
		echoGood(t, ctx, c, fmt.Sprint(i))
	}
	echoGood(t, ctx, c, strings.Repeat("x", 5*maxPlaintext)) // 6 records
	sc.raw.mu.Lock()
	defer sc.raw.mu.Unlock()
	if bytes.Equal(first, sc.raw.wr.secret) || sc.raw.wr.seq > writeKeyLimit {
		t.Fatalf("write key not updated after %d records (sequence %d)", writeKeyLimit, sc.raw.wr.seq)
	}
}

// The peer asks for a KeyUpdate: the relay answers with its own before
// any more data, and takes the peer's new key.
func TestPeerKeyUpdate(t *testing.T) {
	s := serve(t, Config{}, newHandler())
	c := s.dialRaw(t)
	c.echo("before")
	for round := range 3 {
		c.send(recordHandshake, keyUpdateMsg(true))
		if err := c.wr.update(); err != nil {
			t.Fatal(err)
		}
		c.echo(fmt.Sprint("after ", round))
		if c.keyUpdates != round+1 {
			t.Fatalf("round %d: %d KeyUpdates from the relay", round, c.keyUpdates)
		}
	}
	// Not requested: no answer.
	c.send(recordHandshake, keyUpdateMsg(false))
	c.wr.update()
	c.echo("quiet")
	if c.keyUpdates != 3 {
		t.Fatalf("the relay answered a KeyUpdate that asked for none (%d)", c.keyUpdates)
	}
}

// The peer's close_notify ends the connection as io.EOF.
func TestCloseNotify(t *testing.T) {
	h := newHandler()
	s := serve(t, Config{}, h)
	c := s.dialRaw(t)
	c.echo("hi")
	c.send(recordAlert, []byte{1, byte(alertCloseNotify)})
	if err := h.waitClosed(t); err != io.EOF {
		t.Fatalf("closed with %v, want io.EOF", err)
	}
	// The relay's close_notify comes back, then the end.
	if typ, pt, err := c.record(); err != nil || typ != recordAlert || !bytes.Equal(pt, []byte{1, 0}) {
		t.Fatalf("after close_notify the relay sent %d %x, %v", typ, pt, err)
	}
}

// Hostile records after adoption: each ends only its connection, with
// an error that says what was wrong and, for an error of the peer, the
// alert for it; another connection of the same loop is served
// throughout.
func TestHostileRecords(t *testing.T) {
	h := newHandler()
	s := serve(t, Config{Loops: 1}, h)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	good := s.dial(t, ctx)
	for _, tc := range []struct {
		name   string
		send   func(c *rawClient)
		alert  alert // sent back; 0: none (the peer's own alert)
		remote bool
		why    string
	}{
		{"bad tag", func(c *rawClient) {
			b := c.sealed(recordApplicationData, clientFrame(true, ws.OpBinary, []byte("x")))
			b[len(b)-3] ^= 0x40
			c.sendBytes(b)
		}, alertBadRecordMAC, false, "does not authenticate"},
		{"oversized record", func(c *rawClient) {
			c.sendBytes([]byte{23, 3, 3, (maxCiphertext + 1) >> 8, (maxCiphertext + 1) & 0xff})
		}, alertRecordOverflow, false, "the limit is 16640"},
		{"wrong outer type", func(c *rawClient) { c.sendBytes([]byte{22, 3, 3, 0, 2, 1, 2}) }, alertUnexpectedMessage, false, "unprotected record of type 22"},
		{"change_cipher_spec after the handshake", func(c *rawClient) { c.sendBytes([]byte{20, 3, 3, 0, 1, 1}) }, alertUnexpectedMessage, false, "change_cipher_spec"},
		{"bad alert", func(c *rawClient) { c.send(recordAlert, []byte{2}) }, alertUnexpectedMessage, false, "alert record of 1 bytes"},
		{"the peer's alert", func(c *rawClient) { c.send(recordAlert, []byte{2, 40}) }, 0, true, "the peer sent alert handshake_failure"},
		{"unknown handshake type", func(c *rawClient) { c.send(recordHandshake, []byte{4, 0, 0, 1, 0}) }, alertUnexpectedMessage, false, "handshake message of type 4"},
		{"truncated KeyUpdate", func(c *rawClient) { c.send(recordHandshake, []byte{24, 0, 0, 1}) }, alertUnexpectedMessage, false, "KeyUpdate split"},
		{"all-zero inner plaintext", func(c *rawClient) { c.send(0, []byte{0, 0}) }, alertUnexpectedMessage, false, "all zeros"},
		{"record under the old key after a KeyUpdate", func(c *rawClient) {
			c.send(recordHandshake, keyUpdateMsg(false))
			c.send(recordApplicationData, clientFrame(true, ws.OpBinary, []byte("old key"))) // c.wr not updated
		}, alertBadRecordMAC, false, "does not authenticate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := s.dialRaw(t)
			c.echo("hello")
			tc.send(c)
			err := h.waitClosed(t)
			if !errors.Is(err, ErrTLS) || !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("closed with %v, want a TLS error saying %q", err, tc.why)
			}
			typ, pt, rerr := c.record()
			switch {
			case tc.remote:
				if rerr == nil {
					t.Fatalf("the relay answered the peer's alert with %d %x", typ, pt)
				}
			case rerr != nil || typ != recordAlert || !bytes.Equal(pt, []byte{2, byte(tc.alert)}):
				t.Fatalf("the relay sent %d %x, %v; want fatal alert %s", typ, pt, rerr, tc.alert)
			}
			echoGood(t, ctx, good, "fine after "+tc.name)
		})
	}
}

// A link that did not negotiate TLS 1.3 is refused by Adopt, saying so.
func TestAdoptRefusesTLS12(t *testing.T) {
	hook := &adoptHook{failed: make(chan error, 1)}
	s := serveHook(t, Config{}, newHandler(), hook)
	cfg := s.tls.Clone()
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	d := ws.Dialer{TLSConfig: cfg}
	if c, _, _, err := d.Dial(context.Background(), "wss://"+s.addr+"/connect"); err == nil {
		defer c.Close()
	}
	select {
	case err := <-hook.failed:
		if !strings.Contains(err.Error(), "TLS 1.2 negotiated; adoption needs TLS 1.3") {
			t.Fatalf("Adopt: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Adopt took a TLS 1.2 connection")
	}
}

// Without the poller's TLS configuration the secrets are not known:
// Adopt refuses, saying what is missing.
func TestAdoptNeedsTLSConfig(t *testing.T) {
	p, err := New(Config{MaxMessage: 1024, Loops: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := serve(t, Config{}, newHandler()) // for its certificate and client config
	failed := make(chan error, 1)
	go func() {
		c, err := p.Listener(ln).Accept()
		if err != nil {
			failed <- err
			return
		}
		srv := tls.Server(c, &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.cert, nil
		}})
		if err := srv.Handshake(); err != nil {
			failed <- err
			return
		}
		_, err = p.Adopt(srv, func(*Conn) Handler { return newHandler() })
		failed <- err
	}()
	cc, err := tls.Dial("tcp", ln.Addr().String(), s.tls)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if err := <-failed; !errors.Is(err, errNoSecrets) {
		t.Fatalf("Adopt: %v, want %v", err, errNoSecrets)
	}
}

// TLS_CHACHA20_POLY1305_SHA256: what Go negotiates without AES
// hardware. The test runs itself again with GODEBUG=cpu.aes=off.
func TestChaCha20(t *testing.T) {
	if os.Getenv("LINKPOLL_TEST_CHACHA") == "" {
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(exe, "-test.run", "^TestChaCha20$", "-test.count", "1", "-test.v")
		godebug := "cpu.aes=off"
		if v := os.Getenv("GODEBUG"); v != "" {
			godebug = v + "," + godebug
		}
		cmd.Env = append(os.Environ(), "LINKPOLL_TEST_CHACHA=1", "GODEBUG="+godebug)
		out, err := cmd.CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("negotiated TLS_CHACHA20_POLY1305_SHA256")) {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	s := serve(t, Config{}, newHandler())
	c, br, _, err := ws.Dialer{TLSConfig: s.tls}.Dial(context.Background(), "wss://"+s.addr+"/connect")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if br != nil {
		t.Fatal("bytes after the 101")
	}
	suite := c.(*tls.Conn).ConnectionState().CipherSuite
	if suite != tls.TLS_CHACHA20_POLY1305_SHA256 {
		t.Fatalf("negotiated %s, want TLS_CHACHA20_POLY1305_SHA256", tls.CipherSuiteName(suite))
	}
	for _, n := range []int{1, 1000, 3*maxPlaintext + 5, testMax} {
		msg := bytes.Repeat([]byte{byte(n)}, n)
		if err := wsutil.WriteClientBinary(c, msg); err != nil {
			t.Fatal(err)
		}
		if got, err := wsutil.ReadServerBinary(c); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("%d bytes: echo of %d, %v", n, len(got), err)
		}
	}
	t.Logf("negotiated %s", tls.CipherSuiteName(suite))
}

// TLS_AES_256_GCM_SHA384, which a Go server never picks for a Go client:
// OpenSSL's client, offering only it.
func TestOpenSSLAES256(t *testing.T) {
	openssl := harness.RequireTool(t, "openssl", "openssl")
	var suite atomic.Uint32
	s := serveHook(t, Config{}, newHandler(), &adoptHook{before: func(tc *tls.Conn) {
		suite.Store(uint32(tc.ConnectionState().CipherSuite))
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, openssl, "s_client", "-connect", s.addr, "-tls1_3",
		"-ciphersuites", "TLS_AES_256_GCM_SHA384", "-quiet", "-nocommands", "-no_ticket")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	out := bufio.NewReader(outPipe)
	io.WriteString(in, "GET /connect HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	status, err := out.ReadString('\n')
	if err != nil || !strings.Contains(status, " 101 ") {
		t.Fatalf("upgrade answered %q, %v; openssl: %s", status, err, stderr.String())
	}
	for {
		line, err := out.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\r\n" {
			break
		}
	}
	for _, n := range []int{5, 2*maxPlaintext + 100} {
		msg := bytes.Repeat([]byte{'a' + byte(n%26)}, n)
		if _, err := in.Write(clientFrame(true, ws.OpBinary, msg)); err != nil {
			t.Fatal(err)
		}
		f, err := ws.ReadFrame(out)
		if err != nil || f.Header.OpCode != ws.OpBinary || !bytes.Equal(f.Payload, msg) {
			t.Fatalf("%d bytes: echo %v of %d bytes, %v", n, f.Header.OpCode, len(f.Payload), err)
		}
	}
	// Stored before Adopt, which came before the echoes.
	if got := uint16(suite.Load()); got != tls.TLS_AES_256_GCM_SHA384 {
		t.Fatalf("negotiated %s, want TLS_AES_256_GCM_SHA384", tls.CipherSuiteName(got))
	}
}
