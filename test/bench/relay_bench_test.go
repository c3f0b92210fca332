package bench

import (
	"bufio"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"outpost.dev/cloud/identity"
	"outpost.dev/cloud/nodes"
	"outpost.dev/cloud/pki"
	"outpost.dev/cloud/relay"
	"outpost.dev/cloud/relay/relaytest"
	"outpost.dev/test/harness"
	"outpost.dev/test/peer"
	"outpost.dev/test/stack"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

// The agents run in a child process (this test binary again), so the
// figure is the relay's memory alone.
const helperEnv = "OUTPOST_BENCH_AGENT_HELPER"

func TestMain(m *testing.M) {
	// client-go's throttling notices would break the benchmark output.
	klog.SetOutput(io.Discard)
	klog.LogToStderr(false)
	if os.Getenv(helperEnv) != "" {
		if err := runAgents(); err != nil {
			fmt.Fprintln(os.Stderr, "agents:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// BenchmarkRelayMemory connects OUTPOST_BENCH_AGENTS (default 1,000)
// protocol-level agents to one in-process relay backed by a real API
// server, and reports the relay process's memory per connected agent:
// Go heap and stacks, and resident memory. Then, from the API server's
// own metrics, the requests per agent per minute while the fleet is
// connected and idle (over OUTPOST_BENCH_API_WINDOW, default 2m; the
// metric does not tell clients apart, so the control plane's own requests
// are in it, and are logged as measured for a minute before the agents
// came), beside what the relay itself logged (warnings counted by
// message, with a few examples) and its own metrics over the same window,
// and the API server's answers other than 2xx and API Priority and
// Fairness rejections, so a figure off the design says why;
// OUTPOST_BENCH_GOROUTINES=file writes the relay's goroutines halfway
// through the window. Then, after the relay is closed and a new one
// started on its address,
// the time until every agent has connected again by itself, with the
// API server's p99 request latency over that time.
func BenchmarkRelayMemory(b *testing.B) {
	n := 1000
	if v := os.Getenv("OUTPOST_BENCH_AGENTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	ctx := context.Background()
	// Every Node gets a /24 pod range from the cluster range, as the
	// controller-manager allocates them: the harness's default /16 has
	// 256, so a larger fleet gets a range of its own (10.0.0.0/10:
	// 16,384 Nodes), outside the harness's random defaults.
	var opts harness.Options
	if n > 250 {
		opts.ClusterCIDR = "10.0.0.0/10"
	}
	// The relay's API budget (its --kube-api-qps, 200 by default) sized
	// to the fleet as its help says: every connected node renews its
	// Lease every 10 s, so 10,000 agents take 1,000 writes a second
	// before any other.
	qps := max(200, float32(n)*0.15)
	ip := stack.StartInProcess(b, ctx, opts, qps, int(2*qps))
	cp, client, ca := ip.CP, ip.Client, ip.CA
	logs := newLogCounts()
	cfg := ip.RelayConfig(slog.New(logs))
	cfg.Registry = prometheus.NewRegistry()
	cfg.NodeWriters = nodes.WorkersFor(float64(qps)) // as the relay's command sizes them
	srv, hs := relaytest.Serve(b, cfg)
	window := harness.EnvDuration(b, "OUTPOST_BENCH_API_WINDOW", 2*time.Minute)
	// The control plane's own requests (controllers, the API server's
	// own lease), with no agent and nothing else running against it.
	baseWindow := min(window, time.Minute)
	m0 := apiMetrics(b, ctx, client)
	time.Sleep(baseWindow)
	base := requests(m0, apiMetrics(b, ctx, client))
	b.Logf("the control plane alone, its first %v: API requests per minute: %s", baseWindow, rates(base, baseWindow, 1))

	caFile := writeChildCA(b, ca)

	for b.Loop() {
		before := measure()
		exe, _ := os.Executable()
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"=1", "OUTPOST_BENCH_N="+strconv.Itoa(n),
			"OUTPOST_BENCH_RELAY="+strings.TrimPrefix(hs.URL, "https://"), "OUTPOST_BENCH_CA="+caFile, "OUTPOST_BENCH_KUBECONFIG="+cp.Kubeconfig)
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "ready") {
			b.Fatalf("agents: %q %v", line, err)
		}
		connected := time.Since(start)
		// Wait until every node has been written and the relay is quiet:
		// a new Node and its Lease take a few writes each, at about 20
		// Nodes a second on this machine with a loaded control plane.
		wait.State(b, ctx, 5*time.Minute+time.Duration(n)*100*time.Millisecond, "every node and its lease written", func() (bool, string) {
			nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, err.Error()
			}
			leases, err := client.CoordinationV1().Leases(corev1.NamespaceNodeLease).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, err.Error()
			}
			return len(nodes.Items) >= n && len(leases.Items) >= n && srv.Connected() == n,
				fmt.Sprintf("%d connected, %d nodes, %d leases", srv.Connected(), len(nodes.Items), len(leases.Items))
		})
		after := measure()
		if p := os.Getenv("OUTPOST_BENCH_HEAPPROFILE"); p != "" {
			if f, err := os.Create(p); err == nil {
				pprof.WriteHeapProfile(f)
				f.Close()
			}
		}
		per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) / 1024 }
		b.ReportMetric(per(after.heap, before.heap), "heap-KiB/agent")
		b.ReportMetric(per(after.stack, before.stack), "stack-KiB/agent")
		b.ReportMetric(per(after.heap+after.stack, before.heap+before.stack), "go-KiB/agent")
		b.ReportMetric(per(after.rss, before.rss), "RSS-KiB/agent")
		b.ReportMetric(float64(runtime.NumGoroutine()-before.goroutines)/float64(n), "goroutines/agent")
		b.Logf("%d agents connected in %v; relay heap %d→%d KiB, stacks %d→%d KiB, RSS %d→%d KiB",
			n, connected.Round(time.Millisecond), before.heap>>10, after.heap>>10, before.stack>>10, after.stack>>10, before.rss>>10, after.rss>>10)

		// Idle: every agent heartbeating, nothing else against the API
		// server but the control plane itself. The window opens one Lease
		// renewal period after the last Lease was created, past the
		// first renewals.
		time.Sleep(relay.DefaultLeaseDuration / 4)
		m1 := apiMetrics(b, ctx, client)
		l1, r1 := logs.snapshot(), relayMetrics(b, cfg)
		time.Sleep(window / 2)
		if p := os.Getenv("OUTPOST_BENCH_GOROUTINES"); p != "" {
			if f, err := os.Create(p); err == nil {
				pprof.Lookup("goroutine").WriteTo(f, 1)
				f.Close()
			}
		}
		time.Sleep(window - window/2)
		m2 := apiMetrics(b, ctx, client)
		r2 := relayMetrics(b, cfg)
		b.Logf("idle %v: the relay logged: %s", window, logs.since(l1))
		b.Logf("idle %v: the relay's own metrics per agent per minute: %s", window, rates(perAgentMin(delta(r1, r2), n, window), time.Minute, 3))
		b.Logf("idle %v: API server, requests answered other than 2xx, per minute: %s; API Priority and Fairness rejections and seconds queued, per minute: %s",
			window, rates(failed(m1, m2), window, 1), rates(delta(filter(m1, "apiserver_flowcontrol_re", "apiserver_flowcontrol_request_wait_duration_seconds_sum"),
				filter(m2, "apiserver_flowcontrol_re", "apiserver_flowcontrol_request_wait_duration_seconds_sum")), window, 1))
		b.Logf("idle %v: at its end: %s", window, fleetState(b, ctx, client))
		idle := requests(m1, m2)
		perAgent := map[string]float64{}
		var total float64
		for k, v := range idle {
			r := v / float64(n) / window.Minutes()
			perAgent[k] = r
			total += r
		}
		b.ReportMetric(total, "apireq/agent/min")
		b.ReportMetric(perAgent["PUT leases"]+perAgent["PATCH leases"]+perAgent["POST leases"], "lease-writes/agent/min")
		b.ReportMetric(perAgent["PUT nodes/status"]+perAgent["PATCH nodes/status"], "status-writes/agent/min")
		// The relay lengthens the renewal period while the API server
		// falls behind (cloud/nodes leasePace).
		b.ReportMetric(r2["outpost_relay_lease_renew_period_seconds"], "lease-period-s")
		idleP99, idleCount := p99(m1, m2)
		b.ReportMetric(idleP99*1000, "apiserver-p99-idle-ms")
		b.Logf("idle %v, %d agents: API requests per agent per minute (the control plane's own included): %s; API server p99 %.0f ms over %.0f requests",
			window, n, rates(perAgent, time.Minute, 3), idleP99*1000, idleCount)

		// The relay closed and a new one started on its address: the
		// agents reconnect by themselves, with the agent's back-off.
		addr := hs.Listener.Addr().String()
		m3 := apiMetrics(b, ctx, client)
		stopping := time.Now()
		srv.Close()
		hs.Close()
		stopped := time.Since(stopping)
		cfg.Registry = prometheus.NewRegistry()
		l3 := logs.snapshot()
		srv, hs = relaytest.ServeAt(b, cfg, addr)
		listening := time.Now()
		wait.State(b, ctx, 15*time.Minute, "every agent connected again", func() (bool, string) {
			return srv.Connected() == n, fmt.Sprintf("%d of %d connected", srv.Connected(), n)
		})
		back := time.Since(listening)
		m4 := apiMetrics(b, ctx, client)
		p, count := p99(m3, m4)
		again := requests(m3, m4)
		for k := range again {
			again[k] /= float64(n)
		}
		b.ReportMetric(back.Seconds(), "s-all-reconnected")
		b.ReportMetric(p*1000, "apiserver-p99-reconnect-ms")
		b.Logf("relay closed in %v and started again on %s: all %d agents connected again %v after it listened; API server p99 %.0f ms over the %.0f requests from the close to the last connection; requests per agent meanwhile: %s",
			stopped.Round(time.Millisecond), addr, n, back.Round(time.Millisecond), p*1000, count, rates(again, time.Minute, 3))
		b.Logf("reconnect: the relay logged: %s", logs.since(l3))
		b.Logf("reconnect: API server, requests answered other than 2xx: %s", rates(failed(m3, m4), time.Minute, 0))
		stdin.Close()
		cmd.Wait()
	}
}

