package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	ltls "github.com/lesismal/llib/std/crypto/tls"
	"github.com/lesismal/nbio/logging"
	"github.com/lesismal/nbio/nbhttp"
	nbws "github.com/lesismal/nbio/nbhttp/websocket"

	"outpost.dev/cloud/pki"
	"outpost.dev/cloud/pki/mint"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

// The connections' clients run in a child process (this test binary
// again), so the figures are the server's alone. The child is started
// from init, before TestMain, so this file needs nothing from the other
// benchmarks' TestMain.
const connsHelperEnv = "OUTPOST_BENCH_CONNS_HELPER"

func init() {
	if os.Getenv(connsHelperEnv) == "" {
		return
	}
	if err := runConnClients(); err != nil {
		fmt.Fprintln(os.Stderr, "conn clients:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// connHeartbeat is the heartbeat interval of the clients, the relay's
// default; the servers close a connection silent for three of them, as
// the relay does.
const connHeartbeat = 10 * time.Second

// connServer is one server design under test: it accepts mutual-TLS
// WebSocket connections on wire.PathConnect from clients whose
// certificate the CA signed, and answers each heartbeat frame with one.
type connServer interface {
	addr() string
	// connected is the number of connections upgraded and not closed;
	// echoed the heartbeats answered; tls13 the connections that
	// negotiated TLS 1.3.
	stats() (connected, echoed, tls13 int64)
	close()
}

type connCounters struct {
	connected, echoed, tls13 atomic.Int64
}

func (c *connCounters) stats() (int64, int64, int64) {
	return c.connected.Load(), c.echoed.Load(), c.tls13.Load()
}

// BenchmarkRelayConns measures what a server pays for N idle mutual-TLS
// WebSocket connections (OUTPOST_BENCH_CONNS, default 10,000), each
// heartbeating every 10 s, in these designs: "std", the relay's stack before
// it moved to cloud/linkpoll (net/http's TLS server,
// github.com/coder/websocket, a reader goroutine per connection); "nbio", an epoll event loop
// with non-blocking TLS and WebSocket framing (github.com/lesismal/nbio's
// nbhttp and websocket over github.com/lesismal/llib's crypto/tls fork)
// that runs no goroutine per connection, its callbacks on a goroutine
// pool, or on the poller ("nbio-inline"); and "linkpoll"
// (cloud/linkpoll: net/http and crypto/tls for the handshake and the
// upgrade, then an epoll loop over crypto/tls with github.com/gobwas/ws's
// framing). The clients are coder/websocket over crypto/tls, TLS 1.3
// only, in a child process. Per connection: Go heap in use and stacks
// after GC, resident memory, goroutines; what connecting allocated (the
// TLS handshakes' and upgrades' transient garbage); and then the CPU the
// server spent per heartbeat answered over OUTPOST_BENCH_CONNS_WINDOW
// (default 30s). OUTPOST_BENCH_HEAPPROFILE=prefix writes
// prefix-DESIGN.prof once all are connected.
func BenchmarkRelayConns(b *testing.B) {
	n := 10000
	if v := os.Getenv("OUTPOST_BENCH_CONNS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			b.Fatalf("OUTPOST_BENCH_CONNS=%q: want a positive count", v)
		}
	}
	window := 30 * time.Second
	if v := os.Getenv("OUTPOST_BENCH_CONNS_WINDOW"); v != "" {
		var err error
		if window, err = time.ParseDuration(v); err != nil || window <= 0 {
			b.Fatalf("OUTPOST_BENCH_CONNS_WINDOW=%q: want a positive duration", v)
		}
	}
	ca, err := pki.Generate(time.Now())
	if err != nil {
		b.Fatal(err)
	}
	serving, err := ca.ServingCert([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	caFile := writeChildCA(b, ca)
	verify := func(certs []*x509.Certificate) error { return verifyConnCert(ca.Pool(), certs) }
	for _, d := range connDesigns(serving, verify, n) {
		b.Run(d.name, func(b *testing.B) {
			for b.Loop() {
				benchConns(b, d.name, d.start, n, window, caFile)
			}
		})
	}
}

// connDesign is a server design under test; start starts one for n
// connections with serving as its certificate, accepting client
// certificates verify accepts.
type connDesign struct {
	name  string
	start func(tb testing.TB) connServer
}

func connDesigns(serving tls.Certificate, verify func([]*x509.Certificate) error, n int) []connDesign {
	return []connDesign{
		{"std", func(tb testing.TB) connServer { return startStdConns(tb, serving, verify) }},
		{"nbio", func(tb testing.TB) connServer { return startNbioConns(tb, serving, verify, n, false) }},
		{"nbio-inline", func(tb testing.TB) connServer { return startNbioConns(tb, serving, verify, n, true) }},
		{"linkpoll", func(tb testing.TB) connServer { return startLinkpollConns(tb, serving, verify) }},
	}
}

func benchConns(b *testing.B, name string, start func(testing.TB) connServer, n int, window time.Duration, caFile string) {
	debug.FreeOSMemory()
	before := measure()
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	srv := start(b)
	defer srv.close()

	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), connsHelperEnv+"=1", "OUTPOST_BENCH_CONNS_N="+strconv.Itoa(n),
		"OUTPOST_BENCH_CONNS_ADDR="+srv.addr(), "OUTPOST_BENCH_CONNS_CA="+caFile)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	began := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready") {
		b.Fatalf("clients: %q %v", line, err)
	}
	took := time.Since(began)
	// The child says ready once its side of every upgrade is done; the
	// server counts a connection once its handler saw it upgraded.
	wait.State(b, context.Background(), time.Minute, name+": every connection counted by the server", func() (bool, string) {
		c, _, _ := srv.stats()
		return c == int64(n), fmt.Sprintf("%d of %d", c, n)
	})
	// Before any GC: the live heap plus the connecting's garbage.
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	after := measure()
	if p := os.Getenv("OUTPOST_BENCH_HEAPPROFILE"); p != "" {
		if f, err := os.Create(p + "-" + name + ".prof"); err == nil {
			pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	connected, _, tls13 := srv.stats()
	if tls13 != connected {
		b.Fatalf("%s: %d of %d connections negotiated TLS 1.3", name, tls13, connected)
	}
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) / 1024 }
	b.ReportMetric(per(after.heap, before.heap), "heap-KiB/conn")
	b.ReportMetric(per(after.stack, before.stack), "stack-KiB/conn")
	b.ReportMetric(per(after.heap+after.stack, before.heap+before.stack), "go-KiB/conn")
	b.ReportMetric(per(after.rss, before.rss), "RSS-KiB/conn")
	b.ReportMetric(float64(after.goroutines-before.goroutines)/float64(n), "goroutines/conn")
	b.ReportMetric(per(ms1.TotalAlloc, ms0.TotalAlloc), "alloc-KiB/connect")
	b.Logf("%s: %d connections in %v; heap %d→%d KiB (%d KiB before GC), stacks %d→%d KiB, RSS %d→%d KiB, goroutines %d→%d",
		name, n, took.Round(time.Millisecond), before.heap>>10, after.heap>>10, ms1.HeapInuse>>10,
		before.stack>>10, after.stack>>10, before.rss>>10, after.rss>>10, before.goroutines, after.goroutines)

	// Heartbeats: the server's CPU (user + system) per heartbeat
	// answered, everything in the process counted (GC included).
	_, e0, _ := srv.stats()
	cpu0 := processCPU()
	time.Sleep(window)
	cpu1 := processCPU()
	c, e1, _ := srv.stats()
	if c != int64(n) {
		b.Fatalf("%s: %d of %d connections left after the heartbeat window", name, c, n)
	}
	beats := e1 - e0
	// Each client heartbeats every connHeartbeat; allow for the ones
	// straddling the window's ends.
	if want := float64(n) * window.Seconds() / connHeartbeat.Seconds(); float64(beats) < 0.9*want {
		b.Fatalf("%s: %d heartbeats answered in %v, want about %.0f", name, beats, window, want)
	}
	cpu := cpu1 - cpu0
	b.ReportMetric(float64(cpu.Microseconds())/float64(beats), "CPU-µs/heartbeat")
	b.ReportMetric(100*cpu.Seconds()/window.Seconds(), "CPU-%")
	b.Logf("%s: %d heartbeats answered in %v, %v of CPU; load average %s", name, beats, window, cpu.Round(time.Millisecond), loadAvg())
}

// processCPU is the CPU time this process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// verifyConnCert verifies a client certificate chain as a node
// certificate signed by the CA in roots, as the relay does at the TLS
// handshake (its verifyNode, less the expiry grace).
func verifyConnCert(roots *x509.CertPool, certs []*x509.Certificate) error {
	if len(certs) == 0 {
		return errors.New("a client certificate is required")
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := certs[0].Verify(opts); err != nil {
		return err
	}
	if !slices.Contains(certs[0].Subject.Organization, pki.NodesGroup) {
		return errors.New("not a node certificate")
	}
	return nil
}

// heartbeatFrame is the encoded heartbeat both sides send.
var heartbeatFrame = func() []byte {
	b, err := wire.Encode(wire.TypeHeartbeat, 0, nil)
	if err != nil {
		panic(err)
	}
	return b
}()

// isHeartbeat says whether msg is a valid heartbeat frame.
func isHeartbeat(msg []byte) bool {
	f, err := wire.Decode(msg)
	return err == nil && f.Type == wire.TypeHeartbeat && f.DecodeBody(&wire.Heartbeat{}) == nil
}

// stdConns is the relay's former stack (before cloud/linkpoll): net/http
// serving TLS, the connection hijacked by coder/websocket, and the
// handler's goroutine reading it, each read bounded by three heartbeat
// intervals, as the relay's conn.serve did.
type stdConns struct {
	connCounters
	ln     net.Listener
	hs     *http.Server
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// serverTLS is the standard library's server configuration of the
// designs on crypto/tls, as relay.Server.TLSConfig: the certificate is
// optional at the TLS layer (join serves nodes without one) and verified
// when given.
func serverTLS(serving tls.Certificate, verify func([]*x509.Certificate) error) *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS12,
		Certificates:     []tls.Certificate{serving},
		ClientAuth:       tls.RequestClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error { return verifyIfGiven(verify, cs.PeerCertificates) },
		NextProtos:       []string{"http/1.1"},
	}
}

func startStdConns(b testing.TB, serving tls.Certificate, verify func([]*x509.Certificate) error) connServer {
	s := &stdConns{}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	var err error
	if s.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	tc := serverTLS(serving, verify)
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+wire.PathConnect, s.serve)
	s.hs = &http.Server{Handler: mux, TLSConfig: tc, ReadHeaderTimeout: 10 * time.Second, ErrorLog: nil}
	go s.hs.Serve(tls.NewListener(s.ln, tc))
	return s
}

