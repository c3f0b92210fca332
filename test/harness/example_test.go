package harness_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/test/harness"
)

// A control plane for an end-to-end test of a lost edge link: nodes go
// NotReady 15s after their last heartbeat and their pods are evicted 30s
// later.
func ExampleStartControlPlane() {
	ctx := context.Background()
	cp, err := harness.StartControlPlane(ctx, harness.Options{
		Log:                    slog.New(slog.NewTextHandler(os.Stderr, nil)),
		NodeMonitorGracePeriod: 15 * time.Second,
		EvictionToleration:     30 * time.Second,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer cp.Stop()

	// The relay gets an identity of its own, with only what RBAC grants it.
	relayKubeconfig, err := cp.NewKubeconfig("relay", "system:outpost-relay")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	fmt.Println("relay kubeconfig:", relayKubeconfig)
	fmt.Println("calls from the API server to kubelets present", cp.PKI.KubeletClientCert)

	nodes, err := cp.Client().CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	fmt.Println(len(nodes.Items), "nodes")

	out, err := cp.Kubectl(ctx, "get", "namespaces")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	fmt.Print(out)
}

// A relay or agent under test runs as a Process: its own log file and
// process group, killed with the test process.
func ExampleStartProcess() {
	port, err := harness.FreePort()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	dir, err := os.MkdirTemp("", "relay-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command("relay", fmt.Sprintf("--listen=127.0.0.1:%d", port))
	relay, err := harness.StartProcess("relay", cmd, dir+"/relay.log")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	// … test the relay; crash it with relay.Kill() …
	if err := relay.Stop(10 * time.Second); err != nil {
		fmt.Fprintln(os.Stderr, err, relay.LogTail(20))
	}
}
