package devices

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	dynfake "k8s.io/client-go/dynamic/fake"

	"outpost.dev/cloud/crd"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

func TestManifestIsDeployed(t *testing.T) {
	b, err := os.ReadFile("../deploy/devices-crd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, CRDManifest) {
		t.Fatal("cloud/deploy/devices-crd.yaml differs from cloud/devices/crd.yaml: copy one over the other")
	}
	u, err := CRD()
	if err != nil {
		t.Fatal(err)
	}
	if u.GetName() != Resource+"."+crd.Group {
		t.Fatalf("CRD name %q", u.GetName())
	}
}

func TestParseAddress(t *testing.T) {
	for _, tt := range []struct {
		in   intstr.IntOrString
		want uint64
		bad  bool
	}{
		{intstr.FromInt32(118), 118, false},
		{intstr.FromString("0x76"), 0x76, false},
		{intstr.FromString("118"), 118, false},
		{intstr.FromString("0o166"), 118, false},
		{intstr.FromString("seventy"), 0, true},
		{intstr.FromInt32(-1), 0, true},
	} {
		got, err := ParseAddress(&tt.in)
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("ParseAddress(%v) = %d, %v", tt.in.String(), got, err)
		}
	}
}

func bme(node string) *Device {
	a := intstr.FromString("0x76")
	return &Device{
		ObjectMeta: metav1.ObjectMeta{Name: "bme", Namespace: "default", UID: "u1", Generation: 3, ResourceVersion: "99"},
		Spec: Spec{
			NodeName: node, Driver: "bme280",
			Connection: Connection{Bus: "I2C1", Address: &a},
			Properties: []Property{
				{Name: "temperature", Type: "float", Unit: "°C", PollInterval: "500ms", ReportInterval: "2s", Deadband: 0.1},
				{Name: "on", Type: "bool", Access: "ReadWrite"},
			},
			Desired: map[string]any{"on": true},
		},
	}
}

func TestObject(t *testing.T) {
	o, err := Object(bme("gw"))
	if err != nil {
		t.Fatal(err)
	}
	d := o.Device
	if o.Kind != wire.KindDevice || o.Version != "3" || o.UID != "u1" || d.Address != 0x76 || d.Bus != "I2C1" {
		t.Fatalf("object %+v device %+v", o, d)
	}
	if p := d.Properties[0]; p.PollMillis != 500 || p.ReportMillis != 2000 || p.Deadband != 0.1 || p.Unit != "°C" {
		t.Fatalf("property %+v", p)
	}
	if len(d.Desired) != 1 || d.Desired[0] != (wire.TwinValue{Name: "on", Num: 1}) {
		t.Fatalf("desired %+v", d.Desired)
	}
	bad := bme("gw")
	bad.Spec.Desired = map[string]any{"on": "yes"}
	if _, err := Object(bad); err == nil || !strings.Contains(err.Error(), "spec.desired.on") {
		t.Fatalf("bad desired: %v", err)
	}
	bad = bme("gw")
	bad.Spec.Properties[0].PollInterval = "often"
	if _, err := Object(bad); err == nil || !strings.Contains(err.Error(), "pollInterval") {
		t.Fatalf("bad interval: %v", err)
	}
}

