package relay_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"

	"outpost.dev/cloud/devices"
	"outpost.dev/cloud/relay"
	"outpost.dev/wire"
)

func device(name, node string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "outpost.dev/v1alpha1", "kind": "Device",
		"metadata": map[string]any{"name": name, "namespace": "default", "uid": "uid-" + name, "generation": int64(1)},
		"spec": map[string]any{"nodeName": node, "driver": "bme280",
			"connection": map[string]any{"bus": "I2C1", "address": "0x76"},
			"properties": []any{map[string]any{"name": "temperature", "type": "float", "unit": "°C"}}},
	}}
}

// TestDeviceSyncAndTwinReports: the node's Devices come in the pod sync
// (one Complete); a twin report about one of them is written to its
// status and acked after; a report about another node's Device is
// dropped (acked, not written); acks stay cumulative across writers.
func TestDeviceSyncAndTwinReports(t *testing.T) {
	dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{devices.GVR: "DeviceList"},
		device("mine", "gw-dev"), device("theirs", "gw-else"))
	tr := newTestRelay(t, func(c *relay.Config) { c.Dynamic = dyn })
	c := tr.hello(t, "gw-dev")

	f, err := recvAny(t, c)
	if err != nil {
		t.Fatal(err)
	}
	var s wire.Sync
	if f.Type != wire.TypeSync || f.DecodeBody(&s) != nil {
		t.Fatalf("got %s, want sync", f.Type)
	}
	if !s.Initial || !s.Complete || len(s.Upserts) != 1 || s.Upserts[0].Kind != wire.KindDevice || s.Upserts[0].Name != "mine" {
		t.Fatalf("initial sync %+v", s)
	}
	if d := s.Upserts[0].Device; d.Address != 0x76 || d.Bus != "I2C1" || d.Properties[0].Unit != "°C" {
		t.Fatalf("device %+v", d)
	}

	report := func(dev string, v float64) *wire.TwinReport {
		return &wire.TwinReport{Device: dev, Values: []wire.TwinValue{{Name: "temperature", Num: v, At: 1}},
			Conditions: []wire.Condition{{Type: "Connected", Status: "True"}}}
	}
	send(t, c, encode(t, wire.TypeTwinReport, 1, report("default/mine", 21.5)))
	send(t, c, encode(t, wire.TypeTwinReport, 2, report("default/theirs", 99)))
	send(t, c, encode(t, wire.TypeTwinReport, 3, report("default/mine", 22.5)))
	for {
		f := mustRecv(t, c, wire.TypeAck)
		if f.Ack == 3 {
			break
		}
		if f.Ack > 3 {
			t.Fatalf("ack %d beyond what was sent", f.Ack)
		}
	}
	ctx := context.Background()
	u, err := dyn.Resource(devices.GVR).Namespace("default").Get(ctx, "mine", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v, _, _ := unstructured.NestedFieldNoCopy(u.Object, "status", "reported", "temperature", "value")
	if fmt.Sprint(v) != "22.5" {
		t.Fatalf("reported temperature %v, want the last report's 22.5 (status %v)", v, u.Object["status"])
	}
	u, _ = dyn.Resource(devices.GVR).Namespace("default").Get(ctx, "theirs", metav1.GetOptions{})
	if _, found := u.Object["status"]; found {
		t.Fatalf("another node's Device was written: %v", u.Object["status"])
	}
}

