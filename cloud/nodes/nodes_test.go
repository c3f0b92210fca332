package nodes

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"outpost.dev/wire"
)

func report() *Report {
	res := wire.Resources{CPUMillis: 1500, MemoryBytes: 512 << 20, Pods: 16, EphemeralStorage: 4 << 30}
	return &Report{
		AgentVersion: "v0.2.0",
		Info: wire.NodeInfo{
			Arch: "riscv64", OS: "linux", Board: "visionfive2", OSImage: "Debian 12", KernelVersion: "6.6",
			Addresses: []wire.Address{
				{Type: "InternalIP", Address: "192.168.1.5"},
				{Type: "InternalIP", Address: "192.168.1.5"}, // duplicate
				{Type: "Bogus", Address: "x"},
			},
			Capacity: res, Allocatable: res, MachineID: "mid", BootID: "bid", ContainerRuntime: "containerd://1.6.20",
		},
	}
}

func TestStatusTranslation(t *testing.T) {
	now := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	st := Status(now, "gw-1", report())
	if q := st.Capacity[corev1.ResourceCPU]; q.MilliValue() != 1500 {
		t.Errorf("cpu %s", q.String())
	}
	if q := st.Allocatable[corev1.ResourceMemory]; q.Cmp(*resource.NewQuantity(512<<20, resource.BinarySI)) != 0 {
		t.Errorf("memory %s", q.String())
	}
	if q := st.Capacity[corev1.ResourceEphemeralStorage]; q.Value() != 4<<30 {
		t.Errorf("ephemeral-storage %s", q.String())
	}
	if st.NodeInfo.KubeletVersion != "v0.2.0" || st.NodeInfo.Architecture != "riscv64" || st.NodeInfo.KubeProxyVersion != "" ||
		st.NodeInfo.ContainerRuntimeVersion != "containerd://1.6.20" || st.NodeInfo.BootID != "bid" {
		t.Errorf("nodeInfo %+v", st.NodeInfo)
	}
	want := []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.1.5"}, {Type: corev1.NodeHostName, Address: "gw-1"}}
	if len(st.Addresses) != 2 || st.Addresses[0] != want[0] || st.Addresses[1] != want[1] {
		t.Errorf("addresses %v, want %v", st.Addresses, want)
	}
	got := map[corev1.NodeConditionType]corev1.NodeCondition{}
	for _, c := range st.Conditions {
		got[c.Type] = c
		if !c.LastHeartbeatTime.Equal(&now) {
			t.Errorf("%s heartbeat %v", c.Type, c.LastHeartbeatTime)
		}
	}
	if r := got[corev1.NodeReady]; r.Status != corev1.ConditionTrue || r.Reason != ReasonReady || r.Message != MessageReady {
		t.Errorf("Ready %+v", r)
	}
	for _, p := range []corev1.NodeConditionType{corev1.NodeMemoryPressure, corev1.NodeDiskPressure, corev1.NodePIDPressure} {
		if got[p].Status != corev1.ConditionFalse {
			t.Errorf("%s %+v", p, got[p])
		}
	}

	// An hour later, with the agent reporting disk pressure, the status
	// patch onto that Node: Ready keeps its stored transition time (the
	// patch leaves it out), DiskPressure gets a new one.
	later := metav1.NewTime(now.Add(time.Hour))
	rep := report()
	rep.Conditions = []wire.Condition{{Type: "DiskPressure", Status: "True", Reason: "Full"}, {Type: "SensorBus", Status: "False"}}
	st2 := Status(later, "gw-1", rep)
	body, err := statusPatchFor(later, stateOf(&corev1.Node{ObjectMeta: metav1.ObjectMeta{UID: "u1"}, Status: st}), &st2)
	if err != nil {
		t.Fatal(err)
	}
	var patch statusPatch
	if err := json.Unmarshal(body, &patch); err != nil {
		t.Fatal(err)
	}
	pc := map[corev1.NodeConditionType]patchCondition{}
	for _, c := range patch.Status.Conditions {
		pc[c.Type] = c
	}
	if r := pc[corev1.NodeReady]; r.LastTransitionTime != nil || !r.LastHeartbeatTime.Equal(&later) {
		t.Errorf("Ready in the patch %+v, want no transition time and the heartbeat at %v", r, later)
	}
	if d := pc[corev1.NodeDiskPressure]; d.Status != corev1.ConditionTrue || d.LastTransitionTime == nil || !d.LastTransitionTime.Equal(&later) {
		t.Errorf("DiskPressure in the patch %+v", d)
	}
	if _, ok := pc["SensorBus"]; !ok || len(patch.Status.Conditions) != 6 || pc[ConditionLinkReady].Status != corev1.ConditionTrue || patch.Metadata.UID != "u1" {
		t.Errorf("patch %s", body)
	}
}

