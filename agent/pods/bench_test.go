package pods_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"outpost.dev/wire"
)

// BenchmarkPodStart30 measures, with the image present, the time from the
// store write of 30 pods to each one's Running (and Ready) status in the
// outbox, and reports p50 and p99; then the agent-side memory with 30
// running pods (this test process: reconciler, store, outbox) and the
// loggers' (one per container).
func BenchmarkPodStart30(b *testing.B) {
	for range b.N {
		benchOnce(b)
	}
}

func benchOnce(b *testing.B) {
	b.StopTimer()
	e := start(b)
	e.cfg.Log = nil          // 30 pods' start lines would drown the figures
	e.cfg.LogInAgent = false // it measures the logger processes
	img := e.images[0].Ref
	if _, err := e.rt.Pull(context.Background(), img, nil); err != nil {
		b.Fatal(err)
	}
	e.run()
	e.waitFor(time.Minute, "the reconciler connected to containerd", func() bool {
		_, err := e.recon.StatsContainers(context.Background())
		return err == nil
	})
	const n = 30
	var sy wire.Sync
	for i := range n {
		p := sleeper(img)
		p.Containers[0].ImagePullPolicy = "IfNotPresent"
		sy.Upserts = append(sy.Upserts, podObj(fmt.Sprintf("bench-%02d", i), fmt.Sprintf("bench-%02d", i), "1", p))
	}
	// Each pod's latency is taken as its first Running status reaches the
	// outbox.
	var (
		lat  = make([]time.Duration, 0, n)
		seen = map[string]bool{}
		all  = make(chan struct{})
	)
	b.StartTimer()
	begin := time.Now()
	e.rec.mu.Lock()
	e.rec.onPod = func(s wire.PodStatus) {
		if strings.HasPrefix(s.UID, "bench-") && !seen[s.UID] && running(s) {
			seen[s.UID] = true
			lat = append(lat, time.Since(begin))
			if len(seen) == n {
				close(all)
			}
		}
	}
	e.rec.mu.Unlock()
	e.apply(&sy)
	timeout := time.NewTimer(2 * time.Minute)
	defer timeout.Stop()
	select {
	case <-all:
	case <-timeout.C:
		e.rec.mu.Lock()
		defer e.rec.mu.Unlock()
		b.Fatalf("only %d of %d pods running after 2 minutes", len(seen), n)
	}
	e.rec.mu.Lock()
	e.rec.onPod = nil
	e.rec.mu.Unlock()
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[n/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(lat[n*99/100].Milliseconds()), "p99-ms")
	time.Sleep(3 * time.Second)
	self := memOf(os.Getpid())
	b.ReportMetric(float64(self.rss)/1e6, "proc-rss-MB")
	var lrss, lpss, lanon, cnt float64
	for _, pid := range loggers() {
		m := memOf(pid)
		lrss += float64(m.rss)
		lpss += float64(m.pss)
		lanon += float64(m.anon)
		cnt++
	}
	if cnt > 0 {
		b.ReportMetric(lrss/cnt/1e6, "logger-rss-MB")
		b.ReportMetric(lpss/cnt/1e6, "logger-pss-MB")
		b.ReportMetric(lanon/cnt/1e6, "logger-anon-MB")
		b.ReportMetric(cnt, "loggers")
	}
}

type mem struct{ rss, pss, anon int64 }

// memOf reads VmRSS, and Pss and Pss_Anon from smaps_rollup, in bytes.
func memOf(pid int) mem {
	var m mem
	read := func(file, key string) int64 {
		bs, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), file))
		if err != nil {
			return 0
		}
		for _, line := range strings.Split(string(bs), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == key {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				return n << 10
			}
		}
		return 0
	}
	m.rss = read("status", "VmRSS:")
	m.pss = read("smaps_rollup", "Pss:")
	m.anon = read("smaps_rollup", "Pss_Anon:")
	return m
}

