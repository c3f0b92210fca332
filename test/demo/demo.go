// Package demo is what `make demo` runs: a local Kubernetes control plane,
// the relay with its least-privilege RBAC, containerd and a registry on
// loopback, metrics-server, one agent on the simulated board joined with
// a bootstrap token, and the sample in sample.yaml (a Deployment and a
// BME280 Device) on it.
package demo

import (
	"context"
	_ "embed"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"outpost.dev/test/stack"
)

//go:embed sample.yaml
var sampleYAML string

// Sample is the demo's workload for node, its containers running image: a
// Deployment that logs a line every few seconds and a BME280 on the
// simulated board's I2C1 bus.
func Sample(node, image string) string {
	return strings.NewReplacer("{{NODE}}", node, "{{IMAGE}}", image).Replace(sampleYAML)
}

// Run starts everything in dir (a new directory under /tmp if empty)
// with the binaries in bin (built if empty), prints how to reach it and
// runs until ctx ends or the agent or relay exits; then it stops
// everything it started.
func Run(ctx context.Context, bin, dir, node string) error {
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
	st, err := stack.Start(ctx, stack.Options{Dir: dir, Log: log, BinDir: bin, Containerd: true, MetricsServer: true})
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
	step("deploying a sample Deployment and a BME280 Device on " + node)
	manifest := filepath.Join(dir, "sample.yaml")
	if err := os.WriteFile(manifest, []byte(Sample(node, st.Images[0].Ref)), 0o644); err != nil {
		return err
	}
	if out, err := st.CP.Kubectl(ctx, "apply", "-f", manifest); err != nil {
		return fmt.Errorf("apply the sample: %v\n%s", err, out)
	}
	if out, err := st.CP.Kubectl(ctx, "wait", "--for=condition=Ready", "pod", "-l", "app=hello", "--timeout=120s"); err != nil {
		return fmt.Errorf("the sample pod did not become Ready: %v\n%s\nagent log:\n%s", err, out, agent.Proc.LogTail(20))
	}
	if out, err := st.CP.Kubectl(ctx, "wait", "--for=jsonpath={.status.reported.temperature.value}", "device/bme280-demo", "--timeout=60s"); err != nil {
		return fmt.Errorf("the sample device reported nothing: %v\n%s", err, out)
	}
	var shown string
	for _, args := range [][]string{
		{"get", "nodes", "-o", "wide"},
		{"get", "pods", "-o", "wide"},
		{"get", "devices"},
		{"logs", "deploy/hello", "--tail=3"},
	} {
		out, err := st.CP.Kubectl(ctx, args...)
		if err != nil {
			return fmt.Errorf("kubectl %v: %v\n%s", args, err, out)
		}
		shown += "$ kubectl " + strings.Join(args, " ") + "\n" + out + "\n"
	}
	kubectl := filepath.Join(st.CP.BinDir, "kubectl")
	fmt.Printf(`
Outpost is running.

  kubeconfig: %s
  kubectl:    %s
  relay:      %s
  MQTT:       %s (the agent's embedded broker)
  sample:     %s
  logs:       %s/logs  (control plane: %s/logs)

%s
Try:
  export KUBECONFIG=%s
  %s get devices -w
  %s logs -f deploy/hello
  %s exec -it deploy/hello -- sh
  %s top pod            (metrics-server needs a minute for its first figures)
  %s get device bme280-demo -o yaml
  mosquitto_sub -h %s -p %s -t 'outpost/#' -v

Ctrl-C stops everything.
`, st.CP.Kubeconfig, kubectl, relay.URL, agent.MQTTAddr, manifest, dir, st.CP.Dir, shown,
		st.CP.Kubeconfig, kubectl, kubectl, kubectl, kubectl, kubectl, hostOf(agent.MQTTAddr), portOf(agent.MQTTAddr))

	select {
	case <-ctx.Done():
	case <-agent.Proc.Done():
		return fmt.Errorf("the agent exited:\n%s", agent.Proc.LogTail(20))
	case <-relay.Proc.Done():
		return fmt.Errorf("the relay exited:\n%s", relay.Proc.LogTail(20))
	}
	return nil
}

func hostOf(addr string) string {
	h, _, _ := strings.Cut(addr, ":")
	return h
}

func portOf(addr string) string {
	_, p, _ := strings.Cut(addr, ":")
	return p
}
