package pods

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"outpost.dev/wire"
)

func cmObj(uid, version string, data map[string]string) wire.Object {
	return wire.Object{Kind: wire.KindConfigMap, UID: uid, Namespace: "ns", Name: "cm-" + uid, Version: version, ConfigMap: &wire.ConfigMap{Data: data}}
}

func podObj(uid, version string) wire.Object {
	return wire.Object{Kind: wire.KindPod, UID: uid, Namespace: "ns", Name: "pod-" + uid, Version: version,
		Pod: &wire.Pod{RestartPolicy: "Always", Containers: []wire.Container{{Name: "c", Image: "i"}}}}
}

func TestDiff(t *testing.T) {
	held := HeldVersions([]wire.ObjectVersion{
		{Kind: wire.KindPod, UID: "same", Version: "1"},
		{Kind: wire.KindPod, UID: "stale", Version: "1"},
		{Kind: wire.KindPod, UID: "gone", Version: "1"},
		{Kind: wire.KindConfigMap, UID: "cm-gone", Version: "7"},
		{Kind: wire.KindSecret, UID: "same", Version: "1"}, // same UID, other kind: a different object
	})
	want := []wire.Object{podObj("same", "1"), podObj("stale", "2"), podObj("new", "5"), cmObj("cm", "3", nil)}
	ups, dels := Diff(held, want)
	var got []string
	for _, u := range ups {
		got = append(got, u.Kind.String()+"/"+u.UID+"@"+u.Version)
	}
	if w := []string{"configmap/cm@3", "pod/new@5", "pod/stale@2"}; !reflect.DeepEqual(got, w) {
		t.Errorf("upserts %v, want %v", got, w)
	}
	wantDels := []wire.ObjectRef{{Kind: wire.KindPod, UID: "gone"}, {Kind: wire.KindConfigMap, UID: "cm-gone"}, {Kind: wire.KindSecret, UID: "same"}}
	if !reflect.DeepEqual(dels, wantDels) {
		t.Errorf("deletes %v, want %v", dels, wantDels)
	}

	// In step: nothing to do.
	ups, dels = Diff(HeldVersions([]wire.ObjectVersion{{Kind: wire.KindPod, UID: "a", Version: "1"}}), []wire.Object{podObj("a", "1")})
	if len(ups)+len(dels) != 0 {
		t.Errorf("in step: %d upserts, %d deletes", len(ups), len(dels))
	}
}

func decodeSync(t *testing.T, b []byte) wire.Sync {
	t.Helper()
	if len(b) > wire.MaxFrameSize {
		t.Fatalf("frame of %d bytes", len(b))
	}
	f, err := wire.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if f.Type != wire.TypeSync {
		t.Fatalf("type %s", f.Type)
	}
	var s wire.Sync
	if err := f.DecodeBody(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFramesSplit(t *testing.T) {
	// 40 ConfigMaps of ~100 KiB: about four frames' worth.
	big := strings.Repeat("x", 100<<10)
	var ups []wire.Object
	for i := range 40 {
		ups = append(ups, cmObj(fmt.Sprintf("cm-%d", i), "1", map[string]string{"k": big}))
	}
	var dels []wire.ObjectRef
	for i := range 1500 { // more than one frame may hold by count
		dels = append(dels, wire.ObjectRef{Kind: wire.KindPod, UID: strings.Repeat("u", 30) + string(rune('a'+i%26)) + string(rune('a'+i/26))})
	}
	frames, err := Frames(ups, dels, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) < 5 {
		t.Errorf("%d frames, want at least 5", len(frames))
	}
	nu, nd := 0, 0
	for i, b := range frames {
		s := decodeSync(t, b)
		if !s.Initial || s.Complete != (i == len(frames)-1) {
			t.Errorf("frame %d: initial %v complete %v", i, s.Initial, s.Complete)
		}
		nu += len(s.Upserts)
		nd += len(s.Deletes)
	}
	if nu != len(ups) || nd != len(dels) {
		t.Errorf("%d upserts and %d deletes arrived, want %d and %d", nu, nd, len(ups), len(dels))
	}

	// An initial sync with nothing to say is one empty Complete frame; a
	// delta with nothing is no frame.
	frames, err = Frames(nil, nil, true)
	if err != nil || len(frames) != 1 {
		t.Fatalf("empty initial: %d frames, %v", len(frames), err)
	}
	if s := decodeSync(t, frames[0]); !s.Initial || !s.Complete {
		t.Errorf("empty initial: %+v", s)
	}
	if frames, _ := Frames(nil, nil, false); len(frames) != 0 {
		t.Errorf("empty delta: %d frames", len(frames))
	}
	frames, _ = Frames([]wire.Object{podObj("p", "1")}, nil, false)
	if s := decodeSync(t, frames[0]); len(frames) != 1 || s.Initial || s.Complete {
		t.Errorf("delta: %d frames, %+v", len(frames), s)
	}
}

func TestObjectTooLarge(t *testing.T) {
	o := wire.Object{Kind: wire.KindSecret, UID: "s", Namespace: "ns", Name: "huge", Version: "1",
		Secret: &wire.Secret{Data: map[string][]byte{"a": make([]byte, 600<<10), "b": make([]byte, 600<<10)}}}
	if _, err := ObjectSize(&o); !errors.Is(err, ErrObjectTooLarge) {
		t.Fatalf("err = %v, want ErrObjectTooLarge", err)
	}
	if _, err := Frames([]wire.Object{o}, nil, true); !errors.Is(err, ErrObjectTooLarge) {
		t.Fatalf("Frames: err = %v, want ErrObjectTooLarge", err)
	}
	fits := cmObj("c", "1", map[string]string{"k": strings.Repeat("y", wire.MaxFrameSize-4096)})
	if _, err := ObjectSize(&fits); err != nil {
		t.Fatalf("an object just under the limit: %v", err)
	}
}
