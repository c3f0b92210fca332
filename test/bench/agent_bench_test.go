package bench

import (
	"context"
	"strconv"
	"testing"
	"time"

	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
)

// BenchmarkAgentIdleRSS joins one agent to a real relay and control plane,
// leaves it connected and idle for OUTPOST_IDLE (default 60s), and reports
// its memory from /proc. amd64, the host's kernel.
func BenchmarkAgentIdleRSS(b *testing.B) {
	idle := harness.EnvDuration(b, "OUTPOST_IDLE", 60*time.Second)
	ctx := context.Background()
	st, relay := stack.StartWithRelay(b, ctx, stack.Options{})
	agent, err := st.Join(ctx, relay, "bench-idle")
	if err != nil {
		b.Fatal(err)
	}
	// Through a counting proxy, to measure what the idle link costs.
	proxy, err := stack.NewProxy(relay.Addr)
	if err != nil {
		b.Fatal(err)
	}
	defer proxy.Close()
	if err := agent.Start("--server", "https://"+proxy.Addr); err != nil {
		b.Fatal(err)
	}
	if err := st.WaitNodeReady(ctx, "bench-idle", true, 2*time.Minute); err != nil {
		b.Fatal(err)
	}
	// Past the hello and first status.
	if err := proxy.Quiet(ctx, time.Second, time.Minute); err != nil {
		b.Fatal(err)
	}
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
