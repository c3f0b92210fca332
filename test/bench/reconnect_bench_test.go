package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
	"outpost.dev/test/wait"
)

// BenchmarkReconnectAfterOutage kills the relay (SIGKILL) under two
// connected agents, keeps it down for OUTPOST_OUTAGE (default 30s), starts
// it again on the same address, and measures, per agent, the time from
// the relay listening (its "relay serving" log line, written as it
// listens) to the agent connected (its "connected" line, after the
// hello-ack): the agent's probe and back-off, its TLS handshake and the
// relay's hello. Both logs are on this machine's clock.
func BenchmarkReconnectAfterOutage(b *testing.B) {
	outage := harness.EnvDuration(b, "OUTPOST_OUTAGE", 30*time.Second)
	ctx := context.Background()
	st, relay := stack.StartWithRelay(b, ctx, stack.Options{})
	var agents []*stack.Agent
	for _, n := range []string{"bench-back-a", "bench-back-b"} {
		a, err := st.Join(ctx, relay, n)
		if err != nil {
			b.Fatal(err)
		}
		a.NoPodNetwork = true
		if err := a.Start(); err != nil {
			b.Fatal(err)
		}
		if err := st.WaitNodeReady(ctx, n, true, 2*time.Minute); err != nil {
			b.Fatal(err)
		}
		agents = append(agents, a)
	}
	var took []float64
	b.ResetTimer()
	for b.Loop() {
		if err := relay.Proc.Kill(); err != nil {
			b.Fatal(err)
		}
		<-relay.Proc.Done()
		for _, a := range agents {
			if err := wait.Until(ctx, time.Minute, func() (bool, string) {
				m, err := stack.Scrape(ctx, "http://"+a.MetricsAddr+"/metrics")
				return err == nil && stack.Sum(m, "outpost_link_connected") == 0, fmt.Sprint(m["outpost_link_connected"], err)
			}); err != nil {
				b.Fatalf("%s: %v", a.Name, err)
			}
		}
		time.Sleep(outage) // the outage itself
		if err := relay.Start(ctx); err != nil {
			b.Fatal(err)
		}
		listening, err := logTime(lastLine(relay.Proc.LogTail(400), `msg="relay serving"`))
		if err != nil {
			b.Fatal(err)
		}
		for _, a := range agents {
			var at time.Time
			if err := wait.Until(ctx, time.Minute, func() (bool, string) {
				t, err := logTime(lastLine(a.Proc.LogTail(200), "msg=connected "))
				at = t
				return err == nil && t.After(listening), fmt.Sprint(t, err)
			}); err != nil {
				b.Fatalf("%s: not connected again: %v", a.Name, err)
			}
			took = append(took, at.Sub(listening).Seconds())
		}
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(median(took), "s-to-reconnect-median")
	b.ReportMetric(took[len(took)-1], "s-to-reconnect-max")
	b.Logf("after a %v outage, agents connected again %v s after the relay listened (sorted)", outage, took)
}

// lastLine is the last line of log containing word ("" if none).
func lastLine(log, word string) string {
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], word) {
			return lines[i]
		}
	}
	return ""
}

// logTime reads the time= field of a log line (log/slog's text format).
func logTime(line string) (time.Time, error) {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "time="); ok {
			return time.Parse(time.RFC3339Nano, v)
		}
	}
	return time.Time{}, fmt.Errorf("no time in log line %q", line)
}
