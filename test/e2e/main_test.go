// Package e2e tests Outpost end to end: a real kube-apiserver, controller
// manager and scheduler, the real relay and agent binaries, real kubectl.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
)

// Shortened so that a lost agent shows within a test's patience.
const (
	gracePeriod       = 16 * time.Second
	heartbeatInterval = 2 * time.Second
	leaseDuration     = 8 * time.Second
)

var (
	st    *stack.Stack
	relay *stack.Relay
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // every test here skips in -short mode
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx := context.Background()
	var err error
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	st, err = stack.Start(ctx, stack.Options{
		Log:               log,
		ControlPlane:      harness.Options{NodeMonitorGracePeriod: gracePeriod},
		HeartbeatInterval: heartbeatInterval,
		LeaseDuration:     leaseDuration,
	})
	if err != nil {
		// Never a skip: a missing component is a failure, here and in CI.
		fmt.Fprintf(os.Stderr, "e2e: start the stack: %v\n", err)
		return 1
	}
	defer st.Stop()
	if relay, err = st.StartRelay(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: start the relay: %v\n", err)
		return 1
	}
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "e2e: logs are in %s/logs and %s/controlplane/logs\n", st.Dir, st.Dir)
		if os.Getenv("CI") == "true" {
			dumpLogs()
		}
	}
	return code
}

func dumpLogs() {
	for _, p := range []*harness.Process{relay.Proc} {
		if p != nil {
			fmt.Fprintf(os.Stderr, "--- %s\n%s\n", p.Name, p.LogTail(80))
		}
	}
	for _, a := range agents {
		if a.Proc != nil {
			fmt.Fprintf(os.Stderr, "--- %s\n%s\n", a.Proc.Name, a.Proc.LogTail(40))
		}
	}
}

func needStack(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test; runs without -short")
	}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
