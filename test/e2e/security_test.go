package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/cloud/pki"
	"outpost.dev/cloud/pki/mint"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

func TestJoinRejected(t *testing.T) {
	needStack(t)
	ctx := ctxFor(t, 2*time.Minute)
	good, err := st.CreateToken(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, _, _ := wire.ParseToken(good)
	mkSecret := func(id string, data map[string]string) string {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-" + id, Namespace: "kube-system"},
			Type:       "bootstrap.kubernetes.io/token",
			StringData: data,
		}
		if _, err := st.CP.Client().CoreV1().Secrets("kube-system").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		return id + "." + data["token-secret"]
	}
	expired := mkSecret("exp123", map[string]string{
		"token-id": "exp123", "token-secret": "0123456789abcdef",
		"expiration":         time.Now().Add(-2 * time.Hour).UTC().Format(time.RFC3339),
		"usage-outpost-join": "true",
	})
	kubeadm := mkSecret("kubead", map[string]string{
		"token-id": "kubead", "token-secret": "0123456789abcdef",
		"expiration":                     time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
		"usage-bootstrap-authentication": "true",
	})
	noUsage := mkSecret("nouse1", map[string]string{
		"token-id": "nouse1", "token-secret": "0123456789abcdef",
		"expiration": time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
	})
	// With the relay's CA given, the agent skips the CA signature check and
	// the relay itself must refuse the wrong secret.
	caSecret, err := st.CP.Client().CoreV1().Secrets("outpost-system").Get(ctx, "outpost-relay-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "relay-ca.crt")
	if err := os.WriteFile(caFile, caSecret.Data["tls.crt"], 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, token, want string
		args              []string
	}{
		{"wrong secret", id + ".0000000000000000", "not signed with this token's secret", nil},
		{"wrong secret with the CA pinned", id + ".0000000000000000", "rejected", []string{"--ca-file", caFile}},
		{"expired", expired, "expired", nil},
		{"unknown id", "zzzzzz.0123456789abcdef", "not found", nil},
		{"not marked for joins", noUsage, "usage-outpost-join", nil},
		{"a cluster bootstrap token", kubeadm, "cluster bootstrap token", nil},
		{"malformed", "not-a-token", "token", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, res := st.RunJoin(ctx, "rejected-"+strings.ReplaceAll(tt.name, " ", "-"), relay.URL, tt.token, tt.args...)
			msg := strings.TrimSpace(res.Stderr)
			if res.ExitCode == 0 {
				t.Fatalf("join succeeded with a bad token; stderr %q", msg)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("want a one-line reason, got:\n%s", msg)
			}
			if !strings.Contains(strings.ToLower(msg), tt.want) {
				t.Errorf("reason %q does not say %q", msg, tt.want)
			}
			if _, err := st.CP.Client().CoreV1().Nodes().Get(ctx, "rejected-"+strings.ReplaceAll(tt.name, " ", "-"), metav1.GetOptions{}); err == nil {
				t.Errorf("a node was created for a rejected join")
			}
		})
	}
}