// TestTwinReportsByLinkID: a report naming its Device by the link id of
// the sync is written like one by name, with the conditions last sent with
// the id when it leaves them out; an unknown id is dropped (acked, nothing
// written) and the connection keeps serving; the next connection, holding
// the Device at that version, gets no Device again and keeps the id.
func TestTwinReportsByLinkID(t *testing.T) {
	dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{devices.GVR: "DeviceList"},
		device("mine", "gw-ids"), device("theirs", "gw-else"))
	reg := prometheus.NewRegistry()
	tr := newTestRelay(t, func(c *relay.Config) { c.Dynamic, c.Registry = dyn, reg })
	c := tr.hello(t, "gw-ids")
	var s wire.Sync
	if f, err := recvAny(t, c); err != nil || f.Type != wire.TypeSync || f.DecodeBody(&s) != nil || len(s.Upserts) != 1 {
		t.Fatalf("initial sync: %v %+v", err, s)
	}
	o := s.Upserts[0]
	if o.LinkID == 0 {
		t.Fatalf("Device synced without a link id: %+v", o)
	}
	short := func(v float64, conds ...wire.Condition) *wire.TwinReport {
		return &wire.TwinReport{ID: o.LinkID, Short: []wire.ShortValue{{Index: 0, Num: v, Age: 5}}, Conditions: conds}
	}
	waitAck := func(c *websocket.Conn, seq uint64) {
		t.Helper()
		for f := mustRecv(t, c, wire.TypeAck); f.Ack < seq; f = mustRecv(t, c, wire.TypeAck) {
		}
	}
	send(t, c, encode(t, wire.TypeTwinReport, 1, short(21.5, wire.Condition{Type: "Connected", Status: "True"})))
	send(t, c, encode(t, wire.TypeTwinReport, 2, short(22.5)))
	send(t, c, encode(t, wire.TypeTwinReport, 3, &wire.TwinReport{ID: o.LinkID + 100, Short: []wire.ShortValue{{Num: 99}}}))
	send(t, c, encode(t, wire.TypeTwinReport, 4, short(23.5)))
	waitAck(c, 4)
	status := func() (any, []any) {
		u, err := dyn.Resource(devices.GVR).Namespace("default").Get(context.Background(), "mine", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		v, _, _ := unstructured.NestedFieldNoCopy(u.Object, "status", "reported", "temperature", "value")
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		return v, conds
	}
	if v, conds := status(); fmt.Sprint(v) != "23.5" || len(conds) != 1 {
		t.Fatalf("reported temperature %v, conditions %v: want 23.5 and the Connected condition of the first report", v, conds)
	}
	u, _ := dyn.Resource(devices.GVR).Namespace("default").Get(context.Background(), "theirs", metav1.GetOptions{})
	if _, found := u.Object["status"]; found {
		t.Fatalf("an unknown id was written to another Device: %v", u.Object["status"])
	}
	if n := droppedTwins(t, reg, "unknown-link-id"); n != 1 {
		t.Errorf("outpost_relay_twin_reports_dropped_total{reason=unknown-link-id} = %v, want 1", n)
	}
	if n := droppedTwins(t, reg, "no-such-device"); n != 0 {
		t.Errorf("outpost_relay_twin_reports_dropped_total{reason=no-such-device} = %v, want 0", n)
	}
	c.Close(websocket.StatusNormalClosure, "")

	// The next connection holds the Device at the version it was sent.
	c2 := tr.dial(t, "gw-ids")
	send(t, c2, encode(t, wire.TypeHello, 0, &wire.Hello{MinVersion: 1, MaxVersion: 1, AgentVersion: "v0.1.0", Node: info(),
		Objects: []wire.ObjectVersion{{Kind: o.Kind, UID: o.UID, Version: o.Version}}}))
	mustRecv(t, c2, wire.TypeHelloAck)
	s = wire.Sync{}
	if f, err := recvAny(t, c2); err != nil || f.Type != wire.TypeSync || f.DecodeBody(&s) != nil || !s.Complete || len(s.Upserts)+len(s.Deletes) != 0 {
		t.Fatalf("second initial sync: %v %+v, want nothing sent again", err, s)
	}
	send(t, c2, encode(t, wire.TypeTwinReport, 5, short(24.5, wire.Condition{Type: "Connected", Status: "True"})))
	waitAck(c2, 5)
	if v, _ := status(); fmt.Sprint(v) != "24.5" {
		t.Fatalf("reported temperature %v after reconnecting, want 24.5", v)
	}
}

// droppedTwins reads the relay's dropped-twin-report counter for reason
// from reg (0 when it has no such series).
func droppedTwins(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	return counter(t, reg, "outpost_relay_twin_reports_dropped_total", "reason", reason)
}

// counter reads the series of counter name whose label is value from reg
// (0 when it has no such series).
func counter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
