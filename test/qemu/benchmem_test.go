//go:build qemu

package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"outpost.dev/test/harness"
)

// Figures read in the guest, in kB (KiB) as /proc gives them. Rss, Pss
// and Pss_* are smaps_rollup's, counted page by page; VmRSS, RssAnon and
// VmHWM are status's, from per-thread counters that Linux 6.1 folds in
// lazily, so they lag (by up to 64 pages a thread) and can read below Pss.
var agentFigures = []string{"Pss", "Pss_Anon", "Pss_File", "Rss", "VmRSS", "RssAnon", "VmHWM"}

// memBudget is build/budget-mem.json.
type memBudget struct {
	Comment string `json:"comment"`
	// MaxKiB[arch][workload][figure] is the most the agent may use.
	MaxKiB map[string]map[string]map[string]float64 `json:"maxKiB"`
}

// benchResult is what bench-mem writes to bin/bench-mem.json.
type benchResult struct {
	Date        string  `json:"date"`
	Commit      string  `json:"commit"`
	Arch        string  `json:"arch"`
	Board       string  `json:"board"`
	Machine     string  `json:"machine"`
	Kernel      string  `json:"kernel"`
	IdleSeconds float64 `json:"idleSeconds"`
	// FaultAroundBytes is the guest kernel's fault_around_bytes when the
	// bench set it (OUTPOST_BENCH_FAULT_AROUND); 0: the kernel's default.
	FaultAroundBytes int `json:"faultAroundBytes,omitempty"`
	// Devices and Pods are the "workload" step's: sim Devices and pods
	// running on the gateway, measured SettleSeconds after all are up.
	Devices       int                `json:"devices"`
	Pods          int                `json:"pods"`
	SettleSeconds float64            `json:"settleSeconds"`
	Runs          int                `json:"runs"`
	Samples       int                `json:"samples"`
	Workloads     map[string]figures `json:"workloads"`
	// Informational: emulated boot, so slow and noisy.
	BootToReadySeconds []float64 `json:"bootToReadySeconds"`
	BootToJoinSeconds  []float64 `json:"bootToJoinSeconds"`
	ImageBuildSeconds  []float64 `json:"imageBuildSeconds"`
	// WorkloadUpSeconds is from kubectl apply to every pod Ready and
	// every Device Connected, per run (emulated, informational).
	WorkloadUpSeconds []float64 `json:"workloadUpSeconds"`
	// PssAnonGrowth is how fast the agent's anonymous PSS grew from the
	// first reading after Ready to the last idle one, KiB per minute, per
	// run: informational (the Go heap grows to its first GC goal before
	// it levels off), but a leak shows here first.
	PssAnonGrowth []float64 `json:"pssAnonGrowthKiBPerMinute"`
	NotMeasured   []string  `json:"notMeasured,omitempty"`
	OverBudget    []string  `json:"overBudget,omitempty"`
}

type figures struct {
	// Agent and Containerd hold the median of each figure in KiB.
	Agent      map[string]float64 `json:"agentKiB"`
	Containerd map[string]float64 `json:"containerdKiB"`
	// Shims and Loggers are the pods' runc shims and container loggers
	// (outpost-logger), summed: count, Pss, Rss.
	Shims   map[string]float64 `json:"shimsKiB,omitempty"`
	Loggers map[string]float64 `json:"loggersKiB,omitempty"`
	// AgentSamples are every sample's Pss, Pss_Anon and Rss, and the
	// guest's uptime in seconds when it was read.
	AgentSamples []map[string]float64 `json:"agentSamples"`
}

// The benchmark's steps, the keys of Workloads and of the budget.
const (
	stepIdle     = "idle"
	stepWorkload = "workload"
)