func TestNewStatus(t *testing.T) {
	d := bme("gw")
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	r := &wire.TwinReport{Device: "default/bme",
		Values:     []wire.TwinValue{{Name: "temperature", Num: 21.53, At: now.UnixMilli()}, {Name: "on", Num: 1}},
		Conditions: []wire.Condition{{Type: "Connected", Status: "True"}, {Type: "Error", Status: "False"}}}
	st := NewStatus(d, r, now)
	if v := st.Reported["temperature"]; v.Value != 21.53 || v.Unit != "°C" || !v.At.Time.Equal(now) {
		t.Fatalf("temperature %+v", v)
	}
	if st.Reported["on"].Value != true {
		t.Fatalf("on %+v", st.Reported["on"])
	}
	if st.Summary != "on=true temperature=21.53°C" {
		t.Fatalf("summary %q", st.Summary)
	}
	if len(st.Conditions) != 2 || st.Conditions[0].Reason != "Connected" || st.Conditions[1].Reason != "NoError" {
		t.Fatalf("conditions %+v", st.Conditions)
	}
	// The transition time holds while the status does.
	d.Status = st
	later := now.Add(time.Minute)
	r.Values = r.Values[:1]
	r.Conditions[1] = wire.Condition{Type: "Error", Status: "False"}
	st2 := NewStatus(d, r, later)
	if !st2.Conditions[0].LastTransitionTime.Time.Equal(now) {
		t.Fatalf("transition time moved: %v", st2.Conditions[0].LastTransitionTime)
	}
	if st2.Reported["on"].Value != true {
		t.Fatal("a value left out of a report was dropped")
	}
	r.Conditions = []wire.Condition{{Type: "Connected", Status: "False", Reason: "NoAnswer", Message: "no answer at 0x77"}}
	st3 := NewStatus(d, r, later)
	if c := st3.Conditions[0]; c.Status != "False" || c.Reason != "NoAnswer" || !c.LastTransitionTime.Time.Equal(later) {
		t.Fatalf("condition %+v", c)
	}
	// A reading older than the one written (a report another replica
	// wrote the newer of) leaves it alone.
	d.Status = st3
	old := &wire.TwinReport{Device: "default/bme", Values: []wire.TwinValue{
		{Name: "temperature", Num: 19, At: now.Add(-time.Second).UnixMilli()}, {Name: "on", Num: 0, At: later.UnixMilli()}}}
	st4 := NewStatus(d, old, later)
	if v := st4.Reported["temperature"]; v.Value != 21.53 || !v.At.Time.Equal(now) {
		t.Fatalf("an older reading replaced a newer one: %+v", v)
	}
	if v := st4.Reported["on"]; v.Value != false {
		t.Fatalf("a newer reading in the same report was left out: %+v", v)
	}
}

// TestWriteFromAStaleCopy: the watch's copy of a Device is a write behind
// the API server (another replica wrote "on" since). The write built on
// it fails its resourceVersion test; it is made again from the watch's
// newer copy and keeps that value, rather than putting the stale one
// back.
func TestWriteFromAStaleCopy(t *testing.T) {
	at := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	copyAt := func(rv string, on bool, at time.Time) *Device {
		d := bme("gw")
		d.ResourceVersion = rv
		d.Status.Reported = map[string]Reported{"on": {Value: on, At: metav1.NewTime(at)}}
		return d
	}
	stale := func() *Device { return copyAt("10", false, at) }
	fresh := func() *Device { return copyAt("11", true, at.Add(time.Second)) }
	dyn := fakeDynamic(t, toUnstructured(t, fresh()))
	w, err := NewWriter(WriterConfig{Dynamic: dyn, QPS: 1000, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var lookups atomic.Int32
	done := make(chan struct{})
	w.Submit(t.Context(), Write{Node: "gw", Key: "default/bme", Owner: 1,
		Report: &wire.TwinReport{Device: "default/bme", Values: []wire.TwinValue{{Name: "temperature", Num: 22, At: at.Add(2 * time.Second).UnixMilli()}}},
		Lookup: func() (*Device, bool) {
			if lookups.Add(1) == 1 {
				return stale(), true // the watch has not seen the last write yet
			}
			return fresh(), true
		},
		Done: func() { close(done) },
	})
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("report not done")
	}
	u, err := dyn.Resource(GVR).Namespace("default").Get(t.Context(), "bme", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	on, _, _ := unstructured.NestedFieldNoCopy(u.Object, "status", "reported", "on", "value")
	tv, _, _ := unstructured.NestedFieldNoCopy(u.Object, "status", "reported", "temperature", "value")
	if on != true || fmt.Sprint(tv) != "22" {
		t.Fatalf("on %v, temperature %v; want true (the newer copy's) and 22 (the report's)", on, tv)
	}
	if n := lookups.Load(); n != 2 {
		t.Fatalf("%d lookups; want 2 (the stale copy, then the newer one)", n)
	}
}

func toUnstructured(t *testing.T, d *Device) *unstructured.Unstructured {
	t.Helper()
	d.APIVersion, d.Kind = crd.APIVersion, Kind
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(d)
	if err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: m}
}

func fakeDynamic(t *testing.T, objs ...runtime.Object) *dynfake.FakeDynamicClient {
	return dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{GVR: "DeviceList"}, objs...)
}