// loggers are the logger processes the shims started from this binary.
func loggers() []int {
	self, _ := os.Executable()
	if b := os.Getenv("OUTPOST_LOGGER_BIN"); b != "" {
		self = b
	}
	return loggersOf(self)
}

// loggersOf are the processes running binary self, but this one.
func loggersOf(self string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmd), "\x00")
		if len(args) > 1 && args[0] == self {
			out = append(out, pid)
		}
	}
	return out
}

// BenchmarkLogging10 compares the two ways container output reaches its
// log, in one run: 10 pods each printing a line a second (stdout) for
// 20 s, first with a logger process per container (outpost-logger, built
// here unless OUTPOST_LOGGER_BIN names it), then with the agent copying
// the shims' FIFOs (Config.LogInAgent). It reports this process's PSS
// (the agent's side: reconciler, runtime, the copies) and its growth since
// before the pods, the loggers' PSS summed, and their total: what logging
// 10 containers costs the gateway.
func BenchmarkLogging10(b *testing.B) {
	bin := os.Getenv("OUTPOST_LOGGER_BIN")
	if bin == "" {
		bin = filepath.Join(b.TempDir(), "outpost-logger")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "outpost.dev/agent/cmd/outpost-logger")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("build outpost-logger: %v\n%s", err, out)
		}
	}
	for _, mode := range []string{"process", "agent"} {
		b.Run(mode, func(b *testing.B) {
			for range b.N {
				benchLogging(b, bin, mode == "agent")
			}
		})
	}
}

func benchLogging(b *testing.B, bin string, inAgent bool) {
	b.StopTimer()
	e := start(b)
	e.cfg.Log = nil // 10 pods' start lines would drown the figures
	e.cfg.LogBinary, e.cfg.LogInAgent = bin, inAgent
	img := e.images[0].Ref
	if _, err := e.rt.Pull(context.Background(), img, nil); err != nil {
		b.Fatal(err)
	}
	e.run()
	e.waitFor(time.Minute, "the reconciler connected to containerd", func() bool {
		_, err := e.recon.StatsContainers(context.Background())
		return err == nil
	})
	debug.FreeOSMemory()
	before := memOf(os.Getpid())
	const n = 10
	var sy wire.Sync
	for i := range n {
		p := wire.Pod{Containers: []wire.Container{{Name: "app", Image: img, ImagePullPolicy: "IfNotPresent",
			Command: []string{"sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done"}}}}
		sy.Upserts = append(sy.Upserts, podObj(fmt.Sprintf("log-%02d", i), fmt.Sprintf("log-%02d", i), "1", p))
	}
	e.apply(&sy)
	for i := range n {
		uid := fmt.Sprintf("log-%02d", i)
		e.waitFor(2*time.Minute, uid+" running", func() bool { s, ok := e.rec.latest(uid); return ok && running(s) })
	}
	for i := range n { // 20 lines from each, a line a second
		name := fmt.Sprintf("log-%02d", i)
		e.waitFor(time.Minute, name+" logged its 20th line", func() bool {
			return strings.Contains(e.log("default", name, "app", false), "tick 20\n")
		})
	}
	debug.FreeOSMemory()
	self := memOf(os.Getpid())
	var lpss, cnt float64
	for _, pid := range loggersOf(bin) {
		lpss += float64(memOf(pid).pss)
		cnt++
	}
	if want := map[bool]float64{false: n, true: 0}[inAgent]; cnt != want {
		b.Fatalf("%v loggers running, want %v", cnt, want)
	}
	b.ReportMetric(float64(self.pss)/(1<<20), "agent-pss-MiB")
	b.ReportMetric(float64(self.pss-before.pss)/(1<<20), "agent-growth-MiB")
	b.ReportMetric(lpss/(1<<20), "loggers-pss-MiB")
	b.ReportMetric((float64(self.pss-before.pss)+lpss)/(1<<20), "logging-cost-MiB")
	b.ReportMetric(cnt, "loggers")
}
