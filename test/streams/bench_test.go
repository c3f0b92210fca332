package streams

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"outpost.dev/agent/runtime/containerd"
	"outpost.dev/test/bench"
	"outpost.dev/test/stack"
)

// median of xs (sorted in place).
func median(xs []float64) float64 {
	slices.Sort(xs)
	n := len(xs)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

// directRuntime reaches the agent's containerd namespace itself, as the
// agent does: the baseline without relay, link and agent.
func directRuntime(b *testing.B, ctx context.Context) *containerd.Runtime {
	b.Helper()
	rt, err := containerd.New(ctx, containerd.Config{Address: st.Containerd.Address, Namespace: "outpost-" + node})
	if err != nil {
		b.Fatal(err)
	}
	return rt
}

// BenchmarkExecRoundTrip: one exec of echo, its output back and its exit,
// through the relay (client-go's SPDY executor to the relay's kubelet
// endpoint, the link, the agent, containerd) and directly (containerd's
// exec API from this process, with the agent's own client), in turns.
// Reports the median of each in ms and their ratio, over 40 of each per
// iteration (make bench-streams runs one).
func BenchmarkExecRoundTrip(b *testing.B) {
	stack.Need(b)
	ctx := context.Background()
	rt := directRuntime(b, ctx)
	var relayMs, directMs []float64
	for b.Loop() {
		for i := range 40 {
			want := fmt.Sprintf("rt-%d\n", i)
			t0 := time.Now()
			out, err := exec(ctx, nil, "echo", strings.TrimSpace(want))
			relayMs = append(relayMs, float64(time.Since(t0).Microseconds())/1000)
			if err != nil || out != want {
				b.Fatalf("exec through the relay: %q, %v", out, err)
			}
			var buf strings.Builder
			t0 = time.Now()
			code, err := rt.ExecStream(ctx, containerID, []string{"echo", strings.TrimSpace(want)}, containerd.Stdio{Stdout: &buf, Stderr: io.Discard})
			directMs = append(directMs, float64(time.Since(t0).Microseconds())/1000)
			if err != nil || code != 0 || buf.String() != want {
				b.Fatalf("exec through containerd: %q, exit %d, %v", buf.String(), code, err)
			}
		}
	}
	r, d := median(relayMs), median(directMs)
	b.ReportMetric(r, "relay-p50-ms")
	b.ReportMetric(d, "direct-p50-ms")
	b.ReportMetric(r/d, "ratio")
}

// BenchmarkPortForwardThroughput: a bigSize download from the pod's httpd
// through one port-forward session over the relay, and directly from the
// pod's IP (the host is on the pod network's bridge), in turns. Reports
// the median MB/s of each and their ratio (direct / relay), over 6 of
// each per iteration.
func BenchmarkPortForwardThroughput(b *testing.B) {
	stack.Need(b)
	ctx := context.Background()
	port, stop, err := forward(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer stop()
	direct := net.JoinHostPort(podIP, "8080")
	var relayMBs, directMBs []float64
	for b.Loop() {
		for range 6 {
			for _, x := range []struct {
				addr string
				out  *[]float64
			}{{localAddr(port), &relayMBs}, {direct, &directMBs}} {
				t0 := time.Now()
				n, err := get(ctx, x.addr, "/big")
				if err != nil || n != bigSize {
					b.Fatalf("GET /big from %s: %d bytes, %v", x.addr, n, err)
				}
				*x.out = append(*x.out, float64(n)/1e6/time.Since(t0).Seconds())
			}
		}
	}
	r, d := median(relayMBs), median(directMBs)
	b.ReportMetric(r, "relay-MB/s")
	b.ReportMetric(d, "direct-MB/s")
	b.ReportMetric(d/r, "ratio")
}

// relayLinkBytes are the frame bytes the relay counted on its links (both
// directions, every type, or those whose type label starts with prefix).
func relayLinkBytes(b *testing.B, ctx context.Context, typePrefix string) float64 {
	b.Helper()
	m, err := stack.Scrape(ctx, relay.URL+"/metrics")
	if err != nil {
		b.Fatal(err)
	}
	return stack.Sum(m, "outpost_relay_frame_bytes_total", `type="`+typePrefix)
}

// idleWindow is how long BenchmarkStreamLinkBytes watches idle streams.
func idleWindow() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("OUTPOST_IDLE_WINDOW")); err == nil && d > 0 {
		return d
	}
	return 20 * time.Second
}

