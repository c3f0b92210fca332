package wire

import (
	"reflect"
	"strings"
	"testing"
)

func debugSync() *Sync {
	s := sampleSync()
	s.Upserts[0].Pod.EphemeralContainers = []EphemeralContainer{{
		Container: Container{Name: "debugger-1", Image: "registry.local/busybox:1", Command: []string{"sh"},
			Stdin: true, StdinOnce: true, TTY: true, Mounts: []VolumeMount{{Name: "cfg", MountPath: "/cfg"}}},
		Target: "web",
	}}
	return s
}

func TestEphemeralContainersRoundTrip(t *testing.T) {
	in := debugSync()
	b, err := Encode(TypeSync, 0, in)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	var out Sync
	if err := f.DecodeBody(&out); err != nil {
		t.Fatal(err)
	}
	if got, want := out.Upserts[0].Pod.EphemeralContainers, in.Upserts[0].Pod.EphemeralContainers; !reflect.DeepEqual(got, want) {
		t.Fatalf("ephemeral containers: got %+v, want %+v", got, want)
	}

	st := samplePodStatus()
	st.EphemeralContainers = []ContainerStatus{{Name: "debugger-1", Image: "registry.local/busybox:1",
		State: ContainerState{Kind: StateRunning, StartedAt: 1764100002000}}}
	if b, err = Encode(TypePodStatus, 3, st); err != nil {
		t.Fatal(err)
	}
	if f, err = Decode(b); err != nil {
		t.Fatal(err)
	}
	var st2 PodStatus
	if err := f.DecodeBody(&st2); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(st2.EphemeralContainers, st.EphemeralContainers) {
		t.Fatalf("ephemeral statuses: got %+v, want %+v", st2.EphemeralContainers, st.EphemeralContainers)
	}
}

func TestEphemeralContainersRejected(t *testing.T) {
	for name, tt := range map[string]struct {
		mutate func(e *EphemeralContainer)
		want   string
	}{
		"name of a container": {func(e *EphemeralContainer) { e.Container.Name = "web" }, "two containers"},
		"unknown target":      {func(e *EphemeralContainer) { e.Target = "nope" }, "target"},
		"probe":               {func(e *EphemeralContainer) { e.Container.ReadinessProbe = &Probe{Exec: []string{"true"}} }, "probes"},
		"hook":                {func(e *EphemeralContainer) { e.Container.PreStop = &Handler{SleepSeconds: 1} }, "hooks"},
		"resources":           {func(e *EphemeralContainer) { e.Container.MemoryBytes = 1 << 20 }, "resources"},
		"sidecar":             {func(e *EphemeralContainer) { e.Container.Sidecar = true }, "sidecars"},
		"no image":            {func(e *EphemeralContainer) { e.Container.Image = "" }, "image"},
	} {
		s := debugSync()
		tt.mutate(&s.Upserts[0].Pod.EphemeralContainers[0])
		err := s.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error with %q", name, err, tt.want)
		}
	}
	s := debugSync()
	p := s.Upserts[0].Pod
	p.EphemeralContainers = append(p.EphemeralContainers, p.EphemeralContainers[0])
	if err := s.Validate(); err == nil {
		t.Error("two ephemeral containers of one name accepted")
	}
	st := samplePodStatus()
	st.EphemeralContainers = []ContainerStatus{{Name: "debugger-1"}}
	if st.Validate() == nil {
		t.Error("ephemeral status without a state accepted")
	}
	if err := debugSync().Validate(); err != nil {
		t.Fatalf("valid pod refused: %v", err)
	}
}