func TestWatchAndWrite(t *testing.T) {
	mine, other := bme("gw"), bme("other")
	other.Name, other.UID = "elsewhere", "u2"
	dyn := fakeDynamic(t, toUnstructured(t, mine), toUnstructured(t, other))
	ctx := t.Context()
	hub := NewHub(ctx, dyn)
	nd := hub.Watch("gw", nil)
	defer nd.Stop()
	if !nd.WaitSynced(ctx) {
		t.Fatal("not synced")
	}
	objs := nd.Objects()
	if len(objs) != 1 || objs[0].Name != "bme" {
		t.Fatalf("objects %+v: want only the node's own Device", objs)
	}
	if _, ok := nd.Get("default/elsewhere"); ok {
		t.Fatal("Get returned another node's Device")
	}

	w, err := NewWriter(WriterConfig{Dynamic: dyn, QPS: 1000, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var done atomic.Int32
	var wg sync.WaitGroup
	wg.Add(1)
	for i := range 5 { // coalesce: the last one wins
		w.Submit(ctx, Write{Node: "gw", Key: "default/bme", Owner: 1,
			Report: &wire.TwinReport{Device: "default/bme", Values: []wire.TwinValue{{Name: "temperature", Num: float64(20 + i)}}},
			Lookup: func() (*Device, bool) { return nd.Get("default/bme") },
			Done: func() {
				if done.Add(1) == 1 {
					wg.Done()
				}
			},
		})
	}
	wg.Wait()
	wait.State(t, ctx, 5*time.Second, "the last report's temperature 24", func() (bool, string) {
		u, err := dyn.Resource(GVR).Namespace("default").Get(ctx, "bme", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		v, _, _ := unstructured.NestedFieldNoCopy(u.Object, "status", "reported", "temperature", "value")
		return fmt.Sprint(v) == "24", fmt.Sprint("temperature ", v)
	})

	// A report for a Device bound elsewhere is dropped, and done.
	dropped := make(chan struct{})
	w.Submit(ctx, Write{Node: "gw", Key: "default/elsewhere", Owner: 1,
		Report: &wire.TwinReport{Device: "default/elsewhere"},
		Lookup: func() (*Device, bool) { return nd.Get("default/elsewhere") },
		Done:   func() { close(dropped) },
	})
	select {
	case <-dropped:
	case <-time.After(5 * time.Second):
		t.Fatal("dropped report not done")
	}
	u, _ := dyn.Resource(GVR).Namespace("default").Get(context.Background(), "elsewhere", metav1.GetOptions{})
	if _, found, _ := unstructured.NestedMap(u.Object, "status", "reported"); found {
		t.Fatal("another node's Device was written")
	}
}

// TestHubFansOutByNode: one watch serves every node's subscription; a
// Device re-bound to another node leaves the first node's view, reaches
// the second's, and wakes it.
func TestHubFansOutByNode(t *testing.T) {
	d := bme("gw")
	dyn := fakeDynamic(t, toUnstructured(t, d))
	ctx := t.Context()
	hub := NewHub(ctx, dyn)
	gw, other := hub.Watch("gw", nil), hub.Watch("other", nil)
	defer gw.Stop()
	defer other.Stop()
	if !other.WaitSynced(ctx) {
		t.Fatal("not synced")
	}
	if len(gw.Objects()) != 1 || len(other.Objects()) != 0 {
		t.Fatalf("gw has %d Devices, other %d; want 1 and 0", len(gw.Objects()), len(other.Objects()))
	}
	var woken atomic.Bool
	other.OnChange(func() { woken.Store(true) })
	moved := bme("other")
	moved.Generation = 4
	if _, err := dyn.Resource(GVR).Namespace("default").Update(ctx, toUnstructured(t, moved), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the Device moved to node other, which was woken", func() bool {
		return woken.Load() && len(other.Objects()) == 1 && len(gw.Objects()) == 0
	})
	if _, ok := gw.Get("default/bme"); ok {
		t.Fatal("gw still finds a Device bound to another node")
	}
	if _, ok := other.Get("default/bme"); !ok {
		t.Fatal("other does not find its Device")
	}
}