// TestBenchMem is make bench-mem: boots the qemu-ARCH image
// (OUTPOST_QEMU_ARCH, default arm64), lets its agent join a relay on the
// host, leaves it connected and idle, reads the agent's memory inside the
// guest (the image's memreport hook prints /proc/PID/status and
// smaps_rollup figures on the console when the kernel command line asks
// for it), then applies the workload (OUTPOST_BENCH_DEVICES sim Devices,
// OUTPOST_BENCH_PODS pods pulled from a registry on the host) and reads
// again once all are up. It writes OUTPOST_BENCH_JSON and the arch's
// section of OUTPOST_BENCH_DOC, and fails only when a figure is over
// build/budget-mem.json. OUTPOST_BENCH_FAULT_AROUND=BYTES boots the guest
// with that fault_around_bytes (outpost.faultaround), to see which pages
// of the binaries the processes touch; it writes no doc section then.
func TestBenchMem(t *testing.T) {
	arch := testArch(t)
	mach := machines[arch]
	idle := harness.EnvDuration(t, "OUTPOST_BENCH_IDLE", 3*time.Minute)
	settle := harness.EnvDuration(t, "OUTPOST_BENCH_SETTLE", 45*time.Second)
	samples := envInt(t, "OUTPOST_BENCH_SAMPLES", 5)
	runs := envInt(t, "OUTPOST_BENCH_RUNS", 1)
	wl := workload{Devices: envInt(t, "OUTPOST_BENCH_DEVICES", 100), Pods: envInt(t, "OUTPOST_BENCH_PODS", 10)}
	faultAround := envInt(t, "OUTPOST_BENCH_FAULT_AROUND", 0)
	const every = 5 // seconds between readings in the guest
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	budgetPath := filepath.Join(root, "build", "budget-mem.json")
	var budget memBudget
	if data, err := os.ReadFile(budgetPath); err != nil {
		t.Fatal(err)
	} else if err := json.Unmarshal(data, &budget); err != nil {
		t.Fatalf("%s: %v", budgetPath, err)
	}

	res := benchResult{
		Date: time.Now().UTC().Format("2006-01-02"), Commit: gitCommit(root), Arch: arch, Board: mach.Board,
		Machine:     mach.Description() + " on " + runtime.GOARCH,
		IdleSeconds: idle.Seconds(), SettleSeconds: settle.Seconds(), Devices: wl.Devices, Pods: wl.Pods,
		Runs: runs, Samples: samples, Workloads: map[string]figures{}, FaultAroundBytes: faultAround,
	}
	kernelArgs := []string{"outpost.memreport=" + strconv.Itoa(every)}
	if faultAround > 0 {
		kernelArgs = append(kernelArgs, "outpost.faultaround="+strconv.Itoa(faultAround))
	}
	// step → agent, containerd, shims, loggers readings
	all := map[string][4][]map[string]float64{}
	read := func(t *testing.T, g *gateway, step string) int {
		from := g.Con.Len()
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(samples*every+120)*time.Second)
		defer cancel()
		r := all[step]
		for i := 0; i < samples; i++ {
			idx, l, err := g.Con.WaitFrom(ctx, from, func(l string) bool { return strings.HasPrefix(l, "outpost-mem: outpost-agent ") })
			if err != nil {
				t.Fatalf("no memory reading from the guest (is outpost.memreport in the image?): %v\n%s", err, g.Con.Tail(30))
			}
			r[0] = append(r[0], parseMem(l))
			t.Logf("guest (%s): %s", step, l)
			// containerd's, the shims' and the loggers' readings follow the
			// agent's in the same round, which ends with the system's.
			for j := idx + 1; ; j++ {
				var l string
				if j, l, err = g.Con.WaitFrom(ctx, j, func(l string) bool { return strings.HasPrefix(l, "outpost-mem: ") }); err != nil {
					break
				}
				for k, p := range []string{"containerd ", "shims ", "loggers "} {
					if strings.HasPrefix(l, "outpost-mem: "+p) {
						r[k+1] = append(r[k+1], parseMem(l))
					}
				}
				if strings.HasPrefix(l, "outpost-mem: system ") || strings.HasPrefix(l, "outpost-mem: outpost-agent ") {
					break
				}
			}
			from = idx + 1
		}
		all[step] = r
		return from
	}
	for run := 1; run <= runs; run++ {
		t.Run(fmt.Sprintf("run%d", run), func(t *testing.T) {
			reg, err := harness.StartRegistry(context.Background(), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { reg.Stop() })
			g := bootGateway(t, gatewayOptions{Arch: arch, Registries: []string{reg.Host},
				KernelArgs: kernelArgs, ReadyTimeout: 15 * time.Minute})
			res.BootToReadySeconds = append(res.BootToReadySeconds, round1(g.Ready.Sub(g.Start).Seconds()))
			res.BootToJoinSeconds = append(res.BootToJoinSeconds, round1(g.Joined.Sub(g.Start).Seconds()))
			res.ImageBuildSeconds = append(res.ImageBuildSeconds, round1(g.ImageBuild.Seconds()))
			if l, err := g.Con.WaitFor(context.Background(), "outpost: up: "); err == nil {
				if f := strings.Fields(l); len(f) > 0 {
					res.Kernel = f[len(f)-1]
				}
			}
			if faultAround > 0 {
				want := "outpost: fault_around_bytes " + strconv.Itoa(faultAround)
				if l, err := g.Con.WaitFor(context.Background(), "outpost: fault_around_bytes "); err != nil || strings.TrimSpace(l) != want {
					t.Fatalf("the guest did not set fault_around_bytes: %q %v, want %q", l, err, want)
				}
			}
			t.Logf("connected; idle for %v, then %d readings %ds apart", idle, samples, every)
			time.Sleep(idle)
			end := read(t, g, stepIdle)
			if first, last, ok := readyAndLast(g, end); ok && last["up"] > first["up"] {
				res.PssAnonGrowth = append(res.PssAnonGrowth, round1((last["Pss_Anon"]-first["Pss_Anon"])/(last["up"]-first["up"])*60))
			}
			if s, err := g.St.NodeReady(context.Background(), g.Node); err != nil || s != "True" {
				t.Fatalf("node %s not Ready after the idle period: %q %v", g.Node, s, err)
			}

			w := wl
			w.Image = pushGuestImage(t, context.Background(), reg, arch, "test/busybox:1", guestBusybox(t, arch))
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
			defer cancel()
			t0 := time.Now()
			w.apply(t, ctx, g)
			res.WorkloadUpSeconds = append(res.WorkloadUpSeconds, round1(time.Since(t0).Seconds()))
			t.Logf("%d devices and %d pods up; settling for %v, then %d readings", w.Devices, w.Pods, settle, samples)
			time.Sleep(settle)
			read(t, g, stepWorkload)
			if out, err := g.St.CP.Kubectl(ctx, "get", "pods", "-l", "bench=mem", "--no-headers"); err != nil ||
				strings.Count(out, " Running ") != w.Pods {
				t.Fatalf("not every bench pod Running after the readings: %v\n%s", err, out)
			}
		})
	}
	for _, step := range []string{stepIdle, stepWorkload} {
		r := all[step]
		if len(r[0]) == 0 {
			t.Fatalf("no %s readings", step)
		}
		fig := figures{Agent: medians(r[0], agentFigures), Containerd: medians(r[1], []string{"Pss", "Pss_Anon", "Rss"}),
			Shims: medians(r[2], []string{"count", "Pss", "Rss"}), Loggers: medians(r[3], []string{"count", "Pss", "Rss"})}
		for _, m := range r[0] {
			fig.AgentSamples = append(fig.AgentSamples, map[string]float64{"Pss": m["Pss"], "Pss_Anon": m["Pss_Anon"], "Rss": m["Rss"], "up": m["up"]})
		}
		res.Workloads[step] = fig
	}

	if _, ok := budget.MaxKiB[arch]; !ok {
		res.NotMeasured = append(res.NotMeasured, fmt.Sprintf("no %s budget in build/budget-mem.json: nothing is checked", arch))
	}
	for step, figs := range budget.MaxKiB[arch] {
		for fig, max := range figs {
			if got, ok := res.Workloads[step].Agent[fig]; !ok {
				res.OverBudget = append(res.OverBudget, fmt.Sprintf("%s %s: not measured, budget %.0f KiB", step, fig, max))
			} else if got > max {
				res.OverBudget = append(res.OverBudget, fmt.Sprintf("%s %s: %.0f KiB, budget %.0f KiB", step, fig, got, max))
			}
		}
	}
	slices.Sort(res.OverBudget)

	report := summary(res, budget)
	for _, l := range strings.Split(report, "\n") {
		t.Log(l)
	}
	if p := os.Getenv("OUTPOST_BENCH_JSON"); p != "" {
		data, _ := json.MarshalIndent(res, "", "  ")
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, append(data, '\n'), 0o644); err != nil {
			t.Error(err)
		}
		t.Logf("wrote %s", p)
	}
	if p := os.Getenv("OUTPOST_BENCH_DOC"); p != "" && faultAround > 0 {
		t.Logf("not writing %s: the figures with fault_around_bytes %d are not the image's", p, faultAround)
	} else if p != "" {
		if err := writeDocSection(p, arch, docSection(res, budget)); err != nil {
			t.Error(err)
		}
		t.Logf("wrote the bench-mem %s section of %s", arch, p)
	}
	if len(res.OverBudget) > 0 {
		t.Fatalf("over the budget in %s (a regression: find what grew, or raise the budget in the change that explains it):\n  %s",
			budgetPath, strings.Join(res.OverBudget, "\n  "))
	}
}