func verifyIfGiven(verify func([]*x509.Certificate) error, certs []*x509.Certificate) error {
	if len(certs) == 0 {
		return nil
	}
	return verify(certs)
}

func (s *stdConns) serve(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		http.Error(w, "a node certificate is required", http.StatusUnauthorized)
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return
	}
	defer ws.CloseNow()
	ws.SetReadLimit(wire.MaxFrameSize)
	s.wg.Add(1)
	defer s.wg.Done()
	if r.TLS.Version == tls.VersionTLS13 {
		s.tls13.Add(1)
	}
	s.connected.Add(1)
	defer s.connected.Add(-1)
	for {
		msg, err := s.read(ws)
		if err != nil {
			return
		}
		if !isHeartbeat(msg) {
			ws.Close(websocket.StatusPolicyViolation, "heartbeats only")
			return
		}
		ctx, cancel := context.WithTimeout(s.ctx, writeTimeout)
		err = ws.Write(ctx, websocket.MessageBinary, heartbeatFrame)
		cancel()
		if err != nil {
			return
		}
		s.echoed.Add(1)
	}
}

// writeTimeout bounds one frame write, as the relay's.
const writeTimeout = 10 * time.Second

func (s *stdConns) read(ws *websocket.Conn) ([]byte, error) {
	ctx, cancel := context.WithTimeout(s.ctx, 3*connHeartbeat)
	defer cancel()
	typ, r, err := ws.Reader(ctx)
	if err != nil {
		return nil, err
	}
	if typ != websocket.MessageBinary {
		return nil, errors.New("text message")
	}
	return io.ReadAll(io.LimitReader(r, wire.MaxFrameSize))
}