// fleetState says how many Nodes are Ready and tainted, and which events
// the cluster holds, by source, reason and object kind, with their counts
// summed: what the node lifecycle controller did about the fleet.
func fleetState(b *testing.B, ctx context.Context, client kubernetes.Interface) string {
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	ready, tainted := 0, map[string]float64{}
	for _, n := range nodes.Items {
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready++
			}
		}
		for _, t := range n.Spec.Taints {
			tainted[t.Key+":"+string(t.Effect)]++
		}
	}
	events, err := client.CoreV1().Events("").List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	count := map[string]float64{}
	for _, e := range events.Items {
		count[fmt.Sprintf("%s%s %s", e.Source.Component, e.ReportingController, e.Reason)+" "+e.InvolvedObject.Kind] += float64(max(e.Count, 1))
	}
	return fmt.Sprintf("%d of %d Nodes Ready; taints: %s; events (occurrences): %s", ready, len(nodes.Items),
		rates(tainted, time.Minute, 0), rates(count, time.Minute, 0))
}

// apiMetrics reads the request counts and latency histogram off the API
// server's own /metrics.
func apiMetrics(b *testing.B, ctx context.Context, client kubernetes.Interface) map[string]float64 {
	b.Helper()
	rc, err := client.CoreV1().RESTClient().Get().AbsPath("/metrics").Stream(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer rc.Close()
	m, err := stack.ParseMetrics(io.LimitReader(rc, 64<<20), "apiserver_request_total", "apiserver_request_duration_seconds_bucket",
		"apiserver_flowcontrol_rejected_requests_total", "apiserver_flowcontrol_request_wait_duration_seconds_count", "apiserver_flowcontrol_request_wait_duration_seconds_sum")
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// requests is how many requests the API server counted from m0 to m1, by
// "VERB resource[/subresource]".
func requests(m0, m1 map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for series, v := range m1 {
		l, ok := stack.Labels(series)
		if !ok || !strings.HasPrefix(series, "apiserver_request_total{") {
			continue
		}
		k := l["verb"] + " " + l["resource"]
		if l["subresource"] != "" {
			k += "/" + l["subresource"]
		}
		if d := v - m0[series]; d != 0 {
			out[k] += d
		}
	}
	return out
}

// relayMetrics are the counters and gauges of the relay's registry.
func relayMetrics(b *testing.B, cfg relay.Config) map[string]float64 {
	m, err := relayCounters(cfg.Registry)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// delta is m1 - m0 by series, leaving out those that did not change.
func delta(m0, m1 map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m1 {
		if d := v - m0[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// filter is the series of m that start with one of prefixes.
func filter(m map[string]float64, prefixes ...string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		for _, p := range prefixes {
			if strings.HasPrefix(k, p) {
				out[k] = v
				break
			}
		}
	}
	return out
}

// perAgentMin is counts over d as rates per agent per minute.
func perAgentMin(m map[string]float64, n int, d time.Duration) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		out[k] = v / float64(n) / d.Minutes()
	}
	return out
}

// failed is the requests the API server answered with other than 2xx,
// by "VERB resource[/subresource] code".
func failed(m0, m1 map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for series, v := range m1 {
		l, ok := stack.Labels(series)
		if !ok || !strings.HasPrefix(series, "apiserver_request_total{") || strings.HasPrefix(l["code"], "2") {
			continue
		}
		k := l["verb"] + " " + l["resource"]
		if l["subresource"] != "" {
			k += "/" + l["subresource"]
		}
		if d := v - m0[series]; d != 0 {
			out[k+" "+l["code"]] += d
		}
	}
	return out
}

// rates writes counts over d as rates per minute, largest first.
func rates(counts map[string]float64, d time.Duration, digits int) string {
	keys := slices.SortedFunc(maps.Keys(counts), func(a, b string) int { return cmp.Compare(counts[b], counts[a]) })
	var parts []string
	for _, k := range keys {
		if r := counts[k] / d.Minutes(); math.Abs(r) >= math.Pow10(-digits) {
			parts = append(parts, fmt.Sprintf("%s %.*f", k, digits, r))
		}
	}
	return strings.Join(parts, ", ")
}

// p99 is the 99th percentile of the API server's request latency from m0
// to m1, from its apiserver_request_duration_seconds histogram, leaving
// out the long-running verbs as its latency SLO does (WATCH, WATCHLIST,
// CONNECT), interpolated within a bucket as Prometheus's
// histogram_quantile; and the number of requests it covers.
func p99(m0, m1 map[string]float64) (seconds, count float64) {
	buckets := map[float64]float64{} // le → requests at or under it
	for series, v := range m1 {
		l, ok := stack.Labels(series)
		if !ok || !strings.HasPrefix(series, "apiserver_request_duration_seconds_bucket{") {
			continue
		}
		if verb := l["verb"]; verb == "WATCH" || verb == "WATCHLIST" || verb == "CONNECT" {
			continue
		}
		le, err := strconv.ParseFloat(l["le"], 64)
		if err != nil {
			continue
		}
		buckets[le] += v - m0[series]
	}
	return quantile(0.99, buckets), buckets[math.Inf(1)]
}

// quantile is histogram_quantile over cumulative buckets (le → count):
// linear within the bucket the rank falls in, the highest finite bound
// when it falls in +Inf, 0 when there is nothing.
func quantile(q float64, buckets map[float64]float64) float64 {
	les := slices.Sorted(maps.Keys(buckets))
	if len(les) == 0 || buckets[les[len(les)-1]] <= 0 {
		return 0
	}
	rank := q * buckets[les[len(les)-1]]
	var lo, below float64
	for _, le := range les {
		if c := buckets[le]; c >= rank {
			if math.IsInf(le, 1) {
				return lo
			}
			if c == below {
				return le
			}
			return lo + (le-lo)*(rank-below)/(c-below)
		}
		lo, below = le, buckets[le]
	}
	return lo
}

type mem struct {
	heap, stack, rss uint64
	goroutines       int
}

func measure() mem {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := mem{heap: ms.HeapInuse, stack: ms.StackInuse, goroutines: runtime.NumGoroutine()}
	if pm, err := ReadMem(os.Getpid()); err == nil {
		m.rss = uint64(pm.RSS) << 10
	}
	return m
}

// runAgents is the child: it connects N agents, each with its own
// certificate, says hello, prints "ready" and heartbeats until stdin
// closes. An agent whose link ends connects again by itself, backing off
// as the agent's link does.
func runAgents() error {
	n, _ := strconv.Atoi(os.Getenv("OUTPOST_BENCH_N"))
	addr := os.Getenv("OUTPOST_BENCH_RELAY")
	ca, err := readChildCA(os.Getenv("OUTPOST_BENCH_CA"))
	if err != nil {
		return err
	}
	kc, err := clientcmd.BuildConfigFromFlags("", os.Getenv("OUTPOST_BENCH_KUBECONFIG"))
	if err != nil {
		return err
	}
	// The child writes each agent's identity record before it connects;
	// client-go's default of 5 requests a second would pace the whole
	// fleet's connecting at about 2.5 agents a second.
	kc.QPS, kc.Burst = 1000, 1000
	client, err := kubernetes.NewForConfig(kc)
	if err != nil {
		return err
	}
	ids := identity.New(client, relay.DefaultNamespace)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			name := fmt.Sprintf("bench-%05d", i)
			tc, err := credentials(ctx, ca, ids, name)
			var c *websocket.Conn
			if err == nil {
				c, err = hello(ctx, addr, tc, name)
			}
			<-sem
			wg.Done()
			if err != nil {
				errs <- err
				return
			}
			stayConnected(ctx, addr, tc, name, c)
		}(i)
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

// The agent's link back-off (agent/link): full jitter from 1 s doubling
// to 30 s, reset by a connection that lived a minute; while waiting, a
// TCP probe about every second dials early once the relay's address has
// refused and then accepts again (a relay restarted).
const (
	agentBackoffMin = time.Second
	agentBackoffMax = 30 * time.Second
	agentStable     = time.Minute
	agentProbe      = time.Second
)

// stayConnected serves link c, heartbeating from its hello-ack on (on a
// loaded machine connecting 1,000 can take longer than the relay waits
// for a silent connection, three heartbeat intervals), and connects
// again whenever it ends, until ctx ends.
func stayConnected(ctx context.Context, addr string, tc *tls.Config, name string, c *websocket.Conn) {
	attempt := 0
	for {
		up := time.Now()
		lctx, cancel := context.WithCancel(ctx)
		go peer.Heartbeat(lctx, c, relay.DefaultHeartbeatInterval)
		for {
			if _, _, err := c.Read(lctx); err != nil {
				break
			}
		}
		cancel()
		c.CloseNow()
		if time.Since(up) >= agentStable {
			attempt = 0
		}
		for {
			d := agentBackoffMax
			if e := agentBackoffMin << min(attempt, 16); e < d {
				d = e
			}
			attempt++
			waitToDial(ctx, addr, mrand.N(d+1))
			if ctx.Err() != nil {
				return
			}
			var err error
			if c, err = hello(ctx, addr, tc, name); err == nil {
				break
			}
		}
	}
}

// waitToDial waits d, or less once a TCP probe of addr was refused and
// then accepted.
func waitToDial(ctx context.Context, addr string, d time.Duration) {
	end := time.Now().Add(d)
	refused := false
	for ctx.Err() == nil {
		step := agentProbe*3/4 + mrand.N(agentProbe/2+1) // ±25 %
		if left := time.Until(end); left <= step {
			time.Sleep(left)
			return
		}
		time.Sleep(step)
		c, err := net.DialTimeout("tcp", addr, agentProbe)
		if err != nil {
			refused = true
			continue
		}
		c.Close()
		if refused {
			return
		}
	}
}

// connectAgent connects node name with a certificate signed by ca and
// recorded in ids, as a join would, and says hello.
func connectAgent(ctx context.Context, addr string, ca *pki.CA, ids *identity.Registry, name string) (*websocket.Conn, error) {
	tc, err := credentials(ctx, ca, ids, name)
	if err != nil {
		return nil, err
	}
	return hello(ctx, addr, tc, name)
}

// credentials makes node name a key and a certificate signed by ca,
// recorded in ids as a join would.
func credentials(ctx context.Context, ca *pki.CA, ids *identity.Registry, name string) (*tls.Config, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	cert, err := ca.SignNode(key.Public(), name, time.Hour)
	if err != nil {
		return nil, err
	}
	if err := ids.Issue(ctx, name, identity.Serial(cert), "", true); err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1",
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}}, nil
}

// hello connects node name with tc and says hello.
func hello(ctx context.Context, addr string, tc *tls.Config, name string) (*websocket.Conn, error) {
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}}
	c, _, err := websocket.Dial(ctx, "wss://"+addr+wire.PathConnect, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	h := &wire.Hello{MinVersion: wire.ProtocolMin, MaxVersion: wire.ProtocolMax, AgentVersion: "v0.0.0-bench",
		Node: wire.NodeInfo{Arch: "arm64", OS: "linux", Board: "sim", Hostname: name,
			Capacity:    wire.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30, Pods: 110},
			Allocatable: wire.Resources{CPUMillis: 3900, MemoryBytes: 4<<30 - 64<<20, Pods: 110}}}
	b, _ := wire.Encode(wire.TypeHello, 0, h)
	if err := c.Write(ctx, websocket.MessageBinary, b); err != nil {
		c.CloseNow()
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	_, msg, err := c.Read(rctx)
	if err != nil {
		c.CloseNow()
		return nil, fmt.Errorf("%s: hello-ack: %w", name, err)
	}
	if f, err := wire.Decode(msg); err != nil || f.Type != wire.TypeHelloAck {
		c.CloseNow()
		return nil, fmt.Errorf("%s: want hello-ack, got %v %v", name, f.Type, err)
	}
	return c, nil
}