// readyAndLast returns the agent's first reading at or after the node
// became Ready and its last reading before line index end.
func readyAndLast(g *gateway, end int) (first, last map[string]float64, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	isAgent := func(l string) bool { return strings.HasPrefix(l, "outpost-mem: outpost-agent ") }
	i, l, err := g.Con.WaitFrom(ctx, g.ReadyLine, isAgent)
	if err != nil || i >= end {
		return nil, nil, false
	}
	first, last = parseMem(l), parseMem(l)
	for {
		j, l, err := g.Con.WaitFrom(ctx, i+1, isAgent)
		if err != nil || j >= end {
			return first, last, true
		}
		last, i = parseMem(l), j
	}
}

var memField = regexp.MustCompile(`(\w+)=([0-9.]+)`)

// parseMem reads "outpost-mem: NAME pid=1 up=2.3 VmRSS=9000 ...".
func parseMem(line string) map[string]float64 {
	m := map[string]float64{}
	for _, f := range memField.FindAllStringSubmatch(line, -1) {
		if v, err := strconv.ParseFloat(f[2], 64); err == nil {
			m[f[1]] = v
		}
	}
	return m
}

func medians(ms []map[string]float64, names []string) map[string]float64 {
	out := map[string]float64{}
	for _, n := range names {
		var v []float64
		for _, m := range ms {
			if x, ok := m[n]; ok {
				v = append(v, x)
			}
		}
		if len(v) == 0 {
			continue
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			out[n] = v[len(v)/2]
		} else {
			out[n] = (v[len(v)/2-1] + v[len(v)/2]) / 2
		}
	}
	return out
}

