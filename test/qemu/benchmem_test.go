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
	Date        string             `json:"date"`
	Commit      string             `json:"commit"`
	Arch        string             `json:"arch"`
	Board       string             `json:"board"`
	Machine     string             `json:"machine"`
	Kernel      string             `json:"kernel"`
	IdleSeconds float64            `json:"idleSeconds"`
	Runs        int                `json:"runs"`
	Samples     int                `json:"samples"`
	Workloads   map[string]figures `json:"workloads"`
	// Informational: emulated boot, so slow and noisy.
	BootToReadySeconds []float64 `json:"bootToReadySeconds"`
	BootToJoinSeconds  []float64 `json:"bootToJoinSeconds"`
	ImageBuildSeconds  []float64 `json:"imageBuildSeconds"`
	// PssAnonGrowth is how fast the agent's anonymous PSS grew from the
	// first reading after Ready to the last, KiB per minute, per run:
	// informational (the Go heap grows to its first GC goal before it
	// levels off), but a leak shows here first.
	PssAnonGrowth []float64 `json:"pssAnonGrowthKiBPerMinute"`
	NotMeasured   []string  `json:"notMeasured,omitempty"`
	OverBudget    []string  `json:"overBudget,omitempty"`
}

type figures struct {
	// Agent and Containerd hold the median of each figure in KiB.
	Agent      map[string]float64 `json:"agentKiB"`
	Containerd map[string]float64 `json:"containerdKiB"`
	// AgentSamples are every sample's Pss, Pss_Anon and Rss, and the
	// guest's uptime in seconds when it was read.
	AgentSamples []map[string]float64 `json:"agentSamples"`
}

