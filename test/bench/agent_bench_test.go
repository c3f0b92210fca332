package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"outpost.dev/build/sizes"
	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
)

// BenchmarkAgentIdleRSS joins one agent to a real relay and control plane,
// leaves it connected and idle for OUTPOST_IDLE (default 60s), and reports
// its memory from /proc. amd64, the host's kernel.
func BenchmarkAgentIdleRSS(b *testing.B) {
	idle := harness.EnvDuration(b, "OUTPOST_IDLE", 60*time.Second)
	ctx := context.Background()
	st, agent, proxy := startIdleAgent(b, ctx, "bench-idle")
	up0, down0 := proxy.Up.Load(), proxy.Down.Load()
	b.ResetTimer()
	for b.Loop() {
		time.Sleep(idle)
	}
	b.StopTimer()
	up, down := proxy.Up.Load()-up0, proxy.Down.Load()-down0
	m, err := ReadMem(agent.Proc.Pid())
	if err != nil {
		b.Fatal(err)
	}
	if s, _ := st.NodeReady(ctx, "bench-idle"); s != "True" {
		b.Fatalf("node not Ready after %v idle: %q", idle, s)
	}
	b.ReportMetric(float64(m.RSS)/1024, "RSS-MiB")
	b.ReportMetric(float64(m.PSS)/1024, "PSS-MiB")
	b.ReportMetric(float64(m.Anon)/1024, "anon-MiB")
	b.ReportMetric(float64(up+down)/idle.Seconds(), "link-B/s")
	b.Logf("idle link: %d bytes up, %d down in %v (TLS and WebSocket framing included)", up, down, idle)
	b.Logf("agent pid %s after %v connected and idle: VmRSS %d KiB, Pss %d KiB, RssAnon %d KiB, Pss_Anon %d KiB",
		strconv.Itoa(agent.Proc.Pid()), idle, m.RSS, m.PSS, m.Anon, m.PSSAnon)
}

// startIdleAgent joins agent name to a real relay and control plane
// through a byte-counting proxy and returns once its Node is Ready and
// the link has been quiet for a second (past the hello and first status).
func startIdleAgent(b *testing.B, ctx context.Context, name string) (*stack.Stack, *stack.Agent, *stack.Proxy) {
	st, relay := stack.StartWithRelay(b, ctx, stack.Options{})
	agent, err := st.Join(ctx, relay, name)
	if err != nil {
		b.Fatal(err)
	}
	proxy, err := stack.NewProxy(relay.Addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { proxy.Close() })
	if err := agent.Start("--server", "https://"+proxy.Addr); err != nil {
		b.Fatal(err)
	}
	if err := st.WaitNodeReady(ctx, name, true, 2*time.Minute); err != nil {
		b.Fatal(err)
	}
	if err := proxy.Quiet(ctx, time.Second, time.Minute); err != nil {
		b.Fatal(err)
	}
	return st, agent, proxy
}

// BenchmarkAgentIdlePages starts the agent as BenchmarkAgentIdleRSS does,
// clears its pages' referenced bits once it is connected and quiet, and
// after OUTPOST_IDLE (default 60s) reports which pages of its binary
// (the unstripped test build) are resident, by section and by package
// (build/sizes.ReadResident), and how much of each mapping it referenced
// while idle. amd64, the host's kernel.
func BenchmarkAgentIdlePages(b *testing.B) {
	idle := harness.EnvDuration(b, "OUTPOST_IDLE", 60*time.Second)
	ctx := context.Background()
	st, agent, _ := startIdleAgent(b, ctx, "bench-pages")
	pid := agent.Proc.Pid()
	exe := filepath.Join(st.BinDir, "outpost-agent")
	start, err := sizes.ReadResident(pid, exe)
	if err != nil {
		b.Fatal(err)
	}
	if err := sizes.ClearRefs(pid); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		time.Sleep(idle)
	}
	b.StopTimer()
	r, err := sizes.ReadResident(pid, exe)
	if err != nil {
		b.Fatal(err)
	}
	if s, _ := st.NodeReady(ctx, "bench-pages"); s != "True" {
		b.Fatalf("node not Ready after %v idle: %q", idle, s)
	}
	m, err := ReadMem(pid)
	if err != nil {
		b.Fatal(err)
	}
	var file, ref, refText int64
	for _, mp := range r.Mappings {
		file += mp.Rss - mp.Anonymous
		ref += mp.Referenced
		if mp.Perms[2] == 'x' {
			refText = mp.Referenced
		}
	}
	b.ReportMetric(float64(r.Total())/(1<<20), "binary-resident-MiB")
	b.ReportMetric(float64(ref)/(1<<20), "idle-referenced-MiB")
	b.ReportMetric(float64(refText)/(1<<20), "idle-referenced-text-MiB")
	b.ReportMetric(float64(m.PSS)/1024, "PSS-MiB")
	b.ReportMetric(float64(m.Anon)/1024, "anon-MiB")
	b.Logf("agent pid %d: Pss %d KiB, RssAnon %d KiB; its binary's mappings: %d KiB file-backed resident; "+
		"sections resident %d KiB when it went quiet, %d KiB after %v idle",
		pid, m.PSS, m.Anon, file>>10, start.Total()>>10, r.Total()>>10, idle)
	inits, err := sizes.InitTrace(ctx, exe, "--help")
	if err != nil {
		b.Fatal(err)
	}
	var initBytes int64
	for _, in := range inits {
		initBytes += in.Bytes
	}
	b.ReportMetric(float64(initBytes)/1024, "init-alloc-KiB")
	// Printed, not logged: a benchmark's log is cut to ten lines.
	fmt.Printf("\nResident pages of %s after %v connected and idle (KiB):\n\n%s\n"+
		"What its package inits allocate (GODEBUG=inittrace=1):\n\n%s\n", exe, idle, r.Markdown(40), sizes.InitMarkdown(inits, 15))
}