func joinF(v []float64) string {
	var s []string
	for _, x := range v {
		s = append(s, strconv.FormatFloat(x, 'f', -1, 64))
	}
	if len(s) == 0 {
		return "—"
	}
	return strings.Join(s, ", ")
}

func mib(kib float64) string { return fmt.Sprintf("%.1f MiB", kib/1024) }

func round1(f float64) float64 { return float64(int(f*10+0.5)) / 10 }

func secs(v []float64) string {
	var s []string
	for _, x := range v {
		s = append(s, fmt.Sprintf("%.1f s", x))
	}
	return strings.Join(s, ", ")
}

func budgetFor(b memBudget, arch, step, fig string) string {
	if v, ok := b.MaxKiB[arch][step][fig]; ok {
		return mib(v)
	}
	return "—"
}

// summary is what the CI log shows.
func summary(r benchResult, b memBudget) string {
	var s strings.Builder
	fmt.Fprintf(&s, "bench-mem %s %s, %s, commit %s: median of %d readings per step\n", r.Arch, r.Board, r.Date, r.Commit, r.Runs*r.Samples)
	if r.FaultAroundBytes > 0 {
		fmt.Fprintf(&s, "  guest kernel fault_around_bytes %d (not the image's default)\n", r.FaultAroundBytes)
	}
	for _, step := range []string{stepIdle, stepWorkload} {
		a, c := r.Workloads[step].Agent, r.Workloads[step].Containerd
		fmt.Fprintf(&s, "  %s\n", stepTitle(r, step))
		for _, f := range []string{"Pss", "Pss_Anon", "Pss_File", "Rss"} {
			fmt.Fprintf(&s, "    agent %-9s %9s  (budget %s)\n", f, mib(a[f]), budgetFor(b, r.Arch, step, f))
		}
		fmt.Fprintf(&s, "    containerd Pss %s, Rss %s (separate process, informational)\n", mib(c["Pss"]), mib(c["Rss"]))
		if sh, lg := r.Workloads[step].Shims, r.Workloads[step].Loggers; sh["count"] > 0 || lg["count"] > 0 {
			fmt.Fprintf(&s, "    %.0f runc shims Pss %s, %.0f container loggers Pss %s (summed, informational)\n", sh["count"], mib(sh["Pss"]), lg["count"], mib(lg["Pss"]))
		}
	}
	fmt.Fprintf(&s, "  agent Pss_Anon grew %s KiB/min while idle (informational)\n", joinF(r.PssAnonGrowth))
	fmt.Fprintf(&s, "  boot to Ready %s (join %s); workload up in %s (emulated, informational)", secs(r.BootToReadySeconds),
		secs(r.BootToJoinSeconds), secs(r.WorkloadUpSeconds))
	for _, n := range r.NotMeasured {
		fmt.Fprintf(&s, "\n  note: %s", n)
	}
	if len(r.OverBudget) > 0 {
		fmt.Fprintf(&s, "\n  OVER BUDGET: %s", strings.Join(r.OverBudget, "; "))
	}
	return s.String()
}

