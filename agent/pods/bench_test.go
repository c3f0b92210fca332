package pods_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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
	e.cfg.Log = nil // 30 pods' start lines would drown the figures
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
