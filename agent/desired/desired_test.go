package desired

import (
	"testing"

	"outpost.dev/agent/store"
	"outpost.dev/wire"
)

func frame(t *testing.T, s *wire.Sync) wire.Frame {
	t.Helper()
	b, err := wire.Encode(wire.TypeSync, 0, s)
	if err != nil {
		t.Fatal(err)
	}
	f, err := wire.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestHandle(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a := New(st, nil)
	changes, other := a.Changes(), a.Changes()
	p := wire.Object{Kind: wire.KindPod, UID: "u1", Namespace: "ns", Name: "p", Version: "3",
		Pod: &wire.Pod{RestartPolicy: "Never", Containers: []wire.Container{{Name: "c", Image: "i"}}}}

	if !a.Handle(frame(t, &wire.Sync{Initial: true, Complete: true, Upserts: []wire.Object{p}})) {
		t.Fatal("sync frame not handled")
	}
	for _, ch := range []<-chan struct{}{changes, other} {
		select {
		case <-ch:
		default:
			t.Fatal("a subscriber got no change signal after a new pod")
		}
	}
	if a.LastSync().IsZero() {
		t.Fatal("complete resync not recorded")
	}
	if o, ok, err := st.Object(wire.KindPod, "u1"); err != nil || !ok || o.Version != "3" {
		t.Fatalf("pod not stored: %+v %v %v", o, ok, err)
	}
	// The same version again: stored already, no signal.
	a.Handle(frame(t, &wire.Sync{Upserts: []wire.Object{p}}))
	select {
	case <-changes:
		t.Fatal("signal without a change")
	default:
	}
	// A body that does not validate is refused and counted.
	bad := wire.Frame{Type: wire.TypeSync, Body: []byte{0xa1, 0x03, 0xf4}} // {3: false}: fine
	a.Handle(bad)
	bad = wire.Frame{Type: wire.TypeSync, Body: []byte{0xa1, 0x04, 0xf5}} // complete without initial
	a.Handle(bad)
	if a.Failures() != 1 {
		t.Fatalf("failures = %d, want 1", a.Failures())
	}
	if a.Handle(wire.Frame{Type: wire.TypeAck}) {
		t.Fatal("an ack was handled as a sync")
	}
}

// TestOnResync: the callback runs once the initial sync of a connection is
// stored completely (its last frame), not for its other frames or deltas.
func TestOnResync(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a := New(st, nil)
	var calls int
	a.OnResync(func() {
		if _, ok, _ := st.Object(wire.KindDevice, "d1"); !ok {
			t.Error("called before the sync was stored")
		}
		calls++
	})
	d := wire.Object{Kind: wire.KindDevice, UID: "d1", Namespace: "ns", Name: "d", Version: "1.1", LinkID: 1, Device: &wire.Device{Driver: "sim"}}
	a.Handle(frame(t, &wire.Sync{Initial: true}))
	a.Handle(frame(t, &wire.Sync{Upserts: []wire.Object{d}}))
	if calls != 0 {
		t.Fatalf("called %d times before the initial sync completed", calls)
	}
	a.Handle(frame(t, &wire.Sync{Initial: true, Complete: true, Upserts: []wire.Object{d}}))
	if calls != 1 {
		t.Fatalf("called %d times after the initial sync, want 1", calls)
	}
}
