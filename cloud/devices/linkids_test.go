package devices

import (
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

func held(objs []wire.Object) []wire.ObjectVersion {
	var out []wire.ObjectVersion
	for _, o := range objs {
		out = append(out, wire.ObjectVersion{Kind: o.Kind, UID: o.UID, Version: o.Version})
	}
	return out
}

// TestLinkIDs: each synced Device gets a link id (in its Version too); a
// report by id expands to the report by name, values dated from arrival
// and conditions filled in from the last ones sent with the id; a new
// generation gets a new id while the old one, with its own property list,
// still resolves; the next connection keeps the ids the agent holds; ids
// of a Device gone from the node resolve no more.
func TestLinkIDs(t *testing.T) {
	d := bme("gw")
	dyn := fakeDynamic(t, toUnstructured(t, d))
	ctx := t.Context()
	hub := NewHub(ctx, dyn)
	nd := hub.Watch("gw", nil)
	defer nd.Stop()
	if !nd.WaitSynced(ctx) {
		t.Fatal("not synced")
	}
	objs := nd.Objects()
	if len(objs) != 1 || objs[0].LinkID == 0 || objs[0].Version != "3."+itoa(objs[0].LinkID) {
		t.Fatalf("objects %+v: want one with a link id in its version", objs)
	}
	id := objs[0].LinkID
	if again := nd.Objects(); again[0].LinkID != id || again[0].Version != objs[0].Version {
		t.Fatalf("id moved from %d to %d without a change", id, again[0].LinkID)
	}

	arrived := time.UnixMilli(1_800_000_000_000)
	conds := []wire.Condition{{Type: "Connected", Status: "True"}, {Type: "Error", Status: "False"}}
	r := &wire.TwinReport{ID: id, Short: []wire.ShortValue{{Index: 1, Num: 1, Age: 250}}, Conditions: conds}
	uid, err := nd.Expand(r, arrived)
	if err != nil || uid != "u1" {
		t.Fatalf("Expand = %q, %v", uid, err)
	}
	if r.Device != "default/bme" || r.ID != 0 || len(r.Short) != 0 || len(r.Values) != 1 ||
		r.Values[0] != (wire.TwinValue{Name: "on", Num: 1, At: arrived.UnixMilli() - 250}) || len(r.Conditions) != 2 {
		t.Fatalf("expanded %+v", r)
	}
	r = &wire.TwinReport{ID: id, Short: []wire.ShortValue{{Index: 0, Num: 21.5}}}
	if _, err := nd.Expand(r, arrived); err != nil || len(r.Conditions) != 2 || r.Conditions[0] != conds[0] {
		t.Fatalf("conditions not filled in: %+v, %v", r, err)
	}
	for _, tt := range []struct {
		r    wire.TwinReport
		want error
	}{
		{wire.TwinReport{ID: id + 1}, ErrUnknownLinkID},
		{wire.TwinReport{ID: id, Short: []wire.ShortValue{{Index: 2}}}, ErrBadIndex},
	} {
		if _, err := nd.Expand(&tt.r, arrived); !errors.Is(err, tt.want) {
			t.Errorf("Expand(%+v) = %v, want %v", tt.r, err, tt.want)
		}
	}
	if r := (&wire.TwinReport{Device: "default/bme"}); func() bool { uid, err := nd.Expand(r, arrived); return uid != "" || err != nil }() {
		t.Fatal("a report by name was changed")
	}

	// A new generation with one property fewer: a new id, the old one
	// still resolves with the list it was given with.
	d.Generation, d.Spec.Properties = 4, d.Spec.Properties[1:]
	if _, err := dyn.Resource(GVR).Namespace("default").Update(ctx, toUnstructured(t, d), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	var id4 uint32
	wait.For(t, 10*time.Second, "generation 4 synced with a new link id", func() bool {
		o := nd.Objects()
		id4 = o[0].LinkID
		return o[0].Version == "4."+itoa(id4)
	})
	if id4 <= id {
		t.Fatalf("generation 4 has id %d, want a new one above %d", id4, id)
	}
	r = &wire.TwinReport{ID: id, Short: []wire.ShortValue{{Index: 1, Num: 0}}}
	if _, err := nd.Expand(r, arrived); err != nil || r.Values[0].Name != "on" {
		t.Fatalf("old id: %+v, %v", r, err)
	}
	r = &wire.TwinReport{ID: id4, Short: []wire.ShortValue{{Index: 0, Num: 0}}}
	if _, err := nd.Expand(r, arrived); err != nil || r.Values[0].Name != "on" || len(r.Conditions) != 0 {
		t.Fatalf("new id (no conditions sent with it yet): %+v, %v", r, err)
	}

	// The next connection keeps the ids the agent holds.
	objs = nd.Objects()
	next := hub.Watch("gw", nil)
	defer next.Stop()
	next.Adopt(held(objs))
	if o := next.Objects(); o[0].LinkID != id4 || o[0].Version != objs[0].Version {
		t.Fatalf("next connection: %+v, want the held id %d kept", o[0], id4)
	}
	// One that holds an older generation's id gets a new id above it.
	stale := hub.Watch("gw", nil)
	defer stale.Stop()
	stale.Adopt([]wire.ObjectVersion{{Kind: wire.KindDevice, UID: "u1", Version: "3." + itoa(id4+5)}, {Kind: wire.KindDevice, UID: "x", Version: "junk.1"}})
	if o := stale.Objects(); o[0].LinkID != id4+6 {
		t.Fatalf("stale hold: id %d, want %d", o[0].LinkID, id4+6)
	}

	// Gone from the node: its ids resolve no more.
	if err := dyn.Resource(GVR).Namespace("default").Delete(ctx, "bme", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the Device gone from the node", func() bool { return len(nd.Objects()) == 0 })
	for _, i := range []uint32{id, id4} {
		if _, err := nd.Expand(&wire.TwinReport{ID: i}, arrived); !errors.Is(err, ErrUnknownLinkID) {
			t.Errorf("id %d of a deleted Device: %v", i, err)
		}
	}
}

func TestParseVersion(t *testing.T) {
	for _, tt := range []struct {
		v   string
		gen string
		id  uint32
		ok  bool
	}{
		{"3", "3", 0, true}, {"3.7", "3", 7, true}, {"3.0", "", 0, false}, {"3.16777216", "", 0, false},
		{"x.1", "", 0, false}, {"3.-1", "", 0, false}, {"", "", 0, false}, {"3.1.1", "", 0, false},
	} {
		gen, id, ok := parseVersion(tt.v)
		if gen != tt.gen || id != tt.id || ok != tt.ok {
			t.Errorf("parseVersion(%q) = %q, %d, %v", tt.v, gen, id, ok)
		}
		if ok && objectVersion(gen, id) != tt.v {
			t.Errorf("objectVersion(%q, %d) = %q", gen, id, objectVersion(gen, id))
		}
	}
}

func itoa(n uint32) string { return objectVersion("", n)[1:] }

// TestLinkIDHistory: the last idHistory ids of a Device resolve; older
// ones are refused, not given to anything else.
func TestLinkIDHistory(t *testing.T) {
	d := bme("gw")
	dyn := fakeDynamic(t, toUnstructured(t, d))
	ctx := t.Context()
	hub := NewHub(ctx, dyn)
	nd := hub.Watch("gw", nil)
	defer nd.Stop()
	if !nd.WaitSynced(ctx) {
		t.Fatal("not synced")
	}
	var ids []uint32
	for range idHistory + 2 {
		o := nd.Objects()
		ids = append(ids, o[0].LinkID)
		d.Generation++
		if _, err := dyn.Resource(GVR).Namespace("default").Update(ctx, toUnstructured(t, d), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		gen := d.Generation
		wait.For(t, 10*time.Second, "the new generation synced", func() bool {
			v, _, _ := parseVersion(nd.Objects()[0].Version)
			return v == itoa(uint32(gen))
		})
	}
	ids = append(ids, nd.Objects()[0].LinkID)
	for i, id := range ids {
		_, err := nd.Expand(&wire.TwinReport{ID: id}, time.Now())
		if old := i < len(ids)-idHistory; old != errors.Is(err, ErrUnknownLinkID) {
			t.Errorf("id %d (%d of %d): %v", id, i+1, len(ids), err)
		}
	}
	if len(nd.ids) != idHistory {
		t.Errorf("%d ids held, want %d", len(nd.ids), idHistory)
	}
}