// BenchmarkStreamLinkBytes: link bytes (CBOR frames as the relay counts
// them) per exec of echo, open to close (tunnel frames only); and per idle
// stream per minute: 8 exec sessions of cat, open with nothing to say,
// watched for OUTPOST_IDLE_WINDOW (20s), tunnel frames only; beside it,
// all frames on the link meanwhile (heartbeats, node status).
func BenchmarkStreamLinkBytes(b *testing.B) {
	stack.Need(b)
	ctx := context.Background()
	const execs, idle = 20, 8
	for b.Loop() {
		before := relayLinkBytes(b, ctx, "tunnel-")
		for i := range execs {
			if out, err := exec(ctx, nil, "echo", strconv.Itoa(i)); err != nil || out != fmt.Sprintln(i) {
				b.Fatalf("exec: %q, %v", out, err)
			}
		}
		b.ReportMetric((relayLinkBytes(b, ctx, "tunnel-")-before)/execs, "B/exec")

		sctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for range idle {
			pr, pw := io.Pipe()
			wg.Go(func() {
				_, _ = exec(sctx, pr, "cat")
			})
			defer pw.Close()
		}
		waitTunnels(b, ctx, idle)
		w := idleWindow()
		tunnel0, all0 := relayLinkBytes(b, ctx, "tunnel-"), relayLinkBytes(b, ctx, "")
		time.Sleep(w) // a measured window, not a wait for something
		tunnel, all := relayLinkBytes(b, ctx, "tunnel-")-tunnel0, relayLinkBytes(b, ctx, "")-all0
		cancel()
		wg.Wait()
		waitTunnels(b, ctx, 0)
		perMin := float64(time.Minute) / float64(w)
		b.ReportMetric(tunnel/idle*perMin, "B/idle-stream/min")
		b.ReportMetric(all*perMin, "link-B/min")
	}
}

// waitTunnels waits until the relay counts n open tunnels.
func waitTunnels(b *testing.B, ctx context.Context, n int) {
	b.Helper()
	stack.WaitFor(b, ctx, time.Minute, fmt.Sprintf("%d tunnels open at the relay", n), func() (bool, string) {
		m, err := stack.Scrape(ctx, relay.URL+"/metrics")
		return err == nil && m["outpost_relay_tunnels"] == float64(n), fmt.Sprint(m["outpost_relay_tunnels"], err)
	})
}

// BenchmarkAgentPSSStreams: the agent's proportional set size idle, and
// with 8 exec sessions streaming output (head -c 1G /dev/zero) at once,
// read once each of them carried 8 MiB.
func BenchmarkAgentPSSStreams(b *testing.B) {
	stack.Need(b)
	ctx := context.Background()
	const streams = 8
	for b.Loop() {
		waitTunnels(b, ctx, 0)
		idle, err := bench.ReadMem(agent.Proc.Pid())
		if err != nil {
			b.Fatal(err)
		}
		sctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		var got [streams]atomic.Int64
		for i := range streams {
			wg.Go(func() {
				_ = execStream(sctx, nil, countWriter{&got[i]}, "head", "-c", "1073741824", "/dev/zero")
			})
		}
		stack.WaitFor(b, ctx, 2*time.Minute, "8 MiB through each of the streams", func() (bool, string) {
			var s []string
			ok := true
			for i := range got {
				ok = ok && got[i].Load() >= 8<<20
				s = append(s, strconv.FormatInt(got[i].Load(), 10))
			}
			return ok, strings.Join(s, " ")
		})
		busy, err := bench.ReadMem(agent.Proc.Pid())
		cancel()
		wg.Wait()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(idle.PSS), "idle-PSS-KiB")
		b.ReportMetric(float64(busy.PSS), "8-streams-PSS-KiB")
		b.ReportMetric(float64(busy.PSS-idle.PSS), "delta-KiB")
	}
}

