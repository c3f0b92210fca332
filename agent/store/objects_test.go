package store

import (
	"errors"
	"fmt"
	"testing"

	"outpost.dev/wire"
)

func pod(uid, version string) wire.Object {
	return wire.Object{Kind: wire.KindPod, UID: uid, Namespace: "default", Name: "p-" + uid, Version: version,
		Pod: &wire.Pod{RestartPolicy: "Always", Containers: []wire.Container{{Name: "c", Image: "busybox"}}}}
}

func cm(uid, version string) wire.Object {
	return wire.Object{Kind: wire.KindConfigMap, UID: uid, Namespace: "default", Name: "cm-" + uid, Version: version,
		ConfigMap: &wire.ConfigMap{Data: map[string]string{"k": "v" + version}}}
}

func TestApplySyncAndVersions(t *testing.T) {
	s := openTemp(t)
	changed, err := s.ApplySync(&wire.Sync{Initial: true, Complete: true, Upserts: []wire.Object{pod("a", "1"), pod("b", "1"), cm("c", "1")}})
	if err != nil || len(changed) != 3 {
		t.Fatalf("first sync: %v changed, %v", changed, err)
	}
	// The same versions again change nothing; a new version and a delete do.
	changed, err = s.ApplySync(&wire.Sync{Upserts: []wire.Object{pod("a", "1"), pod("b", "2")}, Deletes: []wire.ObjectRef{{Kind: wire.KindConfigMap, UID: "c"}, {Kind: wire.KindPod, UID: "never-held"}}})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(changed) != fmt.Sprint([]wire.ObjectRef{{Kind: wire.KindConfigMap, UID: "c"}, {Kind: wire.KindPod, UID: "b"}}) {
		t.Fatalf("changed = %v", changed)
	}
	vs, err := s.ObjectVersions()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(vs) != fmt.Sprint([]wire.ObjectVersion{{Kind: wire.KindPod, UID: "a", Version: "1"}, {Kind: wire.KindPod, UID: "b", Version: "2"}}) {
		t.Fatalf("versions = %v", vs)
	}
	pods, err := s.Objects(wire.KindPod)
	if err != nil || len(pods) != 2 || pods[1].Pod.Containers[0].Image != "busybox" {
		t.Fatalf("pods = %+v, %v", pods, err)
	}
	if _, ok, _ := s.Object(wire.KindConfigMap, "c"); ok {
		t.Fatal("deleted configmap still held")
	}
}

func TestApplySyncSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApplySync(&wire.Sync{Upserts: []wire.Object{pod("a", "7")}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	o, ok, err := s.Object(wire.KindPod, "a")
	if err != nil || !ok || o.Version != "7" {
		t.Fatalf("after reopen: %+v %v %v", o, ok, err)
	}
}

func TestApplySyncIsAllOrNothing(t *testing.T) {
	s := openTemp(t)
	bad := pod("bad", "1")
	bad.Pod.Containers = nil // invalid: refused at marshal
	if _, err := s.ApplySync(&wire.Sync{Upserts: []wire.Object{pod("good", "1"), bad}}); err == nil {
		t.Fatal("invalid object stored")
	}
	if vs, _ := s.ObjectVersions(); len(vs) != 0 {
		t.Fatalf("partial sync stored: %v", vs)
	}
}

func TestObjectLimit(t *testing.T) {
	s := openTemp(t)
	var up []wire.Object
	for i := 0; i < MaxObjects; i++ {
		up = append(up, cm(fmt.Sprint(i), "1"))
		if len(up) == 1000 {
			if _, err := s.ApplySync(&wire.Sync{Upserts: up}); err != nil {
				t.Fatal(err)
			}
			up = nil
		}
	}
	if _, err := s.ApplySync(&wire.Sync{Upserts: up}); err != nil {
		t.Fatal(err)
	}
	_, err := s.ApplySync(&wire.Sync{Upserts: []wire.Object{pod("one-more", "1")}})
	if !errors.Is(err, ErrFull) {
		t.Fatalf("over the limit: %v", err)
	}
	// Replacing a held object is still fine at the limit.
	if _, err := s.ApplySync(&wire.Sync{Upserts: []wire.Object{cm("5", "2")}}); err != nil {
		t.Fatal(err)
	}
}

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