// An Outpost join token is no credential for the API server, which
// accepts bootstrap tokens (as kubeadm runs it): a gateway's token must not
// let its holder ask the cluster for a kubelet certificate. A kubeadm-style
// token made the same way is accepted, so the check can tell them apart.
func TestJoinTokenIsNoClusterCredential(t *testing.T) {
	needStack(t)
	ctx := ctxFor(t, time.Minute)
	outpost, err := st.CreateToken(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-kadm01", Namespace: "kube-system"},
		Type:       "bootstrap.kubernetes.io/token",
		StringData: map[string]string{
			"token-id": "kadm01", "token-secret": "0123456789abcdef",
			"expiration":                     time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
			"usage-bootstrap-authentication": "true",
		},
	}
	if _, err := st.CP.Client().CoreV1().Secrets("kube-system").Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := st.CP.RESTConfig()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cfg.CAData) {
		ca, err := os.ReadFile(cfg.CAFile)
		if err != nil || !pool.AppendCertsFromPEM(ca) {
			t.Fatalf("API server CA: %v", err)
		}
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	status := func(token string) int {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, cfg.Host+"/api/v1/namespaces/default/pods", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status(outpost); got != http.StatusUnauthorized {
		t.Errorf("the API server answered %d to an Outpost join token, want 401: the token authenticates", got)
	}
	if got := status("kadm01.0123456789abcdef"); got == http.StatusUnauthorized {
		t.Errorf("the API server refused a cluster bootstrap token too (401): the check cannot tell the two apart")
	}
}

// The node name comes from the client certificate only: node mallory's
// certificate cannot write node edge-b, whatever its messages say.
func TestNodeCertificateCannotActForAnotherNode(t *testing.T) {
	twoAgents(t)
	ctx := ctxFor(t, 2*time.Minute)
	before, err := st.CP.Client().CoreV1().Nodes().Get(ctx, "edge-b", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m := joinPeer(t, ctx, "mallory")
	c := m.dial(t, ctx)
	defer c.CloseNow()
	send(t, ctx, c, wire.TypeHello, 0, helloFor("edge-b"))
	f := readFrame(t, ctx, c)
	var ack wire.HelloAck
	if f.Type != wire.TypeHelloAck || f.DecodeBody(&ack) != nil {
		t.Fatalf("want hello-ack, got %v", f.Type)
	}
	if ack.NodeName != "mallory" {
		t.Fatalf("relay calls the connection %q; the certificate says mallory", ack.NodeName)
	}
	ns := &wire.NodeStatus{Node: helloFor("edge-b").Node}
	ns.Node.MachineID = "stolen"
	send(t, ctx, c, wire.TypeNodeStatus, 1, ns)
	for {
		f = readFrame(t, ctx, c)
		if f.Type == wire.TypeAck {
			break
		}
	}
	after, err := stackClientNode(ctx, "edge-b")
	if err != nil {
		t.Fatal(err)
	}
	if after.Status.NodeInfo.MachineID != before.Status.NodeInfo.MachineID || after.Status.NodeInfo.MachineID == "stolen" {
		t.Errorf("edge-b's machineID changed from %q to %q through mallory's connection",
			before.Status.NodeInfo.MachineID, after.Status.NodeInfo.MachineID)
	}
	mal, err := stackClientNode(ctx, "mallory")
	if err != nil {
		t.Fatalf("mallory's own node: %v", err)
	}
	if mal.Status.NodeInfo.MachineID != "stolen" {
		t.Errorf("mallory's status write went nowhere: machineID %q", mal.Status.NodeInfo.MachineID)
	}

	// A certificate the relay did not sign, naming edge-b, gets nowhere.
	forged := selfSigned(t, "edge-b")
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{forged}, RootCAs: m.ca, ServerName: "127.0.0.1"}}}
	if c2, _, err := websocket.Dial(ctx, "wss://"+relay.Addr+wire.PathConnect, &websocket.DialOptions{HTTPClient: hc}); err == nil {
		c2.CloseNow()
		t.Error("a self-signed certificate naming edge-b was accepted")
	}
	// And without a token, the join endpoint will not issue edge-b a
	// certificate to a connection presenting mallory's.
	mc := &http.Client{Transport: &http.Transport{TLSClientConfig: m.tlsConfig()}}
	resp, err := mc.Post(relay.URL+wire.PathJoin, "application/json", strings.NewReader(`{"nodeName":"edge-b","csr":""}`))
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("join without a token succeeded")
		}
	}
}

func stackClientNode(ctx context.Context, name string) (*corev1.Node, error) {
	return st.CP.Client().CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
}

func readFrame(t *testing.T, ctx context.Context, c *websocket.Conn) wire.Frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	f, err := wire.Decode(b)
	if err != nil {
		t.Fatalf("relay sent a bad frame: %v", err)
	}
	return f
}

