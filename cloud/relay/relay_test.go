package relay_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/fxamacker/cbor/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"outpost.dev/cloud/asnode"
	"outpost.dev/cloud/identity"
	"outpost.dev/cloud/nodes"
	"outpost.dev/cloud/pki"
	"outpost.dev/cloud/pki/mint"
	"outpost.dev/cloud/relay"
	"outpost.dev/cloud/relay/relaytest"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

type testRelay struct {
	srv    *relay.Server
	hs     *httptest.Server
	ca     *pki.CA
	client *fake.Clientset
	url    string // wss://

	mu    sync.Mutex
	certs map[string]tls.Certificate // by node name, see nodeCert
}

func newTestRelay(t testing.TB, mod func(*relay.Config)) *testRelay {
	t.Helper()
	ca, err := pki.Generate(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset()
	cfg := relay.Config{
		Client:   client,
		AsNode:   asnode.Same{C: client},
		CA:       ca,
		Version:  "test",
		Log:      slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		APICheck: func(context.Context) error { return nil },
	}
	if mod != nil {
		mod(&cfg)
		ca = cfg.CA
	}
	srv, hs := relaytest.Serve(t, cfg)
	return &testRelay{srv: srv, hs: hs, ca: ca, client: client, url: "wss" + strings.TrimPrefix(hs.URL, "https"),
		certs: map[string]tls.Certificate{}}
}

// testWriter sends relay logs to the test log, so failures show them.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// clientCert makes a client certificate signed by ca for name, with org.
func clientCert(t testing.TB, ca *pki.CA, name string, orgs ...string) tls.Certificate {
	t.Helper()
	if len(orgs) == 0 {
		key, _ := mint.NewKey()
		cert, err := ca.SignNode(key.Public(), name, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
	}
	pair, err := mint.NewPair(mint.Spec{CommonName: name, Organizations: orgs, Client: true,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

func (tr *testRelay) tlsConfig(certs ...tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: tr.ca.Pool(), Certificates: certs, NextProtos: []string{"http/1.1"}}
}

// httpClient is an HTTPS client of the relay (its agent endpoint or its
// kubelet API) that trusts the relay CA and presents certs.
func (tr *testRelay) httpClient(certs ...tls.Certificate) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tr.tlsConfig(certs...)}}
}

func (tr *testRelay) dialCert(t testing.TB, cert *tls.Certificate) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	var certs []tls.Certificate
	if cert != nil {
		certs = append(certs, *cert)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, tr.url+wire.PathConnect, &websocket.DialOptions{
		HTTPClient: tr.httpClient(certs...),
	})
	if c != nil {
		c.SetReadLimit(wire.MaxFrameSize)
		t.Cleanup(func() { c.CloseNow() })
	}
	return c, resp, err
}

// nodeCert is name's node certificate, recorded as a join records it
// (cloud/identity), so the relay accepts it; the same one every time.
func (tr *testRelay) nodeCert(t testing.TB, name string) tls.Certificate {
	t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if c, ok := tr.certs[name]; ok {
		return c
	}
	cert := clientCert(t, tr.ca, name)
	if err := identity.New(tr.client, relay.DefaultNamespace).Issue(context.Background(), name, identity.Serial(cert.Leaf), "", true); err != nil {
		t.Fatal(err)
	}
	tr.certs[name] = cert
	return cert
}

