package nodes_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"outpost.dev/cloud/nodes"
	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
	"outpost.dev/wire"
)

// A Node whose taints changed since the relay last wrote it (the node
// lifecycle controller takes off the not-ready taint every new Node is
// created with; an administrator taints one) is written from a fresh
// read, against a real API server: NodeRestriction refuses the node's
// write of the stale copy as Forbidden ("not allowed to modify taints")
// before the resourceVersion is checked, so it is no conflict, yet the
// cure is the same, and it is not counted as a failed write.
func TestApplyAfterTaintsChanged(t *testing.T) {
	ctx := context.Background()
	ip := stack.StartInProcess(t, ctx, harness.Options{}, 50, 100)
	reg := prometheus.NewRegistry()
	w, err := nodes.NewWriter(nodes.WriterConfig{Client: ip.Client, LeaseDuration: 40 * time.Second, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	const name = "gw-taints"
	as, err := ip.AsNode.For(name)
	if err != nil {
		t.Fatal(err)
	}
	res := wire.Resources{CPUMillis: 1000, MemoryBytes: 1 << 30, Pods: 10}
	rep := &nodes.Report{AgentVersion: "v0.0.0-test", Info: wire.NodeInfo{Arch: "arm64", OS: "linux", Board: "sim", Hostname: name,
		Capacity: res, Allocatable: res}}
	cached, err := w.Apply(ctx, as, name, rep, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.RenewLease(ctx, as, cached, nil); err != nil {
		t.Fatal(err)
	}

	// An administrator's taint, read and written again if the control
	// plane's controllers changed the Node meanwhile.
	maintenance := corev1.Taint{Key: "example.com/maintenance", Effect: corev1.TaintEffectNoSchedule}
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := ip.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Spec.Taints = append(cur.Spec.Taints, maintenance)
		_, err = ip.Client.CoreV1().Nodes().Update(ctx, cur, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// The status refresh a session makes from the Node it holds.
	n, err := w.Apply(ctx, as, name, rep, cached)
	if err != nil {
		t.Fatalf("write from a copy whose taints changed since: %v", err)
	}
	if !slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.MatchTaint(&maintenance) }) {
		t.Errorf("taints after the write %v, want %v kept", n.Spec.Taints, maintenance)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if v := m.GetCounter().GetValue(); mf.GetName() == "outpost_relay_api_write_failures_total" && v != 0 {
				t.Errorf("%v API write failures counted (%v), want none", v, m.GetLabel())
			}
		}
	}
}
