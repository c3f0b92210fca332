// Package deploy tests the relay as users deploy it: every manifest of
// cloud/deploy against a real API server's validation and admission, and
// the relay's container image (build/relayimage) run by containerd, serving
// a real agent until its Node is Ready.
package deploy

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"testing"

	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
)

// st is the control plane (with the relay's RBAC from cloud/deploy
// applied), and containerd and the registry when they can run here.
var st *stack.Stack

// noContainerd is why containerd cannot run here; TestImage then skips,
// or fails under CI=true (harness.RequireContainerd).
var noContainerd error

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	noContainerd = errors.Join(harness.ContainerdMissing(), harness.BusyboxMissing())
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := stack.Start(context.Background(), stack.Options{Log: log, Containerd: noContainerd == nil})
	if err != nil {
		// A control plane that does not start is a failure, never a skip.
		fmt.Fprintf(os.Stderr, "deploy: start the stack: %v\n", err)
		return 1
	}
	defer s.Stop()
	st = s
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "deploy: logs are in %s/logs and %s/controlplane/logs\n", s.Dir, s.Dir)
	}
	return code
}

// need skips t in -short mode: these tests need the control plane.
func need(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test; runs without -short")
	}
}
