package relay_test

import (
	"context"
	"fmt"
	"testing"

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