func (s *stdConns) addr() string { return s.ln.Addr().String() }

func (s *stdConns) close() {
	s.hs.Close()
	s.cancel() // ends the hijacked connections' reads
	s.wg.Wait()
}

// nbioConns is the event-driven design: nbhttp's epoll loops read every
// connection, llib's crypto/tls fork decrypts what arrived without
// blocking, and the WebSocket frames are handed to OnMessage, run on a
// bounded goroutine pool; a silent connection is closed by the engine's
// timer (Upgrader.KeepaliveTime), not by a goroutine waiting.
type nbioConns struct {
	connCounters
	ln     net.Listener
	engine *nbhttp.Engine
}

func startNbioConns(b testing.TB, serving tls.Certificate, verify func([]*x509.Certificate) error, n int, inline bool) connServer {
	logging.SetLevel(logging.LevelNone)
	s := &nbioConns{}
	var err error
	if s.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	tc := &ltls.Config{
		MinVersion:       ltls.VersionTLS12,
		Certificates:     []ltls.Certificate{{Certificate: serving.Certificate, PrivateKey: serving.PrivateKey}},
		ClientAuth:       ltls.RequestClientCert,
		VerifyConnection: func(cs ltls.ConnectionState) error { return verifyIfGiven(verify, cs.PeerCertificates) },
		NextProtos:       []string{"http/1.1"},
	}
	u := nbws.NewUpgrader()
	u.KeepaliveTime = 3 * connHeartbeat
	u.MessageLengthLimit = wire.MaxFrameSize
	u.OnMessage(func(c *nbws.Conn, mt nbws.MessageType, msg []byte) {
		if mt != nbws.BinaryMessage || !isHeartbeat(msg) {
			c.WriteClose(int(websocket.StatusPolicyViolation), "heartbeats only")
			c.Close()
			return
		}
		if c.WriteMessage(nbws.BinaryMessage, heartbeatFrame) == nil {
			s.echoed.Add(1)
		}
	})
	u.OnClose(func(c *nbws.Conn, err error) { s.connected.Add(-1) })
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+wire.PathConnect, func(w http.ResponseWriter, r *http.Request) {
		cs, ok := nbioTLSState(w)
		if !ok || len(cs.PeerCertificates) == 0 {
			http.Error(w, "a node certificate is required", http.StatusUnauthorized)
			return
		}
		if _, err := u.Upgrade(w, r, nil); err != nil {
			return
		}
		if cs.Version == ltls.VersionTLS13 {
			s.tls13.Add(1)
		}
		s.connected.Add(1)
	})
	var executor func(func())
	if inline {
		// The callbacks run on the poller goroutine that read the data:
		// no hand-off, but a callback that blocks stalls every
		// connection of that poller.
		executor = func(f func()) { f() }
	}
	s.engine = nbhttp.NewEngine(nbhttp.Config{
		ServerExecutor: executor,
		Network:        "tcp",
		AddrsTLS:       []string{s.ln.Addr().String()},
		TLSConfig:      tc,
		Handler:        mux,
		MaxLoad:        n + 1024,
		Listen:         func(string, string) (net.Listener, error) { return s.ln, nil },
		// Frames are small; the relay bounds them at wire.MaxFrameSize.
		MaxWebsocketFramePayloadSize: wire.MaxFrameSize,
		ReleaseWebsocketPayload:      true,
		KeepaliveTime:                3 * connHeartbeat,
	})
	if err := s.engine.Start(); err != nil {
		b.Fatal(err)
	}
	return s
}