// TestBenchMem is make bench-mem: boots the qemu-arm64 image, lets its
// agent join a relay on the host, leaves it connected and idle, and reads
// the agent's memory inside the guest (the image's memreport hook prints
// /proc/PID/status and smaps_rollup figures on the console when the kernel
// command line asks for it). It writes bin/bench-mem.json and a section of
// docs/benchmarks.md, and fails only when a figure is over
// build/budget-mem.json.
func TestBenchMem(t *testing.T) {
	idle := envDuration(t, "OUTPOST_BENCH_IDLE", 3*time.Minute)
	samples := envInt(t, "OUTPOST_BENCH_SAMPLES", 5)
	runs := envInt(t, "OUTPOST_BENCH_RUNS", 1)
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
		Date: time.Now().UTC().Format("2006-01-02"), Commit: gitCommit(root), Arch: "arm64", Board: "qemu-arm64",
		Machine:     "qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 512 (TCG) on " + runtime.GOARCH,
		IdleSeconds: idle.Seconds(), Runs: runs, Samples: samples,
		Workloads: map[string]figures{},
		NotMeasured: []string{"100 sim devices and 10 pods: the benchmark does not apply that workload to the guest yet " +
			"(the image would also need the test image in a registry the guest reaches); only idle is measured"},
	}
	var agentAll, ctrdAll []map[string]float64
	for run := 1; run <= runs; run++ {
		t.Run(fmt.Sprintf("run%d", run), func(t *testing.T) {
			g := bootGateway(t, gatewayOptions{KernelArgs: []string{"outpost.memreport=" + strconv.Itoa(every)}})
			res.BootToReadySeconds = append(res.BootToReadySeconds, round1(g.Ready.Sub(g.Start).Seconds()))
			res.BootToJoinSeconds = append(res.BootToJoinSeconds, round1(g.Joined.Sub(g.Start).Seconds()))
			res.ImageBuildSeconds = append(res.ImageBuildSeconds, round1(g.ImageBuild.Seconds()))
			if l, err := g.Con.WaitFor(context.Background(), "outpost: up: "); err == nil {
				if f := strings.Fields(l); len(f) > 0 {
					res.Kernel = f[len(f)-1]
				}
			}
			t.Logf("connected; idle for %v, then %d readings %ds apart", idle, samples, every)
			time.Sleep(idle)
			from := g.Con.Len()
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(samples*every+60)*time.Second)
			defer cancel()
			for i := 0; i < samples; i++ {
				idx, l, err := g.Con.WaitFrom(ctx, from, func(l string) bool { return strings.HasPrefix(l, "outpost-mem: outpost-agent ") })
				if err != nil {
					t.Fatalf("no memory reading from the guest (is outpost.memreport in the image?): %v\n%s", err, g.Con.Tail(30))
				}
				m := parseMem(l)
				agentAll = append(agentAll, m)
				t.Logf("guest: %s", l)
				// containerd's reading follows the agent's in the same round.
				_, cl, err := g.Con.WaitFrom(ctx, idx+1, func(l string) bool { return strings.HasPrefix(l, "outpost-mem: ") })
				if err == nil && strings.HasPrefix(cl, "outpost-mem: containerd ") {
					ctrdAll = append(ctrdAll, parseMem(cl))
				}
				from = idx + 1
			}
			if first, last, ok := readyAndLast(g, from); ok && last["up"] > first["up"] {
				res.PssAnonGrowth = append(res.PssAnonGrowth, round1((last["Pss_Anon"]-first["Pss_Anon"])/(last["up"]-first["up"])*60))
			}
			if s, err := g.St.NodeReady(context.Background(), g.Node); err != nil || s != "True" {
				t.Fatalf("node %s not Ready after the idle period: %q %v", g.Node, s, err)
			}
		})
	}
	if len(agentAll) == 0 {
		t.Fatal("no readings")
	}
	idleFig := figures{Agent: medians(agentAll, agentFigures), Containerd: medians(ctrdAll, []string{"Pss", "Pss_Anon", "Rss"})}
	for _, m := range agentAll {
		idleFig.AgentSamples = append(idleFig.AgentSamples, map[string]float64{"Pss": m["Pss"], "Pss_Anon": m["Pss_Anon"], "Rss": m["Rss"], "up": m["up"]})
	}
	res.Workloads["idle"] = idleFig

	for fig, max := range budget.MaxKiB[res.Arch]["idle"] {
		if got, ok := idleFig.Agent[fig]; !ok {
			res.OverBudget = append(res.OverBudget, fmt.Sprintf("idle %s: not measured, budget %.0f KiB", fig, max))
		} else if got > max {
			res.OverBudget = append(res.OverBudget, fmt.Sprintf("idle %s: %.0f KiB, budget %.0f KiB", fig, got, max))
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
	if p := os.Getenv("OUTPOST_BENCH_DOC"); p != "" {
		if err := writeDocSection(p, docSection(res, budget)); err != nil {
			t.Error(err)
		}
		t.Logf("wrote the bench-mem section of %s", p)
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

func budgetFor(b memBudget, arch, fig string) string {
	if v, ok := b.MaxKiB[arch]["idle"][fig]; ok {
		return mib(v)
	}
	return "—"
}

// summary is what the CI log shows.
func summary(r benchResult, b memBudget) string {
	a, c := r.Workloads["idle"].Agent, r.Workloads["idle"].Containerd
	var s strings.Builder
	fmt.Fprintf(&s, "bench-mem %s %s, %s, commit %s: idle %.0fs connected, median of %d readings\n", r.Arch, r.Board, r.Date, r.Commit, r.IdleSeconds, r.Runs*r.Samples)
	for _, f := range []string{"Pss", "Pss_Anon", "Pss_File", "Rss"} {
		fmt.Fprintf(&s, "  agent %-9s %9s  (budget %s)\n", f, mib(a[f]), budgetFor(b, r.Arch, f))
	}
	fmt.Fprintf(&s, "  containerd Pss %s, Rss %s (separate process, informational)\n", mib(c["Pss"]), mib(c["Rss"]))
	fmt.Fprintf(&s, "  agent Pss_Anon grew %s KiB/min while idle (informational)\n", joinF(r.PssAnonGrowth))
	fmt.Fprintf(&s, "  boot to Ready %s (join %s; emulated, informational)", secs(r.BootToReadySeconds), secs(r.BootToJoinSeconds))
	if len(r.OverBudget) > 0 {
		fmt.Fprintf(&s, "\n  OVER BUDGET: %s", strings.Join(r.OverBudget, "; "))
	}
	return s.String()
}

const (
	docBegin = "<!-- bench-mem: begin (written by make bench-mem; edits here are replaced) -->"
	docEnd   = "<!-- bench-mem: end -->"
)

func docSection(r benchResult, b memBudget) string {
	a, c := r.Workloads["idle"].Agent, r.Workloads["idle"].Containerd
	var s strings.Builder
	fmt.Fprintf(&s, "## Agent memory inside the gateway image (QEMU arm64)\n\n")
	fmt.Fprintf(&s, "`make bench-mem` (`go test -tags qemu -run TestBenchMem ./test/qemu/`), %s, commit %s: the\n", r.Date, r.Commit)
	fmt.Fprintf(&s, "`qemu-arm64` image (`make image`: Debian's arm64 kernel %s, containerd, busybox init)\n", r.Kernel)
	fmt.Fprintf(&s, "booted in %s; its agent joins a relay on the host through QEMU's\n", r.Machine)
	fmt.Fprintf(&s, "user network with the token baked into the image, stays connected and idle for %.0f s, then the\n", r.IdleSeconds)
	fmt.Fprintf(&s, "image's memory hook (kernel argument `outpost.memreport=5`) prints `/proc/PID/status` and\n")
	fmt.Fprintf(&s, "`/proc/PID/smaps_rollup` on the serial console. Medians of %d readings 5 s apart", r.Runs*r.Samples)
	if r.Runs > 1 {
		fmt.Fprintf(&s, " over %d boots", r.Runs)
	}
	fmt.Fprintf(&s, "; the run fails only\nabove `build/budget-mem.json`. Machine-readable: `bin/bench-mem.json`.\n\n")
	fmt.Fprintf(&s, "| idle, connected, no pods or devices | agent | budget | goal | KubeEdge edgecore (PEERS.md) |\n|---|---|---|---|---|\n")
	fmt.Fprintf(&s, "| PSS | %s | %s | ≤ 12 MB | 114 MiB |\n", mib(a["Pss"]), budgetFor(b, r.Arch, "Pss"))
	fmt.Fprintf(&s, "| PSS, anonymous | %s | %s | | 21 MiB |\n", mib(a["Pss_Anon"]), budgetFor(b, r.Arch, "Pss_Anon"))
	fmt.Fprintf(&s, "| PSS, file-backed (the binary's pages) | %s | | | |\n", mib(a["Pss_File"]))
	fmt.Fprintf(&s, "| RSS (smaps_rollup) | %s | %s | | |\n", mib(a["Rss"]), budgetFor(b, r.Arch, "Rss"))
	fmt.Fprintf(&s, "| VmRSS (status; lags, see below) | %s | | | |\n\n", mib(a["VmRSS"]))
	fmt.Fprintf(&s, "Every figure is the agent's alone (`outpost-agent run`; the join before it is a separate process).\n")
	fmt.Fprintf(&s, "PSS is close to RSS here: nothing else maps the agent's static binary. `VmRSS` in `/proc/PID/status`\n")
	fmt.Fprintf(&s, "comes from per-thread counters Linux 6.1 folds in lazily, so it reads below smaps_rollup's exact\n")
	fmt.Fprintf(&s, "`Rss`; budgets use smaps_rollup.\n")
	fmt.Fprintf(&s, "containerd, a separate process, measured alongside: PSS %s, RSS %s.\n", mib(c["Pss"]), mib(c["Rss"]))
	fmt.Fprintf(&s, "While idle the agent's anonymous PSS grew by %s KiB a minute (first reading after Ready to the last;\n", joinF(r.PssAnonGrowth))
	fmt.Fprintf(&s, "informational: the Go heap grows to its first GC goal before it levels off, but a leak would show here).\n")
	fmt.Fprintf(&s, "Boot to Ready (QEMU start to the Node's Ready condition, emulated on 2 cores, informational): %s;\n", secs(r.BootToReadySeconds))
	fmt.Fprintf(&s, "the agent's join finished at %s.\n", secs(r.BootToJoinSeconds))
	for _, n := range r.NotMeasured {
		fmt.Fprintf(&s, "\nNot measured yet: %s.\n", n)
	}
	return s.String()
}

// writeDocSection replaces the marked section of path, or appends it.
func writeDocSection(path, section string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	doc := string(data)
	block := docBegin + "\n" + section + docEnd + "\n"
	i, j := strings.Index(doc, docBegin), strings.Index(doc, docEnd)
	if i >= 0 && j > i {
		doc = doc[:i] + block + strings.TrimPrefix(doc[j+len(docEnd):], "\n")
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

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
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
