package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
	"outpost.dev/test/wait"
)

// BenchmarkPods runs OUTPOST_PODS (default 30) pods on one real agent with
// real containerd, through a byte-counting proxy, once with the pod
// network off (cni=off: network.disabled, loopback only) and once on
// (cni=on: the default CNI network, every pod with an address), each on
// its own node of one stack, and reports for each:
//
//   - start latency, kubectl apply → phase Running in the API (image
//     already present), p50 and p99: p50-ms and p99-ms with the pods
//     applied in a burst (one kubectl apply after another, as fast as
//     kubectl runs), seq-p50-ms and seq-p99-ms one at a time (the next
//     applied once the last one runs);
//   - the agent's RSS and PSS with the pods running, and the PSS of the
//     container loggers (one "outpost-agent logger" per container);
//   - link bytes (TLS and WebSocket framing included) per pod create
//     (relay → agent while the pods were created) and per pod status
//     update (agent → relay, divided by the pod-status frames the relay
//     counted), idle heartbeat traffic subtracted.
func BenchmarkPods(b *testing.B) {
	harness.RequireContainerd(b)
	harness.RequireCNI(b)
	n := 30
	if v := os.Getenv("OUTPOST_PODS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	ctx := context.Background()
	// OUTPOST_BENCH_DIR keeps the stack's logs there.
	st, relay := stack.StartWithRelay(b, ctx, stack.Options{Containerd: true, Dir: os.Getenv("OUTPOST_BENCH_DIR")})
	for _, on := range []bool{false, true} {
		b.Run(cniName(on), func(b *testing.B) { benchPods(b, st, relay, n, on) })
	}
}

// benchRuns numbers the nodes of sub-benchmarks run on one stack.
var benchRuns atomic.Int32

// cniName names the sub-benchmark of the pod network on or off.
func cniName(on bool) string {
	if on {
		return "cni=on"
	}
	return "cni=off"
}

// benchPods is BenchmarkPods on a new node, with the pod network on or
// off; the node's pods are deleted at the end.
func benchPods(b *testing.B, st *stack.Stack, relay *stack.Relay, n int, network bool) {
	ctx := context.Background()
	mode := "off"
	if network {
		mode = "on"
	}
	// -count runs this again on the same stack: a new node each time.
	node := fmt.Sprintf("bench-pods-%s-%d", mode, benchRuns.Add(1))
	agent, err := st.Join(ctx, relay, node)
	if err != nil {
		b.Fatal(err)
	}
	agent.NoPodNetwork = !network
	defer agent.Stop()
	// As the .deb installs it: outpost-logger beside the agent, which the
	// agent then runs as the containers' logger.
	if err := buildLogger(ctx, st.BinDir); err != nil {
		b.Fatal(err)
	}
	proxy, err := stack.NewProxy(relay.Addr)
	if err != nil {
		b.Fatal(err)
	}
	defer proxy.Close()
	if err := agent.Start("--server", "https://"+proxy.Addr); err != nil {
		b.Fatal(err)
	}
	if err := st.WaitNodeReady(ctx, node, true, 2*time.Minute); err != nil {
		b.Fatal(err)
	}
	kc := st.CP.Client()
	const ns = "default"
	image := st.Images[0].Ref
	podYAML := func(name string) string {
		return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s}
spec:
  nodeSelector: {kubernetes.io/hostname: %s}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: %s
    command: [sh, -c, 'echo up; exec sleep 3600']
`, name, ns, node, image)
	}
	kubectlApply := func(manifest string) {
		cmd := exec.CommandContext(ctx, filepath.Join(st.CP.BinDir, "kubectl"), "--kubeconfig="+st.CP.Kubeconfig, "apply", "-f", "-")
		cmd.Stdin = strings.NewReader(manifest)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("kubectl apply: %v\n%s", err, out)
		}
	}

	// Runs reach Running at the time the watch sees them.
	var mu sync.Mutex
	runningAt := map[string]time.Time{}
	w, err := kc.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	go func() {
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type == watch.Deleted || p.Status.Phase != corev1.PodRunning {
				continue
			}
			mu.Lock()
			if _, seen := runningAt[p.Name]; !seen {
				runningAt[p.Name] = time.Now()
			}
			mu.Unlock()
		}
	}()
	waitRunning := func(names []string, timeout time.Duration) {
		wait.State(b, ctx, timeout, "every pod Running", func() (bool, string) {
			mu.Lock()
			left := 0
			for _, nm := range names {
				if _, ok := runningAt[nm]; !ok {
					left++
				}
			}
			mu.Unlock()
			return left == 0, fmt.Sprintf("%d of %d pods not Running\n%s", left, len(names), agent.Proc.LogTail(30))
		})
	}

	// Warm-up: the image is pulled once, so the figures are for an image
	// already present.
	warmup := "warmup-" + mode
	kubectlApply(podYAML(warmup))
	waitRunning([]string{warmup}, 2*time.Minute)
	if err := kc.CoreV1().Pods(ns).Delete(ctx, warmup, *metav1.NewDeleteOptions(0)); err != nil {
		b.Fatal(err)
	}
	if err := proxy.Quiet(ctx, time.Second, time.Minute); err != nil {
		b.Fatal(err)
	}

	// The idle link, to subtract heartbeats from the figures below.
	idleWin := 10 * time.Second
	u0, d0 := proxy.Up.Load(), proxy.Down.Load()
	time.Sleep(idleWin)
	idleUp := float64(proxy.Up.Load()-u0) / idleWin.Seconds()
	idleDown := float64(proxy.Down.Load()-d0) / idleWin.Seconds()

	frames0, err := relayFrames(relay.URL)
	if err != nil {
		b.Fatal(err)
	}
	u0, d0 = proxy.Up.Load(), proxy.Down.Load()
	t0 := time.Now()
	b.ResetTimer()
	applied := map[string]time.Time{}
	var names []string
	for i := range n {
		name := fmt.Sprintf("bench-%s-%02d", mode, i)
		names = append(names, name)
		applied[name] = time.Now()
		kubectlApply(podYAML(name))
	}
	waitRunning(names, 5*time.Minute)
	b.StopTimer()
	// Wait for the status traffic to settle (Ready after Running).
	if err := proxy.Quiet(ctx, 2*time.Second, time.Minute); err != nil {
		b.Fatal(err)
	}
	win := time.Since(t0)
	up, down := proxy.Up.Load()-u0, proxy.Down.Load()-d0
	frames1, err := relayFrames(relay.URL)
	if err != nil {
		b.Fatal(err)
	}
	statuses := frames1[`direction="in",type="pod-status"`] - frames0[`direction="in",type="pod-status"`]
	statusBytes := frames1.bytes(`direction="in",type="pod-status"`) - frames0.bytes(`direction="in",type="pod-status"`)
	syncBytes := frames1.bytes(`direction="out",type="sync"`) - frames0.bytes(`direction="out",type="sync"`)

	var lat []time.Duration
	mu.Lock()
	for _, nm := range names {
		lat = append(lat, runningAt[nm].Sub(applied[nm]))
	}
	mu.Unlock()
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat)-1)+0.5))] }

	m, err := ReadMem(agent.Proc.Pid())
	if err != nil {
		b.Fatal(err)
	}
	loggers, loggerPSS := loggerMem(st.BinDir)
	running, err := st.Containerd.Ctr(ctx, "-n", "outpost-"+node, "tasks", "ls")
	if err != nil {
		b.Fatal(err)
	}
	if got := strings.Count(running, "RUNNING"); got != n {
		b.Fatalf("%d running tasks in containerd, want %d:\n%s", got, n, running)
	}
	// On the pod network each pod has its address; off it none has.
	for _, nm := range names {
		p, err := kc.CoreV1().Pods(ns).Get(ctx, nm, metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if (p.Status.PodIP != "") != network {
			b.Fatalf("%s: podIP %q with the pod network %s", nm, p.Status.PodIP, cniName(network))
		}
	}

	upNet := float64(up) - idleUp*win.Seconds()
	downNet := float64(down) - idleDown*win.Seconds()
	b.ReportMetric(float64(pct(0.5).Milliseconds()), "p50-ms")
	b.ReportMetric(float64(pct(0.99).Milliseconds()), "p99-ms")
	b.ReportMetric(float64(m.RSS)/1024, "agent-RSS-MiB")
	b.ReportMetric(float64(m.PSS)/1024, "agent-PSS-MiB")
	b.ReportMetric(float64(loggerPSS)/1024, "loggers-PSS-MiB")
	b.ReportMetric(downNet/float64(n), "link-B/create")
	if statuses > 0 {
		b.ReportMetric(upNet/statuses, "link-B/status")
	}
	b.Logf("%d pods applied in a burst: start latency p50 %v p99 %v min %v max %v (%v)", n, pct(0.5), pct(0.99), lat[0], lat[len(lat)-1], lat)
	b.Logf("agent pid %d with %d running pods: VmRSS %d KiB, Pss %d KiB, RssAnon %d KiB, Pss_Anon %d KiB; %d logger processes, %d KiB PSS together",
		agent.Proc.Pid(), n, m.RSS, m.PSS, m.Anon, m.PSSAnon, loggers, loggerPSS)
	b.Logf("link over %v: %d B up, %d B down; idle %.0f B/s up, %.0f B/s down; %.0f pod-status frames in (%.0f B of CBOR, %.0f B each), %.0f B of sync frames out (%.0f B per pod)",
		win.Round(time.Millisecond), up, down, idleUp, idleDown, statuses, statusBytes, statusBytes/max(statuses, 1), syncBytes, syncBytes/float64(n))

	// The same pods one at a time (apply, wait for Running, next): start
	// latency without a queue in front of it.
	deleteAll := func(names []string, what string) {
		for _, nm := range names {
			if err := kc.CoreV1().Pods(ns).Delete(ctx, nm, *metav1.NewDeleteOptions(0)); err != nil {
				b.Fatal(err)
			}
		}
		wait.State(b, ctx, 3*time.Minute, what, func() (bool, string) {
			l, err := kc.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			tasks, terr := st.Containerd.Ctr(ctx, "-n", "outpost-"+node, "tasks", "ls", "-q")
			if err != nil || terr != nil {
				return false, fmt.Sprint(err, terr)
			}
			return len(l.Items) == 0 && strings.TrimSpace(tasks) == "", fmt.Sprintf("%d pods, tasks %q", len(l.Items), tasks)
		})
	}
	deleteAll(names, "the burst pods gone")
	var seq []time.Duration
	var seqNames []string
	for i := range n {
		name := fmt.Sprintf("seq-%s-%02d", mode, i)
		seqNames = append(seqNames, name)
		t := time.Now()
		kubectlApply(podYAML(name))
		waitRunning([]string{name}, 2*time.Minute)
		mu.Lock()
		seq = append(seq, runningAt[name].Sub(t))
		mu.Unlock()
	}
	slices.Sort(seq)
	spct := func(p float64) time.Duration { return seq[min(len(seq)-1, int(p*float64(len(seq)-1)+0.5))] }
	b.ReportMetric(float64(spct(0.5).Milliseconds()), "seq-p50-ms")
	b.ReportMetric(float64(spct(0.99).Milliseconds()), "seq-p99-ms")
	b.Logf("%d pods one at a time: start latency p50 %v p99 %v min %v max %v", n, spct(0.5), spct(0.99), seq[0], seq[len(seq)-1])
	deleteAll(seqNames, "the pods gone")
}

// frameCounts are the relay's outpost_relay_frames_total (by label set)
// and, under "bytes|" keys, outpost_relay_frame_bytes_total.
type frameCounts map[string]float64

func (f frameCounts) bytes(labels string) float64 { return f["bytes|"+labels] }

// relayFrames scrapes the relay's /metrics.
func relayFrames(url string) (frameCounts, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}}
	resp, err := c.Get(url + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("relay /metrics: %s", resp.Status)
	}
	out := frameCounts{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		for prefix, key := range map[string]string{"outpost_relay_frames_total{": "", "outpost_relay_frame_bytes_total{": "bytes|"} {
			rest, ok := strings.CutPrefix(l, prefix)
			if !ok {
				continue
			}
			labels, val, ok := strings.Cut(rest, "} ")
			if !ok {
				continue
			}
			v, err := strconv.ParseFloat(val, 64)
			if err == nil {
				out[key+labels] = v
			}
		}
	}
	return out, sc.Err()
}

// buildLogger builds outpost-logger into dir unless it is there.
func buildLogger(ctx context.Context, dir string) error {
	out := filepath.Join(dir, "outpost-logger")
	if _, err := os.Stat(out); err == nil {
		return nil
	}
	root, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./agent/cmd/outpost-logger")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build outpost-logger: %v\n%s", err, b)
	}
	return nil
}

// loggerMem counts the container loggers run from dir (outpost-logger,
// or outpost-agent in its logger mode) and sums their PSS in KiB.
func loggerMem(dir string) (n, pss int) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cl, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cl), "\x00")
		if len(args) < 2 || filepath.Dir(args[0]) != dir {
			continue
		}
		if base := filepath.Base(args[0]); base != "outpost-logger" && !(base == "outpost-agent" && args[1] == "logger") {
			continue
		}
		if m, err := ReadMem(pid); err == nil {
			n++
			pss += m.PSS
		}
	}
	return n, pss
}