// nbioTLSState is the TLS state of the connection a request came on in
// nbhttp, which does not fill in http.Request.TLS.
func nbioTLSState(w http.ResponseWriter) (ltls.ConnectionState, bool) {
	resp, ok := w.(*nbhttp.Response)
	if !ok || resp.Parser == nil {
		return ltls.ConnectionState{}, false
	}
	c := resp.Parser.Conn
	if hc, ok := c.(*nbhttp.Conn); ok {
		c = hc.Conn
	}
	tc, ok := c.(*ltls.Conn)
	if !ok {
		return ltls.ConnectionState{}, false
	}
	return tc.ConnectionState(), true
}

func (s *nbioConns) addr() string { return s.ln.Addr().String() }

func (s *nbioConns) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s.engine.Shutdown(ctx)
}

// runConnClients is the child: it connects OUTPOST_BENCH_CONNS_N clients
// to OUTPOST_BENCH_CONNS_ADDR, each with its own node certificate signed
// by the CA in OUTPOST_BENCH_CONNS_CA, prints "ready", and heartbeats
// every connHeartbeat (the first at a random point of the first
// interval) until stdin closes. A connection that fails is reported and
// ends the child.
func runConnClients() error {
	n, err := strconv.Atoi(os.Getenv("OUTPOST_BENCH_CONNS_N"))
	if err != nil {
		return err
	}
	addr := os.Getenv("OUTPOST_BENCH_CONNS_ADDR")
	ca, err := readChildCA(os.Getenv("OUTPOST_BENCH_CONNS_CA"))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			c, err := dialConn(ctx, ca, addr, fmt.Sprintf("conn-%05d", i))
			<-sem
			wg.Done()
			if err != nil {
				errs <- err
				return
			}
			if err := heartbeatConn(ctx, c, time.Duration(i)*connHeartbeat/time.Duration(n)); err != nil && ctx.Err() == nil {
				fmt.Fprintf(os.Stderr, "conn-%05d: %v\n", i, err)
				os.Exit(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	return nil
}

func dialConn(ctx context.Context, ca *pki.CA, addr, name string) (*websocket.Conn, error) {
	key, err := mint.NewKey()
	if err != nil {
		return nil, err
	}
	cert, err := ca.SignNode(key.Public(), name, time.Hour)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}}
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c, _, err := websocket.Dial(dctx, "wss://"+addr+wire.PathConnect, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

// heartbeatConn sends a heartbeat every connHeartbeat from first on and
// reads its answer, until ctx ends or the connection fails.
func heartbeatConn(ctx context.Context, c *websocket.Conn, first time.Duration) error {
	defer c.CloseNow()
	t := time.NewTimer(first)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		t.Reset(connHeartbeat)
		wctx, cancel := context.WithTimeout(ctx, 2*connHeartbeat)
		err := c.Write(wctx, websocket.MessageBinary, heartbeatFrame)
		if err == nil {
			var msg []byte
			_, msg, err = c.Read(wctx)
			if err == nil && !isHeartbeat(msg) {
				err = errors.New("answer is not a heartbeat")
			}
		}
		cancel()
		if err != nil {
			return err
		}
	}
}