type countWriter struct{ n *atomic.Int64 }

func (w countWriter) Write(p []byte) (int, error) { w.n.Add(int64(len(p))); return len(p), nil }

// BenchmarkStatsScrape: what one /stats/summary scrape (metrics-server's,
// kubectl top's) costs: the agent's CPU time and heap allocations, and the
// link bytes of the request and its answer, per scrape, over 50 scrapes
// per iteration of a node running one pod. The agent's own metrics
// scrape and its idle CPU over the same time are subtracted.
func BenchmarkStatsScrape(b *testing.B) {
	stack.Need(b)
	ctx := context.Background()
	c := &http.Client{Transport: kubeletTransport(b)}
	scrape := func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+relay.KubeletAddr+"/stats/summary", nil)
		req.Host = node // the relay's shared kubelet listener tells nodes apart by name
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"podRef"`) {
			b.Fatalf("GET /stats/summary: %s %s", resp.Status, body)
		}
	}
	scrape() // connections up
	agentAllocs := func() (float64, float64) {
		m, err := stack.Scrape(ctx, "http://"+agent.MetricsAddr+"/metrics")
		if err != nil {
			b.Fatal(err)
		}
		return m["go_memstats_alloc_bytes_total"], m["go_memstats_mallocs_total"]
	}
	// What reading the agent's metrics costs it, to subtract.
	mb0, mo0 := agentAllocs()
	mb1, mo1 := agentAllocs()
	selfB, selfO := mb1-mb0, mo1-mo0

	// Idle CPU over a second, to subtract.
	cpu0 := cpuTime(b)
	t0 := time.Now()
	time.Sleep(time.Second) // a measured window
	idleRate := float64(cpuTime(b)-cpu0) / float64(time.Since(t0))

	link0 := relayLinkBytes(b, ctx, "stats-")
	ab0, ao0 := agentAllocs()
	cpu0, t0 = cpuTime(b), time.Now()
	n := 0
	for b.Loop() {
		for range 50 {
			scrape()
			n++
		}
	}
	elapsed := time.Since(t0)
	cpu := float64(cpuTime(b)-cpu0) - idleRate*float64(elapsed)
	ab1, ao1 := agentAllocs()
	link := relayLinkBytes(b, ctx, "stats-") - link0
	b.ReportMetric(max(0, cpu)/float64(n)/1e6, "agent-cpu-ms/scrape")
	b.ReportMetric((ab1-ab0-selfB)/float64(n), "agent-B-alloc/scrape")
	b.ReportMetric((ao1-ao0-selfO)/float64(n), "agent-allocs/scrape")
	b.ReportMetric(link/float64(n), "link-B/scrape")
}

// kubeletTransport is kubeletConfig's TLS as an http.RoundTripper.
func kubeletTransport(b *testing.B) http.RoundTripper {
	b.Helper()
	tr, err := restTransport()
	if err != nil {
		b.Fatal(err)
	}
	return tr
}

// cpuTime is the agent's user + system CPU time so far, in ns (clock
// ticks of 10 ms, so measure over many requests).
func cpuTime(b *testing.B) time.Duration {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", agent.Proc.Pid()))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command (in parentheses, which may hold spaces):
	// utime and stime are the 14th and 15th of the line.
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		b.Fatalf("/proc/PID/stat: %q", s)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/PID/stat: %q", s)
	}
	return time.Duration(ut+stime) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}
