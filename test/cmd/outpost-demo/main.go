// Command outpost-demo runs Outpost on one machine: a local Kubernetes
// control plane, the relay with its least-privilege RBAC, containerd and a
// registry on loopback, one agent on the simulated board joined with a
// bootstrap token, and a sample Deployment and BME280 Device on it. It
// prints how to reach all of it and runs until interrupted; then it stops
// everything it started. `make demo` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
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
	if err := os.WriteFile(manifest, []byte(sample(node, st.Images[0].Ref)), 0o644); err != nil {
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

// sample is the demo's workload: a Deployment that logs a line every few
// seconds and a BME280 on the simulated board's I2C1 bus.
func sample(node, image string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
  namespace: default
spec:
  replicas: 1
  selector:
    matchLabels: {app: hello}
  template:
    metadata:
      labels: {app: hello}
    spec:
      nodeSelector:
        kubernetes.io/hostname: %[1]s
      containers:
        - name: hello
          image: %[2]s
          command: ["sh", "-c", "i=0; while true; do echo hello from the edge, line $i; i=$((i+1)); sleep 5; done"]
---
apiVersion: outpost.dev/v1alpha1
kind: Device
metadata:
  name: bme280-demo
  namespace: default
spec:
  nodeName: %[1]s
  driver: bme280
  connection: {bus: I2C1, address: "0x76"}
  properties:
    - {name: temperature, type: float, unit: "°C", pollInterval: 1s, reportInterval: 5s, deadband: 0.05}
    - {name: humidity, type: float, unit: "%%RH", pollInterval: 1s, reportInterval: 5s}
    - {name: pressure, type: float, unit: hPa, pollInterval: 1s, reportInterval: 5s}
`, node, image)
}

func hostOf(addr string) string {
	h, _, _ := strings.Cut(addr, ":")
	return h
}

func portOf(addr string) string {
	_, p, _ := strings.Cut(addr, ":")
	return p
}
