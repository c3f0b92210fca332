package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
)

// BenchmarkAgentWorkloadMemory is bench-mem's two steps on amd64 and the
// host's kernel, with the Go runtime's own account beside the kernel's:
// one real agent (sim board, real containerd, the pod network on) joined
// to a real relay and control plane, connected and idle for OUTPOST_IDLE
// (default 60s); then bench-mem's workload (stack.MemWorkload: 100
// Devices and 10 busybox pods; OUTPOST_BENCH_DEVICES, OUTPOST_BENCH_PODS)
// applied with kubectl and, once every pod is Ready and every Device
// Connected, OUTPOST_BENCH_SETTLE (default 45s) later, read again. Each
// reading is /proc/PID/smaps_rollup and the agent's metrics endpoint
// (go_memory_classes_*: where its anonymous memory goes, by the
// runtime's classes). It prints both readings and their difference.
//
// With OUTPOST_BENCH_HEAPPROFILE=DIR (make bench-heap) it also fetches
// the agent's live heap profile after each reading, into DIR/idle.pprof
// and DIR/workload.pprof, every allocation sampled
// (GODEBUG=memprofilerate=1, which inflates the readings by the profile's
// own memory); the agent must be built with the tag outpost_heapprofile
// (OUTPOST_BIN_DIR), or the benchmark fails.
func BenchmarkAgentWorkloadMemory(b *testing.B) {
	harness.RequireContainerd(b)
	harness.RequireCNI(b)
	idle := harness.EnvDuration(b, "OUTPOST_IDLE", 60*time.Second)
	settle := harness.EnvDuration(b, "OUTPOST_BENCH_SETTLE", 45*time.Second)
	w := stack.MemWorkload{Node: "bench-workload", Devices: envInt("OUTPOST_BENCH_DEVICES", 100), Pods: envInt("OUTPOST_BENCH_PODS", 10)}
	ctx := context.Background()
	st, relay := stack.StartWithRelay(b, ctx, stack.Options{Containerd: true, Dir: os.Getenv("OUTPOST_BENCH_DIR")})
	w.Image = st.Images[0].Ref
	agent, err := st.Join(ctx, relay, w.Node)
	if err != nil {
		b.Fatal(err)
	}
	profileDir := os.Getenv("OUTPOST_BENCH_HEAPPROFILE")
	if profileDir != "" {
		// Every allocation sampled, from the runtime's start: the
		// readings then include the profiler's own memory.
		agent.Env = []string{"GODEBUG=memprofilerate=1"}
	}
	if err := agent.Start(); err != nil {
		b.Fatal(err)
	}
	if err := st.WaitNodeReady(ctx, w.Node, true, 2*time.Minute); err != nil {
		b.Fatal(err)
	}
	read := func() workloadMem {
		b.Helper()
		m, err := ReadMem(agent.Proc.Pid())
		if err != nil {
			b.Fatal(err)
		}
		met, err := stack.Scrape(ctx, "http://"+agent.MetricsAddr+"/metrics")
		if err != nil {
			b.Fatal(err)
		}
		return workloadMem{mem: m, metrics: met}
	}

	b.ResetTimer()
	for b.Loop() {
		time.Sleep(idle) // the idle step: connected, nothing to do
	}
	b.StopTimer()
	profile := func(name string) {
		b.Helper()
		if profileDir == "" {
			return
		}
		if err := fetchHeapProfile(ctx, "http://"+agent.MetricsAddr+"/debug/heap", filepath.Join(profileDir, name)); err != nil {
			b.Fatal(err)
		}
	}
	before := read()
	profile("idle.pprof") // after the reading: it runs a collection

	f := filepath.Join(b.TempDir(), "workload.yaml")
	if err := os.WriteFile(f, []byte(w.YAML()), 0o644); err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	st.Kubectl(b, ctx, "apply", "-f", f)
	for _, what := range []struct{ kind, cond string }{{"pod", "Ready"}, {"device", "Connected"}} {
		st.Kubectl(b, ctx, "wait", "--for=condition="+what.cond, what.kind, "-l", "bench=mem", "--timeout=5m")
	}
	up := time.Since(t0)
	time.Sleep(settle) // the workload step's settling time, as bench-mem's
	after := read()
	profile("workload.pprof")
	if s, _ := st.NodeReady(ctx, w.Node); s != "True" {
		b.Fatalf("node not Ready after the workload: %q", s)
	}

	b.ReportMetric(float64(before.mem.PSS)/1024, "idle-PSS-MiB")
	b.ReportMetric(float64(before.mem.PSSAnon)/1024, "idle-anon-MiB")
	b.ReportMetric(float64(after.mem.PSS)/1024, "workload-PSS-MiB")
	b.ReportMetric(float64(after.mem.PSSAnon)/1024, "workload-anon-MiB")
	b.ReportMetric(after.metrics["go_goroutines"], "workload-goroutines")
	// Printed, not logged: a benchmark's log is cut to ten lines.
	fmt.Printf("\nThe agent idle for %v, then with %d Devices and %d pods (all up %v after kubectl apply, read %v later), KiB:\n\n%s\n",
		idle, w.Devices, w.Pods, up.Round(time.Second), settle, workloadMemTable(before, after))
}

// fetchHeapProfile writes the heap profile at url (an agent built with
// the tag outpost_heapprofile) to path.
func fetchHeapProfile(ctx context.Context, url, path string) error {
	b, err := stack.Get(ctx, url, 64<<20)
	if err != nil {
		return fmt.Errorf("%w (an agent built with -tags outpost_heapprofile serves it: make bench-heap)", err)
	}
	return os.WriteFile(path, b, 0o644)
}

// workloadMem is one reading of the agent: the kernel's and the runtime's.
type workloadMem struct {
	mem     Mem
	metrics map[string]float64
}

// workloadMemTable is a Markdown table of two readings and their
// difference: the kernel's PSS figures, then each runtime memory class.
func workloadMemTable(before, after workloadMem) string {
	var b strings.Builder
	b.WriteString("| figure | idle | workload | difference |\n|---|--:|--:|--:|\n")
	row := func(name string, x, y float64) {
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | %+.0f |\n", name, x, y, y-x)
	}
	row("PSS", float64(before.mem.PSS), float64(after.mem.PSS))
	row("PSS, anonymous", float64(before.mem.PSSAnon), float64(after.mem.PSSAnon))
	row("PSS, file-backed", float64(before.mem.PSS-before.mem.PSSAnon), float64(after.mem.PSS-after.mem.PSSAnon))
	row("goroutines (count)", before.metrics["go_goroutines"], after.metrics["go_goroutines"])
	var names []string
	for n := range after.metrics {
		if strings.HasPrefix(n, "go_memory_classes_") {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		row(strings.TrimSuffix(strings.TrimPrefix(n, "go_memory_classes_"), "_bytes"), before.metrics[n]/1024, after.metrics[n]/1024)
	}
	return b.String()
}