func stepTitle(r benchResult, step string) string {
	if step == stepIdle {
		return fmt.Sprintf("idle %.0f s, connected, no pods or devices", r.IdleSeconds)
	}
	return fmt.Sprintf("%d sim devices and %d pods running, %.0f s after all were up", r.Devices, r.Pods, r.SettleSeconds)
}

// docMarkers are the arch's section markers in docs/benchmarks.md; arm64
// keeps the markers it had before there were others.
func docMarkers(arch string) (begin, end string) {
	if arch == "arm64" {
		return "<!-- bench-mem: begin (written by make bench-mem; edits here are replaced) -->", "<!-- bench-mem: end -->"
	}
	return "<!-- bench-mem " + arch + ": begin (written by make bench-mem ARCH=" + arch + "; edits here are replaced) -->",
		"<!-- bench-mem " + arch + ": end -->"
}

var kernelFrom = map[string]string{
	"arm64":   "Debian's arm64 kernel",
	"riscv64": "Debian trixie's prebuilt riscv64 kernel",
}

func docSection(r benchResult, b memBudget) string {
	var s strings.Builder
	fmt.Fprintf(&s, "## Agent memory inside the gateway image (QEMU %s)\n\n", r.Arch)
	cmd := "make bench-mem"
	if r.Arch != "arm64" {
		cmd += " ARCH=" + r.Arch
	}
	fmt.Fprintf(&s, "`%s` (`go test -tags qemu -run TestBenchMem ./test/qemu/`), %s, commit %s: the\n", cmd, r.Date, r.Commit)
	fmt.Fprintf(&s, "`%s` image (`make image`: %s %s, containerd, busybox init)\n", r.Board, kernelFrom[r.Arch], r.Kernel)
	fmt.Fprintf(&s, "booted in %s; its agent joins a relay on the host through QEMU's\n", r.Machine)
	fmt.Fprintf(&s, "user network with the token baked into the image and stays connected and idle for %.0f s; then\n", r.IdleSeconds)
	fmt.Fprintf(&s, "%d Devices on the sim board (BME280, SHT3x, GPIO outputs; polled every 5 s, reported every 10 s)\n", r.Devices)
	fmt.Fprintf(&s, "and %d pods (busybox `sleep`, pulled from a registry on the host; not hostNetwork, so each on the image's pod network) are applied with kubectl and,\n", r.Pods)
	fmt.Fprintf(&s, "%.0f s after every pod is Ready and every Device Connected, read again. The image's memory hook\n", r.SettleSeconds)
	fmt.Fprintf(&s, "(kernel argument `outpost.memreport=5`) prints `/proc/PID/status` and `/proc/PID/smaps_rollup`\n")
	fmt.Fprintf(&s, "on the serial console. Medians of %d readings 5 s apart per step", r.Runs*r.Samples)
	if r.Runs > 1 {
		fmt.Fprintf(&s, " over %d boots", r.Runs)
	}
	fmt.Fprintf(&s, "; the run fails only\nabove `build/budget-mem.json`. Machine-readable: `bin/bench-mem%s.json`.\n\n", map[bool]string{true: "", false: "-" + r.Arch}[r.Arch == "arm64"])
	wi, ww := r.Workloads[stepIdle].Agent, r.Workloads[stepWorkload].Agent
	fmt.Fprintf(&s, "| agent (`outpost-agent run`) | idle, connected | budget | goal | %d devices, %d pods | budget | goal | KubeEdge v1.23.1 edgecore idle (same machine) |\n", r.Devices, r.Pods)
	fmt.Fprintf(&s, "|---|---|---|---|---|---|---|---|\n")
	row := func(label, fig, goalIdle, goalWork, kubeedge string) {
		fmt.Fprintf(&s, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", label, mib(wi[fig]), budgetFor(b, r.Arch, stepIdle, fig), goalIdle,
			mib(ww[fig]), budgetFor(b, r.Arch, stepWorkload, fig), goalWork, kubeedge)
	}
	row("PSS", "Pss", "≤ 12 MB", "≤ 16 MB", "114 MiB")
	row("PSS, anonymous", "Pss_Anon", "", "", "21 MiB")
	row("PSS, file-backed (the binary's pages)", "Pss_File", "", "", "")
	row("RSS (smaps_rollup)", "Rss", "", "", "")
	row("VmRSS (status; lags, see below)", "VmRSS", "", "", "")
	fmt.Fprintf(&s, "\nEvery figure is the agent's alone (`outpost-agent run`; the join before it is a separate process).\n")
	fmt.Fprintf(&s, "Idle, PSS is close to RSS: nothing else maps the agent's static binary. `VmRSS` in `/proc/PID/status`\n")
	fmt.Fprintf(&s, "comes from per-thread counters the kernel folds in lazily, so it can read below smaps_rollup's exact\n")
	fmt.Fprintf(&s, "`Rss`; budgets use smaps_rollup.\n")
	ci, cw := r.Workloads[stepIdle].Containerd, r.Workloads[stepWorkload].Containerd
	fmt.Fprintf(&s, "containerd, a separate process, measured alongside: PSS %s idle, %s with the workload (RSS %s, %s);\n",
		mib(ci["Pss"]), mib(cw["Pss"]), mib(ci["Rss"]), mib(cw["Rss"]))
	sh, lg := r.Workloads[stepWorkload].Shims, r.Workloads[stepWorkload].Loggers
	if lg["count"] > 0 {
		fmt.Fprintf(&s, "with the pods, their %.0f runc shims take %s PSS together and their %.0f container loggers (outpost-logger,\n", sh["count"], mib(sh["Pss"]), lg["count"])
		fmt.Fprintf(&s, "started by the shims, `logging: process`) %s; neither is counted in the agent's figures.\n", mib(lg["Pss"]))
	} else {
		fmt.Fprintf(&s, "with the pods, their %.0f runc shims take %s PSS together (not counted in the agent's figures); no logger\n", sh["count"], mib(sh["Pss"]))
		fmt.Fprintf(&s, "process runs: the agent copies the containers' output into their log files itself (`logging: agent`).\n")
	}
	// The whole gateway outside the pods: what the node spends on itself.
	fmt.Fprintf(&s, "\n| the gateway outside the pods, PSS | idle, connected | %d devices, %d pods |\n|---|---|---|\n", r.Devices, r.Pods)
	gw := func(step string) (agent, ctrd, shims, loggers float64) {
		f := r.Workloads[step]
		return f.Agent["Pss"], f.Containerd["Pss"], f.Shims["Pss"], f.Loggers["Pss"]
	}
	ia, ic, is, il := gw(stepIdle)
	wa, wc, ws, wl := gw(stepWorkload)
	fmt.Fprintf(&s, "| agent | %s | %s |\n", mib(ia), mib(wa))
	fmt.Fprintf(&s, "| containerd | %s | %s |\n", mib(ic), mib(wc))
	fmt.Fprintf(&s, "| runc shims (%.0f with the pods) | %s | %s |\n", sh["count"], mib(is), mib(ws))
	fmt.Fprintf(&s, "| container loggers (%.0f with the pods) | %s | %s |\n", lg["count"], mib(il), mib(wl))
	fmt.Fprintf(&s, "| **total** | **%s** | **%s** |\n\n", mib(ia+ic+is+il), mib(wa+wc+ws+wl))
	fmt.Fprintf(&s, "While idle the agent's anonymous PSS grew by %s KiB a minute (first reading after Ready to the last;\n", joinF(r.PssAnonGrowth))
	fmt.Fprintf(&s, "informational: the Go heap grows to its first GC goal before it levels off, but a leak would show here).\n")
	fmt.Fprintf(&s, "Emulated on 2 cores, informational: boot to Ready (QEMU start to the Node's Ready condition) %s,\n", secs(r.BootToReadySeconds))
	fmt.Fprintf(&s, "the agent's join finished at %s; kubectl apply to every pod Ready and Device Connected %s.\n",
		secs(r.BootToJoinSeconds), secs(r.WorkloadUpSeconds))
	for _, n := range r.NotMeasured {
		fmt.Fprintf(&s, "\nNote: %s.\n", n)
	}
	return s.String()
}

// writeDocSection replaces arch's marked section of path, or appends it;
// text outside the markers is kept as it is.
func writeDocSection(path, arch, section string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	begin, end := docMarkers(arch)
	doc := string(data)
	block := begin + "\n" + section + end + "\n"
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i >= 0 && j > i {
		doc = doc[:i] + block + strings.TrimPrefix(doc[j+len(end):], "\n")
	} else {
		doc = strings.TrimRight(doc, "\n") + "\n\n" + block
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}

func gitCommit(root string) string {
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, _ := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); len(st) > 0 {
		c += "+dirty"
	}
	return c
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}