func selfSigned(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	pair, err := mint.NewPair(mint.Spec{CommonName: cn, Organizations: []string{pki.NodesGroup}, Client: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// Garbage, truncated, oversized and field-less frames close only the
// connection that sent them, with a reason; the real agents stay connected.
// Covers the classes of CVE-2022-31076 (a handler dereferencing a field the
// message left out) and CVE-2022-31078 / CVE-2026-62370 (a frame declaring a
// huge size so the receiver allocates it).
func TestBadFramesCloseOnlyThatConnection(t *testing.T) {
	twoAgents(t)
	ctx := ctxFor(t, 3*time.Minute)
	p := joinPeer(t, ctx, "fuzzy")
	hello, _ := wire.Encode(wire.TypeHello, 0, helloFor("fuzzy"))
	noNode := []byte{0xa2, 0x01, 0x01, 0x04, 0xa3, 0x01, 0x01, 0x02, 0x01, 0x03, 0x61, 0x76} // hello{1:1,2:1,3:"v"}, no node
	tests := []struct {
		name     string
		helloed  bool
		typ      websocket.MessageType
		payload  []byte
		wantCode websocket.StatusCode
	}{
		{"garbage first frame", false, websocket.MessageBinary, []byte("\xff\xfe not cbor at all"), 0},
		{"truncated frame", true, websocket.MessageBinary, hello[:len(hello)/2], 0},
		{"hello without node", false, websocket.MessageBinary, noNode, 0},
		{"frame declaring a huge body", true, websocket.MessageBinary, []byte{0xa2, 0x01, 0x05, 0x04, 0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 0},
		{"text message", false, websocket.MessageText, []byte(`{"type":"hello"}`), 0},
		{"oversized frame", true, websocket.MessageBinary, make([]byte, wire.MaxFrameSize+1), websocket.StatusMessageTooBig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := p.dial(t, ctx)
			defer c.CloseNow()
			if tt.helloed {
				if err := c.Write(ctx, websocket.MessageBinary, hello); err != nil {
					t.Fatal(err)
				}
				if f := readFrame(t, ctx, c); f.Type != wire.TypeHelloAck {
					t.Fatalf("want hello-ack, got %v", f.Type)
				}
			}
			_ = c.Write(ctx, tt.typ, tt.payload) // the relay may close mid-write
			errs, err := readUntilClosed(ctx, c)
			var ce websocket.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("connection not closed with a close frame: %v (errors: %s)", err, reasons(errs))
			}
			if ce.Reason == "" && len(errs) == 0 {
				t.Errorf("closed (%v) without a reason", ce.Code)
			}
			if ce.Code == websocket.StatusNormalClosure {
				t.Errorf("closed as normal: %v", ce)
			}
			if tt.wantCode != 0 && ce.Code != tt.wantCode {
				t.Errorf("close code %v, want %v", ce.Code, tt.wantCode)
			}
			t.Logf("closed %v %q; errors: %s", ce.Code, ce.Reason, reasons(errs))
		})
	}

	t.Run("websocket frame declaring 2^62 bytes", func(t *testing.T) {
		rssBefore := rssKB(t, relay.Proc.Pid())
		conn, err := tls.Dial("tcp", relay.Addr, p.tlsConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		key := make([]byte, 16)
		rand.Read(key)
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", wire.PathConnect, relay.Addr, base64.StdEncoding.EncodeToString(key))
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade: %v %v", resp, err)
		}
		hdr := []byte{0x82, 0xff} // FIN, binary; masked, 64-bit length
		hdr = binary.BigEndian.AppendUint64(hdr, 1<<62)
		hdr = append(hdr, 1, 2, 3, 4)
		conn.Write(append(hdr, make([]byte, 4096)...))
		conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		// Read until the relay closes; a close frame or EOF both do.
		var n int
		for {
			b := make([]byte, 512)
			k, err := br.Read(b)
			n += k
			if err != nil {
				var ne interface{ Timeout() bool }
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("relay kept the connection open after a 2^62-byte frame header")
				}
				break
			}
		}
		if grew := rssKB(t, relay.Proc.Pid()) - rssBefore; grew > 64<<10 {
			t.Errorf("relay RSS grew by %d KiB on a declared huge frame", grew)
		}
	})

	// The real agents never noticed.
	before := leaseRenewTimes(t, ctx)
	wait.State(t, ctx, 30*time.Second, "the real agents' leases to move after the bad frames", func() (bool, string) {
		after := leaseRenewTimes(t, ctx)
		return after["edge-a"].After(before["edge-a"]) && after["edge-b"].After(before["edge-b"]), fmt.Sprint(before, " then ", after)
	})
	for _, n := range []string{"edge-a", "edge-b"} {
		if s, _ := st.NodeReady(ctx, n); s != corev1.ConditionTrue {
			t.Errorf("%s is %q after another connection's bad frames", n, s)
		}
	}
	if relay.Proc.Exited() {
		t.Fatal("the relay died")
	}
}

func rssKB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}
