package nodes_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"outpost.dev/cloud/asnode"
	"outpost.dev/cloud/nodes"
	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

// startWriter starts a real control plane and a node writer on it
// (counting into reg), and returns the client acting as node name and a
// report of that node.
// startWriter starts a control plane and a Writer acting with the
// relay's shipped RBAC (cloud/deploy), so a verb the relay lacks fails
// these tests; ip.Client, the admin's, sets the scene.
func startWriter(t *testing.T, ctx context.Context, name string) (*stack.InProcess, *nodes.Writer, *prometheus.Registry, asnode.Client, *nodes.Report) {
	t.Helper()
	ip := stack.StartInProcess(t, ctx, harness.Options{}, 50, 100)
	ip.UseRelayRBAC(t, ctx)
	w, reg := newWriter(t, ip, 40*time.Second)
	return ip, w, reg, asNode(t, ip, name), report(name)
}

func newWriter(t testing.TB, ip *stack.InProcess, lease time.Duration) (*nodes.Writer, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	w, err := nodes.NewWriter(nodes.WriterConfig{Client: ip.Relay, LeaseDuration: lease, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return w, reg
}

// asNode acts as node name the way the relay does (ip.AsNode), allowed
// to as an administrator allows it.
func asNode(t testing.TB, ip *stack.InProcess, name string) asnode.Client {
	t.Helper()
	ip.AllowNode(t, context.Background(), name)
	as, err := ip.AsNode.For(name)
	if err != nil {
		t.Fatal(err)
	}
	return as
}

func report(name string) *nodes.Report {
	res := wire.Resources{CPUMillis: 1000, MemoryBytes: 1 << 30, Pods: 10}
	return &nodes.Report{AgentVersion: "v0.0.0-test", Info: wire.NodeInfo{Arch: "arm64", OS: "linux", Board: "sim", Hostname: name,
		Capacity: res, Allocatable: res}}
}

// The status writes against a real API server, one control plane for
// all: each case has a Node of its own.
func TestStatusPatch(t *testing.T) {
	ctx := context.Background()
	ip, w, reg, _, _ := startWriter(t, ctx, "gw-unused")
	t.Run("TaintsChanged", func(t *testing.T) { testApplyAfterTaintsChanged(t, ctx, ip, w) })
	t.Run("KeepsOthers", func(t *testing.T) { testPatchKeepsOthers(t, ctx, ip, w) })
	t.Run("LeasePatch", func(t *testing.T) { testLeasePatch(t, ctx, ip, w) })
	t.Run("Addresses", func(t *testing.T) { testAddresses(t, ctx, ip, w) })
	t.Run("Recreated", func(t *testing.T) { testRecreated(t, ctx, ip, w) })
	t.Run("NewNodeNoRefusals", func(t *testing.T) { testNewNodeNoRefusals(t, ctx, ip, w) })
	t.Run("NewerConnection", func(t *testing.T) { testNewerConnection(t, ctx, ip, w) })
	t.Run("UnknownBecomesReady", func(t *testing.T) { testUnknownBecomesReady(t, ctx, ip) })
	noWriteFailures(t, reg)
}

// update changes Node name as an administrator would, from a fresh read,
// again if the control plane's controllers changed it meanwhile.
func update(t *testing.T, ctx context.Context, c kubernetes.Interface, name string, status bool, change func(*corev1.Node)) {
	t.Helper()
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := c.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		change(cur)
		if status {
			_, err = c.CoreV1().Nodes().UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		} else {
			_, err = c.CoreV1().Nodes().Update(ctx, cur, metav1.UpdateOptions{})
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func getNode(t *testing.T, ctx context.Context, c kubernetes.Interface, name string) *corev1.Node {
	t.Helper()
	n, err := c.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func cond(n *corev1.Node, typ corev1.NodeConditionType) (corev1.NodeCondition, bool) {
	i := slices.IndexFunc(n.Status.Conditions, func(c corev1.NodeCondition) bool { return c.Type == typ })
	if i < 0 {
		return corev1.NodeCondition{}, false
	}
	return n.Status.Conditions[i], true
}

// A Node whose taints changed since the relay last wrote it (the node
// lifecycle controller takes off the not-ready taint every new Node is
// created with; an administrator taints one) gets its status written
// all the same: the patch carries no spec, so NodeRestriction, which
// refuses a node's write that changes its taints, has nothing to refuse,
// and the taints stay.
func testApplyAfterTaintsChanged(t *testing.T, ctx context.Context, ip *stack.InProcess, w *nodes.Writer) {
	const name = "gw-taints"
	as, rep := asNode(t, ip, name), report(name)
	last, err := w.Apply(ctx, as, name, rep, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.RenewLease(ctx, as, last); err != nil {
		t.Fatal(err)
	}
	maintenance := corev1.Taint{Key: "example.com/maintenance", Effect: corev1.TaintEffectNoSchedule}
	update(t, ctx, ip.Client, name, false, func(n *corev1.Node) { n.Spec.Taints = append(n.Spec.Taints, maintenance) })

	// The status refresh a session makes from the Node it last wrote.
	n, err := w.Apply(ctx, as, name, rep, last)
	if err != nil {
		t.Fatalf("write after the taints changed: %v", err)
	}
	if !slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.MatchTaint(&maintenance) }) {
		t.Errorf("taints after the write %v, want %v kept", n.Spec.Taints, maintenance)
	}
}

// A status write keeps what others wrote: labels, annotations, a
// condition of another type, managedFields, and the transition times of
// conditions whose status it does not change; a hello (no link figures)
// keeps OutboxHealthy as the last node status wrote it; a resource no
// longer reported goes.
func testPatchKeepsOthers(t *testing.T, ctx context.Context, ip *stack.InProcess, w *nodes.Writer) {
	const name = "gw-kept"
	as, rep := asNode(t, ip, name), report(name)
	rep.Link = &wire.LinkStats{OutboxReports: 3, At: 1}
	rep.Info.Capacity.EphemeralStorage = 8 << 30
	last, err := w.Apply(ctx, as, name, rep, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := last.Status.Capacity[corev1.ResourceEphemeralStorage]; !ok {
		t.Fatalf("capacity %v: no ephemeral storage", last.Status.Capacity)
	}
	update(t, ctx, ip.Client, name, false, func(n *corev1.Node) {
		n.Labels["example.com/site"] = "north"
		if n.Annotations == nil {
			n.Annotations = map[string]string{}
		}
		n.Annotations["example.com/note"] = "kept"
	})
	firmware := corev1.NodeCondition{Type: "example.com/FirmwareCurrent", Status: corev1.ConditionFalse, Reason: "Outdated",
		Message: "set by a controller", LastHeartbeatTime: metav1.NewTime(time.Unix(1000, 0)), LastTransitionTime: metav1.NewTime(time.Unix(1000, 0))}
	update(t, ctx, ip.Client, name, true, func(n *corev1.Node) { n.Status.Conditions = append(n.Status.Conditions, firmware) })
	full := getNode(t, ctx, ip.Client, name)

	hello := *rep
	hello.Link = nil
	hello.Info.Capacity.EphemeralStorage = 0
	n, err := w.Apply(ctx, as, name, &hello, last)
	if err != nil {
		t.Fatalf("write: %v", err)
	}
	if n.Labels["example.com/site"] != "north" || n.Annotations["example.com/note"] != "kept" {
		t.Errorf("labels %v, annotations %v: the administrator's lost", n.Labels, n.Annotations)
	}
	if _, ok := n.Status.Capacity[corev1.ResourceEphemeralStorage]; ok {
		t.Errorf("capacity %v: ephemeral storage no longer reported, still there", n.Status.Capacity)
	}
	// Every manager stays (a controller's write meanwhile may add one).
	if got, was := managers(n.ManagedFields), managers(full.ManagedFields); !allIn(was, got) {
		t.Errorf("managedFields managers after the write %v, before %v", got, was)
	}
	for _, c := range full.Status.Conditions {
		d, ok := cond(n, c.Type)
		if !ok {
			t.Errorf("condition %s lost", c.Type)
			continue
		}
		if d.Status == c.Status && !d.LastTransitionTime.Equal(&c.LastTransitionTime) {
			t.Errorf("condition %s: transition time %v, want %v kept", c.Type, d.LastTransitionTime, c.LastTransitionTime)
		}
		if (c.Type == nodes.ConditionOutboxHealthy || c.Type == firmware.Type) && (d.Message != c.Message || !d.LastHeartbeatTime.Equal(&c.LastHeartbeatTime)) {
			t.Errorf("%s %+v, want %+v kept", c.Type, d, c)
		}
	}

}

// A session renews the Lease it took with a patch of its spec, tested by
// the Lease's UID: what others set on it stays; a Lease deleted, or
// deleted and created again, is taken anew.
func testLeasePatch(t *testing.T, ctx context.Context, ip *stack.InProcess, w *nodes.Writer) {
	const name = "gw-lease"
	as, rep := asNode(t, ip, name), report(name)
	n, err := w.Apply(ctx, as, name, rep, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := w.RenewLease(ctx, as, n)
	if err != nil {
		t.Fatal(err)
	}
	leases := ip.Client.CoordinationV1().Leases(nodes.LeaseNamespace)
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := leases.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Labels = map[string]string{"example.com/watched": "yes"}
		_, err = leases.Update(ctx, cur, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	was, err := leases.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	uid, err := nodes.RenewLeaseByUID(w, ctx, as, n, true, l.UID)
	if err != nil || uid != l.UID {
		t.Fatalf("renewal by UID: %v, %v, want %v", uid, err, l.UID)
	}
	got, err := leases.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Labels["example.com/watched"] != "yes" || !got.Spec.RenewTime.After(was.Spec.RenewTime.Time) ||
		len(got.OwnerReferences) != 1 || got.OwnerReferences[0].UID != n.UID {
		t.Errorf("Lease after the renewal: labels %v, renewed %v (was %v), owners %v", got.Labels, got.Spec.RenewTime, was.Spec.RenewTime, got.OwnerReferences)
	}
	if g, w := managers(got.ManagedFields), managers(was.ManagedFields); !allIn(w, g) {
		t.Errorf("Lease managedFields managers after the renewal %v, before %v", g, w)
	}

	// Deleted: created again. Deleted and created by someone else: the
	// patch, for another UID, is refused, and the Lease is renewed (and
	// owned by the Node) from a fresh read.
	if err := leases.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	again, err := nodes.RenewLeaseByUID(w, ctx, as, n, true, l.UID)
	if err != nil || again == "" || again == l.UID {
		t.Fatalf("renewal after the Lease was deleted: %v, %v", again, err)
	}
	if err := leases.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	holder := "someone-else"
	other, err := leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: nodes.LeaseNamespace},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	third, err := nodes.RenewLeaseByUID(w, ctx, as, n, true, again)
	if err != nil || third != other.UID {
		t.Fatalf("renewal after the Lease was created again: %v, %v, want %v", third, err, other.UID)
	}
	if got, err := leases.Get(ctx, name, metav1.GetOptions{}); err != nil || *got.Spec.HolderIdentity != name ||
		len(got.OwnerReferences) != 1 || got.OwnerReferences[0].UID != n.UID {
		t.Fatalf("Lease taken over: %+v, %v", got, err)
	}
}

func allIn(some, all []string) bool {
	for _, m := range some {
		if !slices.Contains(all, m) {
			return false
		}
	}
	return true
}

// The addresses are written as reported, as a whole: two of one type
// both, and one no longer reported goes (a strategic merge by type would
// keep one of each type).
func testAddresses(t *testing.T, ctx context.Context, ip *stack.InProcess, w *nodes.Writer) {
	const name = "gw-addr"
	as, rep := asNode(t, ip, name), report(name)
	last, err := w.Apply(ctx, as, name, rep, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		report []wire.Address
		want   []corev1.NodeAddress
	}{
		{[]wire.Address{{Type: "InternalIP", Address: "10.0.0.1"}, {Type: "InternalIP", Address: "10.0.0.2"}, {Type: "ExternalIP", Address: "203.0.113.7"}},
			[]corev1.NodeAddress{{Type: "InternalIP", Address: "10.0.0.1"}, {Type: "InternalIP", Address: "10.0.0.2"}, {Type: "ExternalIP", Address: "203.0.113.7"}, {Type: "Hostname", Address: name}}},
		{[]wire.Address{{Type: "InternalIP", Address: "10.0.0.2"}},
			[]corev1.NodeAddress{{Type: "InternalIP", Address: "10.0.0.2"}, {Type: "Hostname", Address: name}}},
		{[]wire.Address{{Type: "InternalIP", Address: "10.0.0.3"}, {Type: "InternalIP", Address: "10.0.0.2"}},
			[]corev1.NodeAddress{{Type: "InternalIP", Address: "10.0.0.3"}, {Type: "InternalIP", Address: "10.0.0.2"}, {Type: "Hostname", Address: name}}},
	} {
		rep.Info.Addresses = tc.report
		if last, err = w.Apply(ctx, as, name, rep, last); err != nil {
			t.Fatal(err)
		}
		if got := getNode(t, ctx, ip.Client, name).Status.Addresses; !slices.Equal(got, tc.want) {
			t.Errorf("reported %v: addresses %v, want %v", tc.report, got, tc.want)
		}
	}
}

// A Node deleted, or deleted and created again, since the relay last
// wrote it is read afresh: the patch, made for the Node of the UID last
// written, does not apply to another.
func testRecreated(t *testing.T, ctx context.Context, ip *stack.InProcess, w *nodes.Writer) {
	const name = "gw-again"
	as, rep := asNode(t, ip, name), report(name)
	last, err := w.Apply(ctx, as, name, rep, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ip.Client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	again, err := w.Apply(ctx, as, name, rep, last) // creates it
	if err != nil {
		t.Fatalf("write after the Node was deleted: %v", err)
	}
	if again.UID == last.UID {
		t.Fatal("the Node was not created again")
	}
	if err := ip.Client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	third, err := w.Apply(ctx, as, name, rep, nil)
	if err != nil {
		t.Fatal(err)
	}
	// What makes it so: the API server refuses a status patch whose UID
	// is not the Node's.
	stale := fmt.Sprintf(`{"metadata":{"uid":%q},"status":{"conditions":[{"type":"Ready","status":"False"}]}}`, again.UID)
	if _, err := as.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, []byte(stale), metav1.PatchOptions{}, "status"); !apierrors.IsInvalid(err) {
		t.Fatalf("status patch with the UID of a deleted Node: %v, want Invalid", err)
	}
	n, err := w.Apply(ctx, as, name, rep, again) // UID of the second
	if err != nil {
		t.Fatalf("write after the Node was created again: %v", err)
	}
	if n.UID != third.UID {
		t.Fatalf("wrote Node %s, want %s", n.UID, third.UID)
	}
}

// refusals is the API server's count of node status requests answered
// 403, 409 or 422, by code.
func refusals(t *testing.T, ctx context.Context, c kubernetes.Interface) map[string]float64 {
	t.Helper()
	raw, err := c.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, err := stack.ParseMetrics(bytes.NewReader(raw), "apiserver_request_total")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for series, v := range m {
		if !strings.Contains(series, `resource="nodes"`) || !strings.Contains(series, `subresource="status"`) {
			continue
		}
		for _, code := range []string{"403", "409", "422"} {
			if strings.Contains(series, `code="`+code+`"`) {
				out[code] += v
			}
		}
	}
	return out
}

// A session of a new Node, against the real control plane: the node
// lifecycle controller takes the not-ready taint off the Node once it is
// Ready, the IPAM controller gives it a pod CIDR, and the session's later
// writes are refused neither as forbidden (the taint) nor as a conflict
// (those controllers' writes), nor is its disconnected write at the end.
func testNewNodeNoRefusals(t *testing.T, ctx context.Context, ip *stack.InProcess, w *nodes.Writer) {
	const name = "gw-fresh"
	before := refusals(t, ctx, ip.Client)
	var acked atomic.Uint64
	s := w.Start(ctx, nodes.SessionConfig{Name: name, Client: asNode(t, ip, name), OnAck: func(seq uint64) { acked.Store(seq) }})
	stopped := false
	defer func() {
		if !stopped {
			s.Stop()
		}
	}()
	rep := report(name)
	s.Report(1, *rep)
	wait.For(t, time.Minute, "the first report written", func() bool { return acked.Load() == 1 })
	wait.State(t, ctx, time.Minute, "the controllers to untaint the Node and give it a pod CIDR", func() (bool, string) {
		n := getNode(t, ctx, ip.Client, name)
		return len(n.Spec.Taints) == 0 && n.Spec.PodCIDR != "", n.Spec.String()
	})
	for seq := uint64(2); seq <= 4; seq++ {
		rep.Conditions = []wire.Condition{{Type: "DiskPressure", Status: []string{"True", "False"}[seq%2]}}
		s.Report(seq, *rep)
		wait.For(t, time.Minute, "a report written", func() bool { return acked.Load() == seq })
	}
	s.Stop()
	stopped = true
	if c, _ := cond(getNode(t, ctx, ip.Client, name), nodes.ConditionLinkReady); c.Status != corev1.ConditionFalse {
		t.Errorf("EdgeLinkReady %+v after Stop, want False", c)
	}
	after := refusals(t, ctx, ip.Client)
	for _, code := range []string{"403", "409", "422"} {
		if d := after[code] - before[code]; d != 0 {
			t.Errorf("%v node status requests answered %s, want none", d, code)
		}
	}
	t.Logf("node status requests refused during the session: 403 %v, 409 %v, 422 %v",
		after["403"]-before["403"], after["409"]-before["409"], after["422"]-before["422"])
}

// A connection that ends after a newer one of the same agent wrote the
// Node leaves EdgeLinkReady as the newer one wrote it: the disconnected
// write's test of the condition fails (from what the old session kept,
// and again after a read, which shows the condition is not its own), even
// with a condition of another type added before it meanwhile.
func testNewerConnection(t *testing.T, ctx context.Context, ip *stack.InProcess, w *nodes.Writer) {
	const name = "gw-newer"
	as := asNode(t, ip, name)
	start := func() (*nodes.Session, *atomic.Uint64) {
		var acked atomic.Uint64
		s := w.Start(ctx, nodes.SessionConfig{Name: name, Client: as, OnAck: func(seq uint64) { acked.Store(seq) }})
		s.Report(1, *report(name))
		wait.For(t, time.Minute, "the report written", func() bool { return acked.Load() == 1 })
		return s, &acked
	}
	old, _ := start()
	oldMsg, _ := cond(getNode(t, ctx, ip.Client, name), nodes.ConditionLinkReady)
	update(t, ctx, ip.Client, name, true, func(n *corev1.Node) {
		n.Status.Conditions = append([]corev1.NodeCondition{{Type: "example.com/First", Status: corev1.ConditionTrue,
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}, n.Status.Conditions...)
	})
	newer, _ := start()
	defer newer.Stop()
	newMsg, _ := cond(getNode(t, ctx, ip.Client, name), nodes.ConditionLinkReady)
	if newMsg.Message == oldMsg.Message {
		t.Fatalf("both connections wrote %q", newMsg.Message)
	}
	before := refusals(t, ctx, ip.Client)
	old.Stop()
	if c, _ := cond(getNode(t, ctx, ip.Client, name), nodes.ConditionLinkReady); c.Status != corev1.ConditionTrue || c.Message != newMsg.Message {
		t.Fatalf("EdgeLinkReady %+v after the old connection ended, want the newer one's %q", c, newMsg.Message)
	}
	// The old session tried the write from what it kept, without a read.
	if d := refusals(t, ctx, ip.Client)["422"] - before["422"]; d != 1 {
		t.Errorf("%v disconnected writes refused by their test, want 1", d)
	}
	// The newer one's end is written, at the condition's new index.
	newer.Stop()
	if c, _ := cond(getNode(t, ctx, ip.Client, name), nodes.ConditionLinkReady); c.Status != corev1.ConditionFalse {
		t.Fatalf("EdgeLinkReady %+v after the newer connection ended, want False", c)
	}
	if c, ok := cond(getNode(t, ctx, ip.Client, name), "example.com/First"); !ok || c.Status != corev1.ConditionTrue {
		t.Errorf("the added condition %+v, %v after the disconnected write", c, ok)
	}
}

// After the node lifecycle controller marked the Node Unknown (its Lease
// lapsed: here the connection fell silent for longer than the Lease's
// duration, and the test sets Ready=Unknown as the controller does, with
// an UpdateStatus), the session's next write makes Ready True with a new
// transition time; the other conditions keep theirs. A new connection's first write does the
// same.
func testUnknownBecomesReady(t *testing.T, ctx context.Context, ip *stack.InProcess) {
	const name = "gw-unknown"
	const lease = 2 * time.Second
	w, reg := newWriter(t, ip, lease)
	as := asNode(t, ip, name)
	var alive atomic.Bool
	alive.Store(true)
	var acked atomic.Uint64
	start := func() *nodes.Session {
		s := w.Start(ctx, nodes.SessionConfig{Name: name, Client: as, Alive: alive.Load, OnAck: func(seq uint64) { acked.Store(seq) }})
		acked.Store(0)
		s.Report(1, *report(name))
		wait.For(t, time.Minute, "the report written", func() bool { return acked.Load() == 1 })
		return s
	}
	markUnknown := func() *corev1.Node {
		t0 := metav1.NewTime(time.Now().Add(-time.Second).Truncate(time.Second))
		update(t, ctx, ip.Client, name, true, func(n *corev1.Node) {
			for i := range n.Status.Conditions {
				c := &n.Status.Conditions[i]
				if c.Type == corev1.NodeReady {
					c.Status, c.Reason, c.Message = corev1.ConditionUnknown, "NodeStatusUnknown", "Kubelet stopped posting node status."
					c.LastTransitionTime = t0
				}
			}
		})
		return getNode(t, ctx, ip.Client, name)
	}
	// becameReady waits for the session's write after unknown and checks
	// the transition times.
	becameReady := func(unknown *corev1.Node) {
		t.Helper()
		var n *corev1.Node
		wait.For(t, time.Minute, "Ready=True written again", func() bool {
			n = getNode(t, ctx, ip.Client, name)
			c, _ := cond(n, corev1.NodeReady)
			return c.Status == corev1.ConditionTrue
		})
		was, _ := cond(unknown, corev1.NodeReady)
		if c, _ := cond(n, corev1.NodeReady); !c.LastTransitionTime.After(was.LastTransitionTime.Time) {
			t.Errorf("Ready %+v: transition time not after the Unknown one, %v", c, was.LastTransitionTime)
		}
		for _, typ := range []corev1.NodeConditionType{corev1.NodeMemoryPressure, corev1.NodeDiskPressure, corev1.NodePIDPressure, nodes.ConditionLinkReady} {
			c, _ := cond(n, typ)
			p, _ := cond(unknown, typ)
			if c.Status == p.Status && !c.LastTransitionTime.Equal(&p.LastTransitionTime) {
				t.Errorf("%s: transition time %v, want %v kept", typ, c.LastTransitionTime, p.LastTransitionTime)
			}
		}
	}

	s := start()
	wait.For(t, time.Minute, "the Lease taken", func() bool {
		_, err := ip.Client.CoordinationV1().Leases(nodes.LeaseNamespace).Get(ctx, name, metav1.GetOptions{})
		return err == nil
	})
	// The connection falls silent: the Lease is no longer renewed.
	alive.Store(false)
	var renewed time.Time
	wait.For(t, time.Minute, "the Lease to lapse", func() bool {
		l, err := ip.Client.CoordinationV1().Leases(nodes.LeaseNamespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		renewed = l.Spec.RenewTime.Time
		return time.Since(renewed) > 2*lease
	})
	unknown := markUnknown()
	alive.Store(true) // heard from again: the session renews, then writes
	becameReady(unknown)
	s.Stop()

	// A new connection after the Node went Unknown.
	unknown = markUnknown()
	s = start()
	becameReady(unknown)
	s.Stop()
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

// managers names the managers of mf, each with its subresource.
func managers(mf []metav1.ManagedFieldsEntry) (out []string) {
	for _, e := range mf {
		out = append(out, e.Manager+"/"+e.Subresource)
	}
	return out
}
