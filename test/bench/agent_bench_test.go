package bench

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"outpost.dev/test/stack"
)

// BenchmarkAgentIdleRSS joins one agent to a real relay and control plane,
// leaves it connected and idle for OUTPOST_IDLE (default 60s), and reports
// its memory from /proc. amd64, the host's kernel.
func BenchmarkAgentIdleRSS(b *testing.B) {
	idle := 60 * time.Second
	if v := os.Getenv("OUTPOST_IDLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatal(err)
		}
		idle = d
	}
	ctx := context.Background()
	st, err := stack.Start(ctx, stack.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Stop()
	relay, err := st.StartRelay(ctx)
	if err != nil {
		b.Fatal(err)
	}
	agent, err := st.Join(ctx, relay, "bench-idle")
	if err != nil {
		b.Fatal(err)
	}
	if err := agent.Start(); err != nil {
		b.Fatal(err)
	}
	if err := st.WaitNodeReady(ctx, "bench-idle", true, 2*time.Minute); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		time.Sleep(idle)
	}
	b.StopTimer()
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
	b.Logf("agent pid %s after %v connected and idle: VmRSS %d KiB, Pss %d KiB, RssAnon %d KiB, Pss_Anon %d KiB",
		strconv.Itoa(agent.Proc.Pid()), idle, m.RSS, m.PSS, m.Anon, m.PSSAnon)
}
