package upgrade_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	agentupgrade "outpost.dev/agent/upgrade"
	"outpost.dev/cloud/crd"
	"outpost.dev/cloud/identity"
	"outpost.dev/cloud/pki"
	"outpost.dev/cloud/pki/mint"
	"outpost.dev/cloud/relay"
	"outpost.dev/cloud/relay/relaytest"
	"outpost.dev/cloud/upgrade"
	"outpost.dev/test/harness"
	"outpost.dev/test/peer"
	"outpost.dev/test/stack"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

// env is a real control plane with the AgentUpgrade CRD applied and two
// relay replicas sharing it, an artifact server, and the publisher's
// signing key.
type env struct {
	t      *testing.T
	client kubernetes.Interface
	dyn    dynamic.Interface
	ca     *pki.CA
	ids    *identity.Registry
	relays []string // wss:// URLs
	priv   ed25519.PrivateKey
	pub    ed25519.PublicKey

	artMu sync.Mutex
	art   map[string][]byte // path → bytes served
	hits  map[string]int
	srv   *httptest.Server
}

func start(t *testing.T) *env {
	t.Helper()
	ctx := t.Context()
	ip := stack.StartInProcess(t, ctx, harness.Options{}, 100, 200)
	if err := upgrade.EnsureCRD(ctx, ip.Dynamic, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	e := &env{t: t, client: ip.Client, dyn: ip.Dynamic, ca: ip.CA, ids: identity.New(ip.Client, relay.DefaultNamespace),
		priv: priv, pub: priv.Public().(ed25519.PublicKey), art: map[string][]byte{}, hits: map[string]int{}}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.artMu.Lock()
		b, ok := e.art[r.URL.Path]
		e.hits[r.URL.Path]++
		e.artMu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(e.srv.Close)
	// Two replicas: they share nothing but the API server.
	for i := range 2 {
		log := slog.New(slog.NewTextHandler(testWriter{t, fmt.Sprintf("relay-%d", i)}, &slog.HandlerOptions{Level: slog.LevelInfo}))
		cfg := ip.RelayConfig(log)
		cfg.Dynamic, cfg.Upgrades = ip.Dynamic, &upgrade.Config{CacheDir: t.TempDir(), Resync: time.Second}
		_, hs := relaytest.Serve(t, cfg)
		e.relays = append(e.relays, "wss"+strings.TrimPrefix(hs.URL, "https"))
	}
	return e
}

type testWriter struct {
	t    *testing.T
	name string
}

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(w.name + ": " + strings.TrimSpace(string(p)))
	return len(p), nil
}

// publish serves artifact at path and returns the spec's artifact entry,
// signed with the publisher's key (as outpost-relay upgrade sign does).
func (e *env) publish(path, version string, artifact []byte) map[string]any {
	e.artMu.Lock()
	e.art[path] = artifact
	e.artMu.Unlock()
	sum := sha256.Sum256(artifact)
	return map[string]any{"arch": "arm64", "url": e.srv.URL + path, "size": int64(len(artifact)),
		"sha256": hex.EncodeToString(sum[:]), "signature": base64.StdEncoding.EncodeToString(upgrade.Sign(e.priv, version, sum))}
}

func (e *env) hitsOf(path string) int {
	e.artMu.Lock()
	defer e.artMu.Unlock()
	return e.hits[path]
}

func (e *env) create(name, version, group string, maxUnavailable any, artifacts ...map[string]any) error {
	arts := make([]any, len(artifacts))
	for i, a := range artifacts {
		arts[i] = a
	}
	spec := map[string]any{"version": version, "artifacts": arts, "trialSeconds": int64(60),
		"nodeSelector": map[string]any{"matchLabels": map[string]any{"outpost.test/group": group}}}
	if maxUnavailable != nil {
		spec["maxUnavailable"] = maxUnavailable
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": crd.APIVersion, "kind": upgrade.Kind,
		"metadata": map[string]any{"name": name}, "spec": spec}}
	_, err := e.dyn.Resource(upgrade.GVR).Create(e.t.Context(), u, metav1.CreateOptions{})
	return err
}