func (tr *testRelay) dial(t testing.TB, name string) *websocket.Conn {
	t.Helper()
	cert := tr.nodeCert(t, name)
	c, _, err := tr.dialCert(t, &cert)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func info() wire.NodeInfo {
	res := wire.Resources{CPUMillis: 4000, MemoryBytes: 2 << 30, Pods: 110, EphemeralStorage: 8 << 30}
	return wire.NodeInfo{
		Arch: "arm64", OS: "linux", Board: "sim", OSImage: "Debian GNU/Linux 12", KernelVersion: "6.1.0",
		Hostname: "gw", Addresses: []wire.Address{{Type: "InternalIP", Address: "10.0.0.7"}},
		Capacity: res, Allocatable: res, MachineID: "m1", BootID: "b1", ContainerRuntime: "containerd://1.6.20",
	}
}

func encode(t testing.TB, typ wire.Type, seq uint64, body wire.Body) []byte {
	t.Helper()
	b, err := wire.Encode(typ, seq, body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func helloFrame(t testing.TB) []byte {
	return encode(t, wire.TypeHello, 0, &wire.Hello{MinVersion: 1, MaxVersion: 1, AgentVersion: "v0.1.0", Node: info()})
}

func send(t testing.TB, c *websocket.Conn, b []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageBinary, b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// recv reads the next frame, skipping pod sync frames (the relay sends an
// initial one after every hello; TestInitialPodSync checks it).
func recv(t testing.TB, c *websocket.Conn) (wire.Frame, error) {
	t.Helper()
	for {
		f, err := recvAny(t, c)
		if err != nil || f.Type != wire.TypeSync {
			return f, err
		}
	}
}

func recvAny(t testing.TB, c *websocket.Conn) (wire.Frame, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		return wire.Frame{}, err
	}
	if typ != websocket.MessageBinary {
		t.Fatalf("relay sent a %v message", typ)
	}
	f, err := wire.Decode(b)
	if err != nil {
		t.Fatalf("relay sent an undecodable frame: %v", err)
	}
	return f, nil
}

func mustRecv(t testing.TB, c *websocket.Conn, want wire.Type) wire.Frame {
	t.Helper()
	f, err := recv(t, c)
	if err != nil {
		t.Fatalf("waiting for %s: %v", want, err)
	}
	if f.Type != want {
		t.Fatalf("got %s, want %s (body %x)", f.Type, want, f.Body)
	}
	return f
}

// hello connects name and completes the hello.
func (tr *testRelay) hello(t testing.TB, name string) *websocket.Conn {
	t.Helper()
	c := tr.dial(t, name)
	send(t, c, helloFrame(t))
	f := mustRecv(t, c, wire.TypeHelloAck)
	var ack wire.HelloAck
	if err := f.DecodeBody(&ack); err != nil {
		t.Fatal(err)
	}
	if ack.NodeName != name || ack.Version != 1 || ack.RelayVersion != "test" {
		t.Fatalf("hello-ack %+v", ack)
	}
	return c
}

// expectFatal reads until an Error frame with code, then expects the close.
func expectFatal(t *testing.T, c *websocket.Conn, code wire.ErrorCode, status websocket.StatusCode) {
	t.Helper()
	for {
		f, err := recv(t, c)
		if err != nil {
			t.Fatalf("connection ended (%v) before an error frame with code %d", err, code)
		}
		if f.Type != wire.TypeError {
			continue
		}
		var e wire.Error
		if err := f.DecodeBody(&e); err != nil {
			t.Fatal(err)
		}
		if e.Code != code || !e.Fatal || e.Reason == "" {
			t.Fatalf("error frame %+v, want fatal code %d with a reason", e, code)
		}
		t.Logf("relay said: %s", e.Reason)
		break
	}
	_, err := recv(t, c)
	if got := websocket.CloseStatus(err); got != status {
		t.Fatalf("close status %v (err %v), want %v", got, err, status)
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	wait.For(t, 10*time.Second, what, cond)
}

func getNode(tr *testRelay, name string) *corev1.Node {
	n, err := tr.client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return n
}

func TestHelloHeartbeatStatus(t *testing.T) {
	tr := newTestRelay(t, nil)
	c := tr.hello(t, "gw-1")

	waitFor(t, "node gw-1", func() bool { return getNode(tr, "gw-1") != nil })
	n := getNode(tr, "gw-1")
	if !nodes.IsEdge(n) || n.Labels[corev1.LabelArchStable] != "arm64" || n.Status.NodeInfo.KubeletVersion != "v0.1.0" {
		t.Fatalf("node %+v", n)
	}
	waitFor(t, "lease gw-1", func() bool {
		_, err := tr.client.CoordinationV1().Leases("kube-node-lease").Get(context.Background(), "gw-1", metav1.GetOptions{})
		return err == nil
	})

	send(t, c, encode(t, wire.TypeHeartbeat, 0, nil))
	mustRecv(t, c, wire.TypeHeartbeat)

	st := &wire.NodeStatus{Node: info(), Conditions: []wire.Condition{{Type: "DiskPressure", Status: "True", Reason: "Full"}}}
	send(t, c, encode(t, wire.TypeNodeStatus, 7, st))
	f := mustRecv(t, c, wire.TypeAck)
	if f.Ack != 7 {
		t.Fatalf("ack %d, want 7", f.Ack)
	}
	// Acked only after the write: the status must be there now.
	n = getNode(tr, "gw-1")
	found := false
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeDiskPressure && cond.Status == corev1.ConditionTrue {
			found = true
		}
	}
	if !found {
		t.Fatalf("acked status not written: %+v", n.Status.Conditions)
	}
	if tr.srv.Connected() != 1 {
		t.Fatalf("connected = %d", tr.srv.Connected())
	}
}

// A connected node's Node marked Unknown, as the node lifecycle
// controller marks one it found stale, is Ready again within seconds: the
// edge-Node informer tells the connection's node session, which writes
// the status at once instead of at its next refresh, minutes later.
func TestNodeMarkedUnknownWrittenReady(t *testing.T) {
	tr := newTestRelay(t, nil)
	c := tr.hello(t, "gw-unk")
	ready := func() corev1.ConditionStatus {
		n := getNode(tr, "gw-unk")
		if n == nil {
			return ""
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				return cond.Status
			}
		}
		return ""
	}
	waitFor(t, "node gw-unk Ready", func() bool { return ready() == corev1.ConditionTrue })
	send(t, c, encode(t, wire.TypeHeartbeat, 0, nil)) // the agent is heard from
	mustRecv(t, c, wire.TypeHeartbeat)

	n := getNode(tr, "gw-unk")
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == corev1.NodeReady {
			n.Status.Conditions[i].Status, n.Status.Conditions[i].Reason = corev1.ConditionUnknown, "NodeStatusUnknown"
		}
	}
	if _, err := tr.client.CoreV1().Nodes().UpdateStatus(context.Background(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node gw-unk Ready again after it was marked Unknown", func() bool { return ready() == corev1.ConditionTrue })
}

func TestUnknownTypeIsNotFatal(t *testing.T) {
	tr := newTestRelay(t, nil)
	c := tr.hello(t, "gw-1")
	b, _ := wire.EncodeFrame(wire.Frame{Type: 200, Body: cbor.RawMessage{0xa0}})
	send(t, c, b)
	f := mustRecv(t, c, wire.TypeError)
	var e wire.Error
	if err := f.DecodeBody(&e); err != nil || e.Code != wire.CodeUnknownType || e.Fatal {
		t.Fatalf("error %+v (%v)", e, err)
	}
	send(t, c, encode(t, wire.TypeHeartbeat, 0, nil))
	mustRecv(t, c, wire.TypeHeartbeat)
}

// rawFrame builds a frame whose body is arbitrary CBOR, skipping the
// sender-side validation a hostile peer would skip too.
func rawFrame(t *testing.T, typ wire.Type, seq uint64, body any) []byte {
	t.Helper()
	var raw cbor.RawMessage
	if body != nil {
		b, err := cbor.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		raw = b
	}
	b, err := wire.EncodeFrame(wire.Frame{Type: typ, Seq: seq, Body: raw})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBadFrames(t *testing.T) {
	tr := newTestRelay(t, nil)
	// A healthy agent connected throughout must not notice anything.
	healthy := tr.hello(t, "healthy")

	hello := helloFrame(t)
	statusNoNode := rawFrame(t, wire.TypeNodeStatus, 3, map[int]any{2: []any{}})
	for _, tc := range []struct {
		name       string
		afterHello bool
		text       bool
		msg        []byte
		code       wire.ErrorCode
		status     websocket.StatusCode
	}{
		{name: "garbage", msg: []byte{0xff, 0x00, 0x13, 0x37}, code: wire.CodeMalformed, status: websocket.StatusInvalidFramePayloadData},
		{name: "truncated", msg: hello[:len(hello)-5], code: wire.CodeMalformed, status: websocket.StatusInvalidFramePayloadData},
		{name: "empty", msg: []byte{}, code: wire.CodeMalformed, status: websocket.StatusInvalidFramePayloadData},
		// A CBOR byte string declaring 2^44 bytes it does not carry.
		{name: "declared huge cbor length", msg: []byte{0xa2, 0x01, 0x01, 0x04, 0x5b, 0, 0, 0x10, 0, 0, 0, 0, 0}, code: wire.CodeMalformed, status: websocket.StatusInvalidFramePayloadData},
		{name: "oversized", msg: make([]byte, wire.MaxFrameSize+10), code: wire.CodeTooLarge, status: websocket.StatusMessageTooBig},
		{name: "text", text: true, msg: []byte("hello"), code: wire.CodeMalformed, status: websocket.StatusUnsupportedData},
		// CVE-2022-31076 class: required fields left out.
		{name: "hello without node", msg: rawFrame(t, wire.TypeHello, 0, map[int]any{1: 1, 2: 1, 3: "v1"}), code: wire.CodeInvalid, status: websocket.StatusInvalidFramePayloadData},
		{name: "hello without body", msg: rawFrame(t, wire.TypeHello, 0, nil), code: wire.CodeInvalid, status: websocket.StatusInvalidFramePayloadData},
		{name: "hello body wrong shape", msg: rawFrame(t, wire.TypeHello, 0, []int{1, 2, 3}), code: wire.CodeMalformed, status: websocket.StatusInvalidFramePayloadData},
		{name: "hello bad label value", msg: encode(t, wire.TypeHello, 0, &wire.Hello{MinVersion: 1, MaxVersion: 1, AgentVersion: "v", Node: func() wire.NodeInfo { i := info(); i.Board = "bad board!"; return i }()}), code: wire.CodeInvalid, status: websocket.StatusPolicyViolation},
		{name: "frame without type", msg: rawFrame(t, 0, 0, nil), code: wire.CodeInvalid, status: websocket.StatusInvalidFramePayloadData},
		{name: "wrong first frame", msg: encode(t, wire.TypeHeartbeat, 0, nil), code: wire.CodeProtocol, status: websocket.StatusPolicyViolation},
		{name: "no common version", msg: encode(t, wire.TypeHello, 0, &wire.Hello{MinVersion: 7, MaxVersion: 9, AgentVersion: "v9", Node: info()}), code: wire.CodeVersion, status: websocket.StatusPolicyViolation},
		{name: "status without node", afterHello: true, msg: statusNoNode, code: wire.CodeInvalid, status: websocket.StatusInvalidFramePayloadData},
		{name: "status without seq", afterHello: true, msg: encode(t, wire.TypeNodeStatus, 0, &wire.NodeStatus{Node: info()}), code: wire.CodeInvalid, status: websocket.StatusPolicyViolation},
		{name: "second hello", afterHello: true, msg: hello, code: wire.CodeProtocol, status: websocket.StatusPolicyViolation},
		{name: "ack from agent", afterHello: true, msg: rawFrame(t, wire.TypeAck, 0, nil), code: wire.CodeProtocol, status: websocket.StatusPolicyViolation},
		{name: "garbage after hello", afterHello: true, msg: []byte{0x1f}, code: wire.CodeMalformed, status: websocket.StatusInvalidFramePayloadData},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c *websocket.Conn
			if tc.afterHello {
				c = tr.hello(t, "bad-"+strings.ReplaceAll(tc.name, " ", "-"))
			} else {
				c = tr.dial(t, "bad")
			}
			typ := websocket.MessageBinary
			if tc.text {
				typ = websocket.MessageText
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := c.Write(ctx, typ, tc.msg); err != nil {
				t.Fatal(err)
			}
			expectFatal(t, c, tc.code, tc.status)

			send(t, healthy, encode(t, wire.TypeHeartbeat, 0, nil))
			mustRecv(t, healthy, wire.TypeHeartbeat)
		})
	}
}

// TestDeclaredHugeWebSocketFrame sends a WebSocket frame header declaring
// 2^40 bytes: the relay must refuse it after MaxFrameSize bytes, say why,
// and close, without ever allocating what was declared.
func TestDeclaredHugeWebSocketFrame(t *testing.T) {
	tr := newTestRelay(t, nil)
	cert := tr.nodeCert(t, "huge")
	conn, err := tls.Dial("tcp", strings.TrimPrefix(tr.hs.URL, "https://"), tr.tlsConfig(cert))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", wire.PathConnect, key)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	// FIN + binary, masked, 64-bit length 2^40, zero mask.
	hdr := []byte{0x82, 0x80 | 127}
	hdr = binary.BigEndian.AppendUint64(hdr, 1<<40)
	hdr = append(hdr, 0, 0, 0, 0)
	go func() {
		conn.Write(hdr)
		chunk := make([]byte, 64<<10)
		for sent := 0; sent <= wire.MaxFrameSize+len(chunk); sent += len(chunk) {
			if _, err := conn.Write(chunk); err != nil {
				return
			}
		}
		// Then go quiet, as a hostile peer would.
	}()
	start := time.Now()
	var gotError bool
	for {
		op, payload, err := readServerFrame(br)
		if err != nil {
			t.Fatalf("reading relay frames: %v (error frame seen: %v)", err, gotError)
		}
		if op == 0x2 {
			f, err := wire.Decode(payload)
			if err != nil {
				t.Fatal(err)
			}
			var e wire.Error
			if f.Type != wire.TypeError || f.DecodeBody(&e) != nil || e.Code != wire.CodeTooLarge {
				t.Fatalf("frame %s %+v", f.Type, e)
			}
			gotError = true
		}
		if op == 0x8 {
			code := binary.BigEndian.Uint16(payload)
			if !gotError || code != uint16(websocket.StatusMessageTooBig) {
				t.Fatalf("close %d, error frame first: %v", code, gotError)
			}
			break
		}
	}
	// The relay must also give up on the connection, not wait for 1 TiB.
	_, err = io.Copy(io.Discard, br)
	if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
		t.Fatal("relay kept the connection open")
	}
	t.Logf("refused and closed in %s", time.Since(start).Round(time.Millisecond))
}

// readServerFrame reads one unmasked, unfragmented frame.
func readServerFrame(r *bufio.Reader) (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > 1<<16 {
		return 0, nil, fmt.Errorf("relay frame of %d bytes", n)
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(r, payload)
	return h[0] & 0x0f, payload, err
}

func TestConnectNeedsNodeCertificate(t *testing.T) {
	tr := newTestRelay(t, nil)
	_, resp, err := tr.dialCert(t, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no client cert: resp %v err %v", resp, err)
	}
	notNode := clientCert(t, tr.ca, "gw-1", "system:masters")
	_, resp, err = tr.dialCert(t, &notNode)
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("non-node cert: resp %v err %v", resp, err)
	}
	// A certificate from another CA fails the TLS handshake.
	other, _ := pki.Generate(time.Now())
	foreign := clientCert(t, other, "gw-1")
	if _, _, err := tr.dialCert(t, &foreign); err == nil {
		t.Fatal("certificate from a foreign CA accepted")
	}
}

// Links run TLS 1.3 (the poller's record layer): a valid node over TLS
// 1.2 is refused before the upgrade, saying why.
func TestConnectNeedsTLS13(t *testing.T) {
	tr := newTestRelay(t, nil)
	cfg := tr.tlsConfig(tr.nodeCert(t, "gw-1"))
	cfg.MaxVersion = tls.VersionTLS12
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, tr.url+wire.PathConnect, &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}},
	})
	if c != nil {
		c.CloseNow()
	}
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("TLS 1.2: resp %v err %v, want 400", resp, err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if !strings.Contains(string(body), "agent links need TLS 1.3; this connection negotiated TLS 1.2") {
		t.Fatalf("TLS 1.2 refused saying %q", body)
	}
	// The same node over TLS 1.3 is served.
	tr.hello(t, "gw-1")
}

