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

	"outpost.dev/cloud/asnode"
	"outpost.dev/cloud/nodes"
	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
	"outpost.dev/wire"
)

// startWriter starts a real control plane and a node writer on it
// (counting into reg), and returns the client acting as node name and a
// report of that node.
func startWriter(t *testing.T, ctx context.Context, name string) (*stack.InProcess, *nodes.Writer, *prometheus.Registry, asnode.Client, *nodes.Report) {
	t.Helper()
	ip := stack.StartInProcess(t, ctx, harness.Options{}, 50, 100)
	reg := prometheus.NewRegistry()
	w, err := nodes.NewWriter(nodes.WriterConfig{Client: ip.Client, LeaseDuration: 40 * time.Second, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	as, err := ip.AsNode.For(name)
	if err != nil {
		t.Fatal(err)
	}
	res := wire.Resources{CPUMillis: 1000, MemoryBytes: 1 << 30, Pods: 10}
	rep := &nodes.Report{AgentVersion: "v0.0.0-test", Info: wire.NodeInfo{Arch: "arm64", OS: "linux", Board: "sim", Hostname: name,
		Capacity: res, Allocatable: res}}
	return ip, w, reg, as, rep
}

// A Node whose taints changed since the relay last wrote it (the node
// lifecycle controller takes off the not-ready taint every new Node is
// created with; an administrator taints one) is written from a fresh
// read, against a real API server: NodeRestriction refuses the node's
// write of the stale copy as Forbidden ("not allowed to modify taints")
// before the resourceVersion is checked, so it is no conflict, yet the
// cure is the same, and it is not counted as a failed write.
func TestApplyAfterTaintsChanged(t *testing.T) {
	ctx := context.Background()
	const name = "gw-taints"
	ip, w, reg, as, rep := startWriter(t, ctx, name)
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
	noWriteFailures(t, reg)
}

// A session keeps of the Node and Lease it wrote only what its next write
// needs (no managedFields, a status cut to what Status carries over):
// writing from those copies, against a real API server, keeps the
// managedFields, the labels and annotations others set and the
// conditions' transition times, and counts no failure.
func TestWriteFromKeptCopies(t *testing.T) {
	ctx := context.Background()
	const name = "gw-kept"
	ip, w, reg, as, rep := startWriter(t, ctx, name)
	rep.Link = &wire.LinkStats{OutboxReports: 3, At: 1}
	if _, err := w.Apply(ctx, as, name, rep, nil); err != nil {
		t.Fatal(err)
	}
	// An administrator's label and annotation; then the copy a session
	// holds, from a fresh read, as after a conflict.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := ip.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Labels["example.com/site"] = "north"
		if cur.Annotations == nil {
			cur.Annotations = map[string]string{}
		}
		cur.Annotations["example.com/note"] = "kept"
		_, err = ip.Client.CoreV1().Nodes().Update(ctx, cur, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	full, err := ip.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kept := nodes.KeptNode(full)
	if len(kept.ManagedFields) != 0 || len(kept.Status.Capacity) != 0 || kept.Status.NodeInfo.KubeletVersion != "" {
		t.Fatalf("kept copy still holds managedFields, capacity or node info: %+v", kept)
	}
	if len(full.ManagedFields) == 0 || len(full.Status.Capacity) == 0 {
		t.Fatal("keptNode changed the Node it was given")
	}

	// A hello (no link figures) from the kept copy: OutboxHealthy and
	// every transition time carry over.
	hello := *rep
	hello.Link = nil
	n, err := w.Apply(ctx, as, name, &hello, kept)
	if err != nil {
		t.Fatalf("write from the kept copy: %v", err)
	}
	if n.Labels["example.com/site"] != "north" || n.Annotations["example.com/note"] != "kept" {
		t.Errorf("labels %v, annotations %v: the administrator's lost", n.Labels, n.Annotations)
	}
	managers := func(mf []metav1.ManagedFieldsEntry) (out []string) {
		for _, e := range mf {
			out = append(out, e.Manager+"/"+e.Subresource)
		}
		return out
	}
	// Every manager stays (a controller's write meanwhile may add one).
	allKept := func(got, was []string) bool {
		for _, m := range was {
			if !slices.Contains(got, m) {
				return false
			}
		}
		return true
	}
	if got, was := managers(n.ManagedFields), managers(full.ManagedFields); !allKept(got, was) {
		t.Errorf("managedFields managers after the write %v, before %v", got, was)
	}
	for _, c := range full.Status.Conditions {
		i := slices.IndexFunc(n.Status.Conditions, func(d corev1.NodeCondition) bool { return d.Type == c.Type })
		if i < 0 {
			t.Errorf("condition %s lost", c.Type)
			continue
		}
		d := n.Status.Conditions[i]
		if d.Status == c.Status && !d.LastTransitionTime.Equal(&c.LastTransitionTime) {
			t.Errorf("condition %s: transition time %v, want %v kept", c.Type, d.LastTransitionTime, c.LastTransitionTime)
		}
		if c.Type == nodes.ConditionOutboxHealthy && d.Message != c.Message {
			t.Errorf("OutboxHealthy message %q, want %q kept from the stored Node", d.Message, c.Message)
		}
	}

	l, err := w.RenewLease(ctx, as, n, nil)
	if err != nil {
		t.Fatal(err)
	}
	kl := nodes.KeptLease(l)
	if len(kl.ManagedFields) != 0 || len(l.ManagedFields) == 0 {
		t.Fatalf("kept Lease managedFields %d, written Lease's %d", len(kl.ManagedFields), len(l.ManagedFields))
	}
	l2, err := w.RenewLease(ctx, as, n, kl)
	if err != nil {
		t.Fatalf("renew from the kept Lease: %v", err)
	}
	if got, was := managers(l2.ManagedFields), managers(l.ManagedFields); !allKept(got, was) {
		t.Errorf("Lease managedFields managers after the renewal %v, before %v", got, was)
	}
	noWriteFailures(t, reg)
}

// noWriteFailures fails t if reg counted any failed API write.
func noWriteFailures(t *testing.T, reg *prometheus.Registry) {
	t.Helper()
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