func (e *env) get(name string) *upgrade.AgentUpgrade {
	e.t.Helper()
	u, err := e.dyn.Resource(upgrade.GVR).Get(e.t.Context(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	a, err := upgrade.FromUnstructured(u)
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

func nodeOf(a *upgrade.AgentUpgrade, node string) (upgrade.NodeStatus, bool) {
	for _, n := range a.Status.Nodes {
		if n.Name == node {
			return n, true
		}
	}
	return upgrade.NodeStatus{}, false
}

// gw is a gateway at the protocol level: its own link code, but the
// agent's real upgrade manager (agent/upgrade) with a test double of the
// A/B slots behind the Installer interface.
type gw struct {
	e       *env
	name    string
	relay   string
	cert    tls.Certificate
	dir     string
	inst    *slots
	cutAt   atomic.Int64 // close the link once this many chunk bytes arrived (0: never)
	got     atomic.Int64 // chunk bytes on the current connection
	version string

	mu       sync.Mutex
	conn     *websocket.Conn
	seq      uint64
	pending  map[string]outEntry // the outbox: by key, last wins
	m        *agentupgrade.Manager
	stop     context.CancelFunc // the agent process
	connStop context.CancelFunc // the connection
	links    int                // connections made
	// resumed is set once the link was cut; firstAfter is the offset of
	// the first chunk request after that (-1 before).
	resumed    atomic.Bool
	firstAfter atomic.Int64
}

type outEntry struct {
	seq  uint64
	t    wire.Type
	body wire.Body
}

// slots is the Installer test double: it records what it was given;
// Switch hands the gateway to the test, which "restarts" it.
type slots struct {
	mu        sync.Mutex
	state     agentupgrade.State
	installed []byte
	switched  chan string
}

func (s *slots) Install(r io.Reader, version string, digest [32]byte) (string, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return "", err
	}
	if sha256.Sum256(b) != digest {
		return "", errors.New("digest mismatch")
	}
	s.mu.Lock()
	s.installed = b
	s.mu.Unlock()
	return "B", nil
}

func (s *slots) Switch(slot string, _ time.Duration) error {
	s.switched <- slot
	return nil
}

func (s *slots) MarkHealthy() error {
	s.mu.Lock()
	s.state.Trial = false
	s.mu.Unlock()
	return nil
}

func (s *slots) State() agentupgrade.State { s.mu.Lock(); defer s.mu.Unlock(); return s.state }

func (s *slots) got() []byte { s.mu.Lock(); defer s.mu.Unlock(); return s.installed }

func (e *env) gateway(name string, relay int, version string) *gw {
	e.t.Helper()
	key, err := mint.NewKey()
	if err != nil {
		e.t.Fatal(err)
	}
	cert, err := e.ca.SignNode(key.Public(), name, time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.ids.Issue(e.t.Context(), name, identity.Serial(cert), "", true); err != nil {
		e.t.Fatal(err)
	}
	g := &gw{e: e, name: name, relay: e.relays[relay], cert: tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key},
		dir: e.t.TempDir(), inst: &slots{state: agentupgrade.State{Version: version}, switched: make(chan string, 1)},
		version: version, pending: map[string]outEntry{}}
	g.firstAfter.Store(-1)
	e.t.Cleanup(g.disconnect)
	return g
}

// Send is the link's Send for the manager.
func (g *gw) Send(t wire.Type, seq uint64, body wire.Body) error {
	g.mu.Lock()
	c := g.conn
	g.mu.Unlock()
	if c == nil {
		return errors.New("not connected")
	}
	if r, ok := body.(*wire.UpgradeChunkRequest); ok && g.resumed.Load() {
		g.firstAfter.CompareAndSwap(-1, r.Offset)
	}
	b, err := wire.Encode(t, seq, body)
	if err != nil {
		return err
	}
	return c.Write(context.Background(), websocket.MessageBinary, b)
}

// Append is the outbox: kept until acked, resent on every connect.
func (g *gw) Append(key string, t wire.Type, body wire.Body) (uint64, error) {
	g.mu.Lock()
	g.seq++
	e := outEntry{g.seq, t, body}
	g.pending[key] = e
	c := g.conn
	g.mu.Unlock()
	if c != nil {
		if b, err := wire.Encode(t, e.seq, body); err == nil {
			c.Write(context.Background(), websocket.MessageBinary, b)
		}
	}
	return e.seq, nil
}

// connect starts the agent process (a new upgrade manager over the same
// state directory) and connects it.
func (g *gw) connect() {
	g.e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	m, err := agentupgrade.New(agentupgrade.Config{Dir: g.dir, PublicKey: g.e.pub, Installer: g.inst, Link: g, Outbox: g})
	if err != nil {
		g.e.t.Fatal(err)
	}
	go m.Run(ctx)
	g.mu.Lock()
	g.m, g.stop = m, cancel
	g.mu.Unlock()
	if err := g.dial(); err != nil {
		g.e.t.Fatal(err)
	}
}

// dial connects the running agent process.
func (g *gw) dial() error {
	g.mu.Lock()
	m := g.m
	g.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: g.e.ca.Pool(), Certificates: []tls.Certificate{g.cert}}}}
	c, _, err := websocket.Dial(ctx, g.relay+wire.PathConnect, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		cancel()
		return fmt.Errorf("%s: dial: %w", g.name, err)
	}
	c.SetReadLimit(wire.MaxFrameSize)
	hello := &wire.Hello{MinVersion: wire.ProtocolMin, MaxVersion: wire.ProtocolMax, AgentVersion: g.inst.State().Version, Upgrades: true,
		Node: wire.NodeInfo{Arch: "arm64", OS: "linux", Board: "sim", Hostname: g.name,
			Capacity:    wire.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30, Pods: 110},
			Allocatable: wire.Resources{CPUMillis: 3900, MemoryBytes: 4<<30 - 64<<20, Pods: 110}}}
	b, _ := wire.Encode(wire.TypeHello, 0, hello)
	if err := c.Write(ctx, websocket.MessageBinary, b); err != nil {
		cancel()
		return err
	}
	_, ack, err := c.Read(ctx)
	if f, derr := wire.Decode(ack); err != nil || derr != nil || f.Type != wire.TypeHelloAck {
		cancel()
		return fmt.Errorf("%s: hello-ack: %v %v %v", g.name, err, derr, f.Type)
	}
	g.mu.Lock()
	g.conn, g.connStop = c, cancel
	g.links++
	g.got.Store(0)
	resend := make([]outEntry, 0, len(g.pending))
	for _, e := range g.pending {
		resend = append(resend, e)
	}
	g.mu.Unlock()
	for _, e := range resend {
		b, _ := wire.Encode(e.t, e.seq, e.body)
		c.Write(ctx, websocket.MessageBinary, b)
	}
	m.Connected()
	go peer.Heartbeat(ctx, c, 2*time.Second)
	go func() {
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			f, err := wire.Decode(b)
			if err != nil {
				continue
			}
			switch f.Type {
			case wire.TypeAck:
				g.mu.Lock()
				for k, e := range g.pending {
					if e.seq <= f.Ack {
						delete(g.pending, k)
					}
				}
				g.mu.Unlock()
			case wire.TypeUpgradeChunk:
				var ch wire.UpgradeChunk
				if f.DecodeBody(&ch) == nil && g.cutAt.Load() > 0 && g.got.Add(int64(len(ch.Data))) >= g.cutAt.Load() {
					// The link drops mid-download (this chunk is lost
					// too); the agent process stays and reconnects.
					g.cutAt.Store(0)
					go func() {
						g.cutLink()
						g.resumed.Store(true)
						if err := g.dial(); err != nil {
							g.e.t.Error(err)
						}
					}()
					return
				}
				m.Frame(f)
			default:
				m.Frame(f)
			}
		}
	}()
	return nil
}