func TestSecondConnectionReplacesFirst(t *testing.T) {
	tr := newTestRelay(t, nil)
	first := tr.hello(t, "gw-1")
	second := tr.hello(t, "gw-1")
	_, err := recv(t, first)
	if got := websocket.CloseStatus(err); got != relay.CloseReplaced {
		t.Fatalf("first connection: close %v (%v), want %v", got, err, relay.CloseReplaced)
	}
	send(t, second, encode(t, wire.TypeHeartbeat, 0, nil))
	mustRecv(t, second, wire.TypeHeartbeat)
	waitFor(t, "one connection", func() bool { return tr.srv.Connected() == 1 })
}

func TestSilentConnectionsClose(t *testing.T) {
	tr := newTestRelay(t, func(c *relay.Config) {
		c.HeartbeatInterval = time.Second
		c.HelloTimeout = 200 * time.Millisecond
	})
	quiet := tr.dial(t, "no-hello")
	start := time.Now()
	if _, err := recv(t, quiet); err == nil {
		t.Fatal("connection without a hello stayed open")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("hello timeout took %s", d)
	}

	c := tr.hello(t, "gw-1")
	start = time.Now()
	if _, err := recv(t, c); err == nil {
		t.Fatal("silent connection stayed open")
	}
	if d := time.Since(start); d < 2500*time.Millisecond || d > 6*time.Second {
		t.Fatalf("silent connection closed after %s, want about 3 heartbeat intervals", d)
	}
	waitFor(t, "no connections", func() bool { return tr.srv.Connected() == 0 })
}