func TestCheckNameAndInfo(t *testing.T) {
	for name, ok := range map[string]bool{"gw-1": true, "gw.site-a": true, "": false, "GW": false, "a_b": false, string(make([]byte, 64)): false} {
		if err := CheckName(name); (err == nil) != ok {
			t.Errorf("CheckName(%q) = %v", name, err)
		}
	}
	i := report().Info
	if err := CheckInfo(&i); err != nil {
		t.Fatal(err)
	}
	i.Board = "-bad-"
	if err := CheckInfo(&i); err == nil {
		t.Fatal("invalid label value accepted")
	}
}

func newWriter(t testing.TB) (*Writer, *fake.Clientset) {
	client := fake.NewClientset()
	w, err := NewWriter(WriterConfig{Client: client, LeaseDuration: 40 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return w, client
}

func TestApplyAndLease(t *testing.T) {
	ctx := context.Background()
	w, client := newWriter(t)
	n, err := w.Apply(ctx, w.cfg.Client, "gw-1", report(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if n.Labels[EdgeRoleLabel] != "" || !IsEdge(n) || n.Labels[BoardLabel] != "visionfive2" || n.Labels[corev1.LabelHostname] != "gw-1" {
		t.Fatalf("labels %v", n.Labels)
	}
	// An admin's own label survives; a changed board is written.
	n.Labels["team"] = "plant-3"
	n, err = client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rep := report()
	rep.Info.Board = "rpi4"
	n2, err := w.Apply(ctx, w.cfg.Client, "gw-1", rep, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n2.Labels["team"] != "plant-3" || n2.Labels[BoardLabel] != "rpi4" {
		t.Fatalf("labels %v", n2.Labels)
	}
	// A stale cached node (conflict) falls back to a fresh read.
	if _, err := w.Apply(ctx, w.cfg.Client, "gw-1", rep, n); err != nil {
		t.Fatalf("apply with a stale cache: %v", err)
	}

	clock := time.Now()
	w.cfg.Now = func() time.Time { return clock }
	l, err := w.RenewLease(ctx, w.cfg.Client, n2)
	if err != nil {
		t.Fatal(err)
	}
	if *l.Spec.HolderIdentity != "gw-1" || *l.Spec.LeaseDurationSeconds != 40 || len(l.OwnerReferences) != 1 ||
		l.OwnerReferences[0].Kind != "Node" || l.OwnerReferences[0].UID != n2.UID {
		t.Fatalf("lease %+v", l)
	}
	first := l.Spec.RenewTime.Time
	clock = clock.Add(time.Second)
	l2, err := w.RenewLease(ctx, w.cfg.Client, n2)
	if err != nil {
		t.Fatal(err)
	}
	if !l2.Spec.RenewTime.After(first) {
		t.Fatal("renew time did not advance")
	}
}

func TestApplyRefusesKubeletNode(t *testing.T) {
	w, client := newWriter(t)
	client.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker"}}, metav1.CreateOptions{})
	if _, err := w.Apply(context.Background(), w.cfg.Client, "worker", report(), nil); !errors.Is(err, ErrNotEdge) {
		t.Fatalf("err = %v, want ErrNotEdge", err)
	}
}

func TestSessionAcksAfterWrite(t *testing.T) {
	w, client := newWriter(t)
	acks := make(chan uint64, 10)
	s := w.Start(context.Background(), SessionConfig{Client: w.cfg.Client, Name: "gw-1", OnAck: func(seq uint64) { acks <- seq }})
	defer s.Stop()
	s.Report(0, *report())
	s.Report(5, *report())
	select {
	case seq := <-acks:
		if seq != 5 {
			t.Fatalf("ack %d", seq)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no ack")
	}
	if _, err := client.CoreV1().Nodes().Get(context.Background(), "gw-1", metav1.GetOptions{}); err != nil {
		t.Fatal("acked before the node was written")
	}
}

// FuzzReport feeds arbitrary node-status bodies through decoding, the
// relay's checks and the translation into a Node status: nothing an agent
// sends may panic the relay.
func FuzzReport(f *testing.F) {
	b, _ := cbor.Marshal(wire.NodeStatus{Node: report().Info, Conditions: []wire.Condition{{Type: "Ready", Status: "False"}}})
	f.Add(b)
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, body []byte) {
		fr := wire.Frame{Type: wire.TypeNodeStatus, Seq: 1, Body: body}
		var st wire.NodeStatus
		if fr.DecodeBody(&st) != nil || CheckInfo(&st.Node) != nil {
			return
		}
		rep := &Report{AgentVersion: "v", Info: st.Node, Conditions: st.Conditions, Link: st.Link}
		s := Status(metav1.Now(), "gw", rep)
		PointKubelet(&s, "10.0.0.1", 10250)
		if _, err := statusPatchFor(metav1.Now(), &nodeState{uid: "u"}, &s); err != nil {
			t.Fatalf("status patch: %v", err)
		}
		Labels("gw", &st.Node)
	})
}

// A Node the create hooks refuse is not created: the write fails with
// ErrGone, and the session stops as for a kubelet's node.
func TestCreateHooks(t *testing.T) {
	w, client := newWriter(t)
	ctx := context.Background()
	refuse := CreateHooks{Before: func(context.Context) error { return errors.New("node was deleted") }}
	if _, err := w.apply(ctx, w.cfg.Client, "gw-gone", report(), nil, refuse); !errors.Is(err, ErrGone) {
		t.Fatalf("err = %v, want ErrGone", err)
	}
	if _, err := client.CoreV1().Nodes().Get(ctx, "gw-gone", metav1.GetOptions{}); err == nil {
		t.Fatal("a refused Node was created")
	}
	fatal := make(chan error, 1)
	s := w.Start(ctx, SessionConfig{Name: "gw-gone", Client: w.cfg.Client, Create: refuse, OnFatal: func(err error) { fatal <- err }})
	defer s.Stop()
	s.Report(0, *report())
	select {
	case err := <-fatal:
		if !errors.Is(err, ErrGone) {
			t.Fatalf("fatal %v, want ErrGone", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("session did not stop on a refused create")
	}
	var created *corev1.Node
	allow := CreateHooks{After: func(_ context.Context, n *corev1.Node) { created = n }}
	if _, err := w.apply(ctx, w.cfg.Client, "gw-new", report(), nil, allow); err != nil || created == nil || created.Name != "gw-new" {
		t.Fatalf("allowed create: %v, After saw %v", err, created)
	}
}

func TestWorkersFor(t *testing.T) {
	for _, tc := range []struct {
		qps  float64
		want int
	}{
		{0, DefaultWorkers},
		{200, 20},
		{1500, 150},
		{10.5, DefaultWorkers},
	} {
		if got := WorkersFor(tc.qps); got != tc.want {
			t.Errorf("WorkersFor(%v) = %d, want %d", tc.qps, got, tc.want)
		}
	}
}