// cutLink drops the link; the agent process goes on.
func (g *gw) cutLink() {
	g.mu.Lock()
	c, m, stop := g.conn, g.m, g.connStop
	g.conn, g.connStop = nil, nil
	g.mu.Unlock()
	if c == nil {
		return
	}
	m.Disconnected()
	c.Close(websocket.StatusGoingAway, "gateway going away")
	stop()
}

// disconnect drops the link and ends the agent process.
func (g *gw) disconnect() {
	g.cutLink()
	g.mu.Lock()
	stop := g.stop
	g.m, g.stop = nil, nil
	g.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// restart is what the gateway's launcher does after a switch: the new
// version starts on trial and connects.
func (g *gw) restart(version string) {
	g.disconnect()
	g.inst.mu.Lock()
	g.inst.state = agentupgrade.State{Version: version, Trial: true}
	g.inst.mu.Unlock()
	g.connect()
}

// label waits for the relay to have written g's Node, then labels it.
func (g *gw) label(group string) {
	t := g.e.t
	ctx := t.Context()
	wait.State(t, ctx, 30*time.Second, g.name+"'s Node", func() (bool, string) {
		_, err := g.e.client.CoreV1().Nodes().Get(ctx, g.name, metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})
	patch := fmt.Sprintf(`{"metadata":{"labels":{"outpost.test/group":%q}}}`, group)
	if _, err := g.e.client.CoreV1().Nodes().Patch(ctx, g.name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

func artifact(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31) ^ seed ^ byte(i>>11)
	}
	return b
}

func TestAgentUpgrades(t *testing.T) {
	if os.Getenv("CI") == "" && testing.Short() {
		t.Skip("starts a control plane")
	}
	e := start(t)
	t.Run("MaxUnavailableAcrossReplicasResumeAndOffline", e.testRollout)
	t.Run("TamperedArtifactsRefusedBeforeInstall", e.testTampered)
	t.Run("APIServerRefusesBadSpecs", e.testBadSpecs)
}

// testRollout: 5 gateways on two replicas, maxUnavailable 2, one offline
// when the rollout starts and one whose link is cut mid-download.
func (e *env) testRollout(t *testing.T) {
	e.t = t
	ctx := t.Context()
	const from, to = "1.0.0", "1.1.0"
	var gws []*gw
	for i := range 5 {
		g := e.gateway(fmt.Sprintf("gw-%d", i), i%2, from)
		g.connect()
		g.label("rollout")
		gws = append(gws, g)
	}
	offline := gws[4]
	offline.disconnect()
	cut := gws[1]
	cut.cutAt.Store(100 << 10)
	data := artifact(700<<10, 1)

	// Record the most nodes ever in flight, from every status the API
	// server stored.
	w, err := e.dyn.Resource(upgrade.GVR).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var maxInFlight atomic.Int64
	go func() {
		for ev := range w.ResultChan() {
			u, ok := ev.Object.(*unstructured.Unstructured)
			if !ok || ev.Type == watch.Bookmark || u.GetName() != "rollout" {
				continue
			}
			a, err := upgrade.FromUnstructured(u)
			if err != nil {
				continue
			}
			n := 0
			for _, s := range a.Status.Nodes {
				if !s.Phase.Terminal() {
					n++
				}
			}
			if int64(n) > maxInFlight.Load() {
				maxInFlight.Store(int64(n))
			}
		}
	}()

	if err := e.create("rollout", to, "rollout", int64(2), e.publish("/agent-1.1.0-arm64", to, data)); err != nil {
		t.Fatal(err)
	}
	// Nodes switch two at a time; each "restarts" into the new version
	// once both of its batch have switched.
	online := gws[:4]
	done := map[string]bool{}
	for len(done) < len(online) {
		need := min(2, len(online)-len(done))
		wait.State(t, ctx, 2*time.Minute, "a batch of switches", func() (bool, string) {
			n := 0
			for _, g := range online {
				if len(g.inst.switched) > 0 {
					n++
				}
			}
			return n >= need, fmt.Sprintf("done %v; %+v", done, e.get("rollout").Status)
		})
		var batch []*gw
		for _, g := range online {
			if len(g.inst.switched) > 0 {
				<-g.inst.switched
				batch = append(batch, g)
			}
		}
		if len(batch) != need {
			t.Fatalf("%d nodes switched at once with maxUnavailable 2", len(batch))
		}
		a := e.get("rollout")
		if a.Status.InFlight > 2 {
			t.Fatalf("%d nodes in flight with maxUnavailable 2: %+v", a.Status.InFlight, a.Status.Nodes)
		}
		for _, g := range batch {
			if !bytesEqual(g.inst.got(), data) {
				t.Fatalf("%s installed an artifact that differs from the published one", g.name)
			}
			g.restart(to)
			done[g.name] = true
		}
		for _, g := range batch {
			wait.State(t, ctx, time.Minute, g.name+" Healthy", func() (bool, string) {
				s, _ := nodeOf(e.get("rollout"), g.name)
				return s.Phase == wire.UpgradeHealthy, fmt.Sprintf("%+v", s)
			})
		}
	}
	// The cut link resumed from its partial file: its second connection
	// asked from past the start.
	// Three whole chunks were written before the cut; the fourth was lost
	// with the link.
	if got := cut.firstAfter.Load(); got != 3*wire.MaxUpgradeChunk {
		t.Fatalf("%s asked from %d after the cut, want %d", cut.name, got, 3*wire.MaxUpgradeChunk)
	}
	if a := e.get("rollout"); a.Status.Updated != 4 || a.Status.Total != 5 || a.Status.Progress != "4/5" {
		t.Fatalf("with the offline node away: %+v", a.Status)
	}
	// The offline node upgrades when it returns.
	offline.connect()
	wait.State(t, ctx, time.Minute, "the returning node switches", func() (bool, string) {
		return len(offline.inst.switched) > 0, fmt.Sprintf("%+v", e.get("rollout").Status)
	})
	<-offline.inst.switched
	offline.restart(to)
	wait.State(t, ctx, time.Minute, "5/5 updated", func() (bool, string) {
		a := e.get("rollout")
		return a.Status.Progress == "5/5" && a.Status.InFlight == 0, fmt.Sprintf("%+v", a.Status)
	})
	if n := maxInFlight.Load(); n > 2 || n < 1 {
		t.Fatalf("at most %d nodes were in flight, want 1..2", n)
	}
	// Each replica fetched the artifact at most once.
	if h := e.hitsOf("/agent-1.1.0-arm64"); h > 2 {
		t.Fatalf("artifact fetched %d times by 2 replicas", h)
	}
	out, err := tableGet(ctx, e)
	if err != nil || !strings.Contains(out, "5/5") || !strings.Contains(out, to) {
		t.Fatalf("the printer columns: %q %v", out, err)
	}
}

// tableGet reads the AgentUpgrade as kubectl get does (a Table, with the
// printer columns).
func tableGet(ctx context.Context, e *env) (string, error) {
	res, err := e.client.Discovery().RESTClient().Get().AbsPath("/apis/outpost.dev/v1alpha1/agentupgrades/rollout").
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(ctx)
	return string(res), err
}

func bytesEqual(a, b []byte) bool { return string(a) == string(b) }

// testTampered: a signature the pinned key does not verify is refused
// before a byte is fetched; bytes that are not the published digest are
// refused by the relay, and nothing reaches a slot either way.
func (e *env) testTampered(t *testing.T) {
	e.t = t
	ctx := t.Context()
	data := artifact(200<<10, 2)

	sig := e.gateway("tamper-sig", 0, "1.0.0")
	sig.connect()
	sig.label("tamper-sig")
	entry := e.publish("/agent-sig", "2.0.0", data)
	bad, _ := base64.StdEncoding.DecodeString(entry["signature"].(string))
	bad[3] ^= 1
	entry["signature"] = base64.StdEncoding.EncodeToString(bad)
	if err := e.create("tamper-sig", "2.0.0", "tamper-sig", nil, entry); err != nil {
		t.Fatal(err)
	}

	body := e.gateway("tamper-bytes", 1, "1.0.0")
	body.connect()
	body.label("tamper-bytes")
	entry = e.publish("/agent-bytes", "2.0.1", data)
	tampered := append([]byte{}, data...)
	tampered[1000] ^= 0xff
	e.artMu.Lock()
	e.art["/agent-bytes"] = tampered
	e.artMu.Unlock()
	if err := e.create("tamper-bytes", "2.0.1", "tamper-bytes", nil, entry); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name string
		g    *gw
		want string
	}{{"tamper-sig", sig, "signature"}, {"tamper-bytes", body, "sha256"}} {
		wait.State(t, ctx, time.Minute, c.name+" Failed", func() (bool, string) {
			s, _ := nodeOf(e.get(c.name), c.g.name)
			return s.Phase == wire.UpgradeFailed && strings.Contains(s.Reason, c.want), fmt.Sprintf("%+v", s)
		})
		if c.g.inst.got() != nil || len(c.g.inst.switched) > 0 {
			t.Fatalf("%s: a tampered artifact reached the slots", c.name)
		}
		if a := e.get(c.name); a.Status.Failed != 1 || a.Status.InFlight != 0 {
			t.Fatalf("%s: status %+v", c.name, a.Status)
		}
	}
	if h := e.hitsOf("/agent-sig"); h != 0 {
		t.Fatalf("an artifact with a bad signature was fetched %d times", h)
	}
}

// testBadSpecs: the API server refuses what the relay could not roll out.
func (e *env) testBadSpecs(t *testing.T) {
	e.t = t
	good := func() map[string]any { return e.publish("/agent-good", "3.0.0", artifact(10, 3)) }
	for _, c := range []struct {
		name    string
		version string
		max     any
		art     func() map[string]any
	}{
		{"unknown-arch", "3.0.0", nil, func() map[string]any { a := good(); a["arch"] = "mips"; return a }},
		{"negative-size", "3.0.0", nil, func() map[string]any { a := good(); a["size"] = int64(-1); return a }},
		{"oversize", "3.0.0", nil, func() map[string]any { a := good(); a["size"] = int64(wire.MaxUpgradeSize + 1); return a }},
		{"short-digest", "3.0.0", nil, func() map[string]any { a := good(); a["sha256"] = "abcd"; return a }},
		{"bad-signature-encoding", "3.0.0", nil, func() map[string]any { a := good(); a["signature"] = "not base64"; return a }},
		{"file-url", "3.0.0", nil, func() map[string]any { a := good(); a["url"] = "file:///etc/shadow"; return a }},
		{"path-version", "../../bin/sh", nil, good},
		{"zero-max-unavailable", "3.0.0", int64(0), good},
		{"over-100-percent", "3.0.0", "150%", good},
		{"word-max-unavailable", "3.0.0", "half", good},
	} {
		err := e.create("bad-"+c.name, c.version, "none", c.max, c.art())
		if !apierrors.IsInvalid(err) {
			t.Errorf("%s: created, or refused for another reason: %v", c.name, err)
		}
	}
	// A valid one is accepted, and its version cannot be changed after.
	if err := e.create("good", "3.0.0", "none", "25%", good()); err != nil {
		t.Fatal(err)
	}
	u, err := e.dyn.Resource(upgrade.GVR).Get(t.Context(), "good", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unstructured.SetNestedField(u.Object, "3.0.1", "spec", "version")
	if _, err := e.dyn.Resource(upgrade.GVR).Update(t.Context(), u, metav1.UpdateOptions{}); !apierrors.IsInvalid(err) {
		t.Fatalf("version changed in place: %v", err)
	}
}
