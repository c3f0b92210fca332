package stack

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"outpost.dev/test/harness"
	"outpost.dev/test/wait"
)

// MainOptions configures RunMain.
type MainOptions struct {
	// Name prefixes RunMain's messages (the test package's name).
	Name string
	// Stack is passed to Start; a nil Log logs warnings to stderr.
	Stack Options
	// RelayFlags are passed to StartRelay.
	RelayFlags []string
	// Ready runs once the stack and relay are up, before the tests: it
	// stores them for the tests and may join and start agents.
	Ready func(ctx context.Context, s *Stack, r *Relay) error
}

// missing is why containerd cannot run here; set by RunMain outside CI.
var missing error

// RunMain is the body of TestMain for end-to-end test packages; it returns
// the exit code. In -short mode the tests run and skip (see Need). When the
// stack needs containerd and it cannot run here, the tests skip naming what
// is missing, except under CI=true, where that is a failure. A stack that
// fails to start is always a failure, never a skip. When a test failed it
// says where the logs are, and under CI=true prints the relay's and the
// agents' last lines.
func RunMain(m *testing.M, o MainOptions) int {
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	if o.Stack.Containerd {
		if err := errors.Join(harness.ContainerdMissing(), harness.BusyboxMissing()); err != nil {
			if os.Getenv("CI") == "true" {
				fmt.Fprintf(os.Stderr, "%s: CI=true: %v\n", o.Name, err)
				return 1
			}
			missing = err
			return m.Run()
		}
	}
	ctx := context.Background()
	if o.Stack.Log == nil {
		o.Stack.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	s, err := Start(ctx, o.Stack)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: start the stack: %v\n", o.Name, err)
		return 1
	}
	defer s.Stop()
	r, err := s.StartRelay(ctx, o.RelayFlags...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: start the relay: %v\n", o.Name, err)
		return 1
	}
	code := 1
	if o.Ready != nil {
		err = o.Ready(ctx, s, r)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", o.Name, err)
	} else {
		code = m.Run()
	}
	if code != 0 {
		fmt.Fprintf(os.Stderr, "%s: logs are in %s/logs and %s/controlplane/logs\n", o.Name, s.Dir, s.Dir)
		if os.Getenv("CI") == "true" {
			s.dumpLogs()
		}
	}
	return code
}

// Need skips t in -short mode, and when RunMain found that containerd
// cannot run here (never under CI=true: RunMain fails instead).
func Need(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test; runs without -short")
	}
	if missing != nil {
		t.Skip(missing)
	}
}

// dumpLogs prints the last lines of every relay's and agent's log.
func (s *Stack) dumpLogs() {
	for _, r := range s.relays {
		if r.Proc != nil {
			fmt.Fprintf(os.Stderr, "--- relay %s\n%s\n", r.Addr, r.Proc.LogTail(80))
		}
	}
	for _, a := range s.agents {
		if a.Proc != nil {
			fmt.Fprintf(os.Stderr, "--- agent %s\n%s\n", a.Name, a.Proc.LogTail(60))
		}
	}
}

// StartWithRelay starts a stack with opts and one relay with relayFlags,
// for a test or benchmark with a stack of its own; it fails tb if either
// does not start, and the stack stops when tb ends.
func StartWithRelay(tb testing.TB, ctx context.Context, opts Options, relayFlags ...string) (*Stack, *Relay) {
	tb.Helper()
	s, err := Start(ctx, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Stop)
	r, err := s.StartRelay(ctx, relayFlags...)
	if err != nil {
		tb.Fatal(err)
	}
	return s, r
}

// Context is a context that ends after d or when t ends.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Kubectl runs the pinned kubectl as the cluster admin and fails t on error.
func (s *Stack) Kubectl(t testing.TB, ctx context.Context, args ...string) string {
	t.Helper()
	out, err := s.CP.Kubectl(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Apply pipes manifest into kubectl apply -f - and fails t on error.
func (s *Stack) Apply(t testing.TB, ctx context.Context, manifest string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, filepath.Join(s.CP.BinDir, "kubectl"), "--kubeconfig="+s.CP.Kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s\n%s", err, out, manifest)
	}
}

// WaitFor is wait.State: it polls cond until it holds; after timeout, or when
// ctx ends, it fails t naming what it waited for and cond's last word.
func WaitFor(t testing.TB, ctx context.Context, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	wait.State(t, ctx, timeout, what, cond)
}
