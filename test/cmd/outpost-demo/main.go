// Command outpost-demo runs Outpost on one machine: a local Kubernetes
// control plane, the relay with its least-privilege RBAC, and one agent on
// the simulated board joined with a bootstrap token. It prints how to reach
// the cluster and runs until interrupted; then it stops everything it
// started. `make demo` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"outpost.dev/test/stack"
)

func main() {
	bin := flag.String("bin", "", "directory holding outpost-agent and outpost-relay (built if empty)")
	dir := flag.String("dir", "", "directory for state and logs (a new one under /tmp if empty)")
	node := flag.String("node", "demo-edge", "name of the demo's edge node")
	flag.Parse()
	if err := run(*bin, *dir, *node); err != nil {
		fmt.Fprintf(os.Stderr, "outpost-demo: %v\n", err)
		os.Exit(1)
	}
}

func run(bin, dir, node string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "outpost-demo-"); err != nil {
			return err
		}
	}
	if bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			return err
		}
		bin = abs
	}
	step := func(s string) { fmt.Fprintf(os.Stderr, "==> %s\n", s) }

	step("starting the Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)")
	st, err := stack.Start(ctx, stack.Options{Dir: dir, Log: log, BinDir: bin})
	if err != nil {
		return err
	}
	defer func() {
		step("stopping everything")
		st.Stop()
		fmt.Fprintf(os.Stderr, "==> stopped; logs stay in %s/logs\n", dir)
	}()

	step("starting the relay")
	relay, err := st.StartRelay(ctx)
	if err != nil {
		return err
	}
	step("joining agent " + node + " with a bootstrap token")
	agent, err := st.Join(ctx, relay, node)
	if err != nil {
		return err
	}
	if err := agent.Start(); err != nil {
		return err
	}
	if err := st.WaitNodeReady(ctx, node, true, 2*time.Minute); err != nil {
		return fmt.Errorf("%v\nagent log:\n%s", err, agent.Proc.LogTail(20))
	}
	out, err := st.CP.Kubectl(ctx, "get", "nodes", "-o", "wide")
	if err != nil {
		return err
	}
	kubectl := filepath.Join(st.CP.BinDir, "kubectl")
	fmt.Printf(`
Outpost is running.

  kubeconfig: %s
  kubectl:    %s
  relay:      %s
  logs:       %s/logs  (control plane: %s/logs)

%s
Try:
  export KUBECONFIG=%s
  %s get nodes -o wide

Ctrl-C stops everything.
`, st.CP.Kubeconfig, kubectl, relay.URL, dir, st.CP.Dir, out, st.CP.Kubeconfig, kubectl)

	select {
	case <-ctx.Done():
	case <-agent.Proc.Done():
		return fmt.Errorf("the agent exited:\n%s", agent.Proc.LogTail(20))
	case <-relay.Proc.Done():
		return fmt.Errorf("the relay exited:\n%s", relay.Proc.LogTail(20))
	}
	return nil
}