func TestRefusesKubeletNode(t *testing.T) {
	tr := newTestRelay(t, nil)
	_, err := tr.client.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-1"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := tr.hello(t, "worker-1")
	expectFatal(t, c, wire.CodeForbidden, relay.CloseForbidden)
	if n := getNode(tr, "worker-1"); len(n.Status.Conditions) != 0 || nodes.IsEdge(n) {
		t.Fatal("relay wrote a kubelet's node")
	}
}

func TestCloseSaysGoingAwayAndKeepsNodeReady(t *testing.T) {
	tr := newTestRelay(t, nil)
	c := tr.hello(t, "gw-1")
	waitFor(t, "node", func() bool { return getNode(tr, "gw-1") != nil })
	before := getNode(tr, "gw-1").ResourceVersion
	tr.srv.Close()
	_, err := recv(t, c)
	if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
		t.Fatalf("close %v (%v), want going away", got, err)
	}
	if n := getNode(tr, "gw-1"); n.ResourceVersion != before {
		t.Fatal("relay wrote the node on shutdown")
	}
}

func TestHealthAndMetrics(t *testing.T) {
	var apiErr error
	tr := newTestRelay(t, func(c *relay.Config) {
		c.APICheck = func(context.Context) error { return apiErr }
	})
	c := tr.hello(t, "gw-1")
	send(t, c, encode(t, wire.TypeHeartbeat, 0, nil))
	mustRecv(t, c, wire.TypeHeartbeat)

	client := tr.httpClient()
	get := func(path string) (int, string) {
		resp, err := client.Get(tr.hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if s, _ := get("/healthz"); s != 200 {
		t.Fatalf("/healthz %d", s)
	}
	if s, _ := get("/readyz"); s != 200 {
		t.Fatalf("/readyz %d", s)
	}
	apiErr = errors.New("down") // cached for a few seconds: still ready
	if s, _ := get("/readyz"); s != 200 {
		t.Fatalf("/readyz %d right after a good check", s)
	}
	s, body := get("/metrics")
	if s != 200 {
		t.Fatalf("/metrics %d", s)
	}
	for _, want := range []string{
		"outpost_relay_connected_agents 1",
		`outpost_relay_frames_total{direction="in",type="heartbeat"} 1`,
		`outpost_relay_frames_total{direction="out",type="hello-ack"} 1`,
		`outpost_relay_frame_bytes_total{direction="in",type="hello"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// A Node that gets its pod CIDRs after its agent connected (the controller
// manager allocates them moments after the relay created the Node): the
// agent is told in a node-config frame, on the link it has.
func TestPodCIDRsPushed(t *testing.T) {
	tr := newTestRelay(t, nil)
	c := tr.hello(t, "gw-cidr")
	waitFor(t, "the Node created", func() bool { return getNode(tr, "gw-cidr") != nil })
	n := getNode(tr, "gw-cidr")
	n.Spec.PodCIDR, n.Spec.PodCIDRs = "10.244.7.0/24", []string{"10.244.7.0/24"}
	if _, err := tr.client.CoreV1().Nodes().Update(context.Background(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("no node-config: %v", err)
		}
		f, err := wire.Decode(b)
		if err != nil || f.Type != wire.TypeNodeConfig {
			continue // syncs, acks
		}
		var nc wire.NodeConfig
		if err := f.DecodeBody(&nc); err != nil || len(nc.PodCIDRs) != 1 || nc.PodCIDRs[0] != "10.244.7.0/24" {
			t.Fatalf("node-config %+v, %v", nc, err)
		}
		return
	}
}
