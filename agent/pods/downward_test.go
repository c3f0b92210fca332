package pods

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"outpost.dev/wire"
)

func downwardWorker(t *testing.T) *worker {
	t.Helper()
	r := New(Config{NodeName: "gw-1", NodeInfo: func() (wire.NodeInfo, error) {
		return wire.NodeInfo{Addresses: []wire.Address{{Type: "InternalIP", Address: "10.0.0.7"}},
			Allocatable: wire.Resources{CPUMillis: 1500, MemoryBytes: 512 << 20}}, nil
	}})
	r.readHostIP()
	return newWorker(r, "uid-1")
}

func TestEnvFromAndOverrides(t *testing.T) {
	w := downwardWorker(t)
	rf := &refs{
		configMaps: map[string]*wire.ConfigMap{"default/cfg": {
			Data:   map[string]string{"B": "from-cm", "A": "a", "1st": "digit-first is valid (relaxed names)", "bad=key": "x", "tab\tkey": "x"},
			Binary: map[string][]byte{"BIN": []byte("not used by envFrom")}}},
		secrets: map[string]*wire.Secret{"default/sec": {Data: map[string][]byte{"PW": []byte("s3cret")}}},
	}
	o := &wire.Object{UID: "uid-1", Namespace: "default", Name: "web", Pod: &wire.Pod{}}
	c := &wire.Container{Name: "app", EnvFrom: []wire.EnvFromSource{
		{ConfigMap: "cfg"},
		{Prefix: "S_", Secret: "sec"},
		{ConfigMap: "missing", Optional: true},
		{Prefix: "P_", Secret: "missing", Optional: true},
	}, Env: []wire.EnvVar{
		{Name: "B", Value: "env wins over $(A) and $(S_PW)"},
		{Name: "C", Value: "c"},
	}}
	got, err := w.env(o, rf, c)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"1st=digit-first is valid (relaxed names)", "A=a", "B=env wins over a and s3cret", "S_PW=s3cret", "C=c"}
	if !slices.Equal(got, want) {
		t.Errorf("env = %q\nwant  %q", got, want)
	}

	for _, ef := range []wire.EnvFromSource{{ConfigMap: "missing"}, {Secret: "missing"}} {
		c := &wire.Container{Name: "app", EnvFrom: []wire.EnvFromSource{ef}}
		if _, err := w.env(o, rf, c); err == nil || !strings.Contains(err.Error(), `"missing" not found`) {
			t.Errorf("%+v: err = %v, want not found", ef, err)
		}
	}
}

func TestDownwardFields(t *testing.T) {
	w := downwardWorker(t)
	o := &wire.Object{UID: "uid-1", Namespace: "ns", Name: "web", Pod: &wire.Pod{ServiceAccountName: "sa",
		Labels:      map[string]string{"app": "web", "b": `quo"te`},
		Annotations: map[string]string{"note": "line1\nline2"}}}
	for path, want := range map[string]string{
		"metadata.name": "web", "metadata.namespace": "ns", "metadata.uid": "uid-1",
		"spec.nodeName": "gw-1", "spec.serviceAccountName": "sa",
		"status.hostIP": "10.0.0.7", "status.hostIPs": "10.0.0.7", "status.podIP": "", "status.podIPs": "",
		"metadata.labels['app']": "web", "metadata.labels['none']": "",
		"metadata.annotations['note']": "line1\nline2",
		"metadata.labels":              "app=\"web\"\nb=\"quo\\\"te\"",
		"metadata.annotations":         `note="line1\nline2"`,
	} {
		got, err := w.field(o, path)
		if err != nil || got != want {
			t.Errorf("field(%s) = %q, %v; want %q", path, got, err, want)
		}
	}
	if _, err := w.field(o, "spec.hostname"); err == nil {
		t.Error("an unknown field resolved")
	}
	o.Pod.HostNetwork = true
	for _, p := range []string{"status.podIP", "status.podIPs"} {
		if got, _ := w.field(o, p); got != "10.0.0.7" {
			t.Errorf("hostNetwork %s = %q, want the host's", p, got)
		}
	}
}

func TestDownwardResources(t *testing.T) {
	w := downwardWorker(t)
	app := wire.Container{Name: "app", CPUMillis: 250, MemoryBytes: 64 << 20, RequestCPUMillis: 100, RequestMemoryBytes: 32 << 20}
	bare := wire.Container{Name: "bare"}
	p := &wire.Pod{Containers: []wire.Container{app, bare}}
	for _, tc := range []struct {
		c    *wire.Container
		ref  wire.ResourceRef
		pod  *wire.PodResources
		want string
	}{
		{&app, wire.ResourceRef{Resource: "limits.cpu"}, nil, "1"}, // 250m rounds up to one core
		{&app, wire.ResourceRef{Resource: "limits.cpu", Divisor: 1}, nil, "250"},
		{&app, wire.ResourceRef{Resource: "limits.memory"}, nil, "67108864"},
		{&app, wire.ResourceRef{Resource: "limits.memory", Divisor: 1 << 20}, nil, "64"},
		{&app, wire.ResourceRef{Resource: "requests.cpu", Divisor: 1}, nil, "100"},
		{&app, wire.ResourceRef{Resource: "requests.memory", Divisor: 1000 * 1000}, nil, "34"},
		// No limit: the node's allocatable.
		{&bare, wire.ResourceRef{Resource: "limits.cpu", Divisor: 1}, nil, "1500"},
		{&bare, wire.ResourceRef{Resource: "limits.memory", Divisor: 1 << 20}, nil, "512"},
		{&bare, wire.ResourceRef{Resource: "requests.cpu"}, nil, "0"},
		// No limit but a pod-level one: the pod's.
		{&bare, wire.ResourceRef{Resource: "limits.memory", Divisor: 1 << 20}, &wire.PodResources{MemoryBytes: 128 << 20}, "128"},
		{&bare, wire.ResourceRef{Resource: "limits.cpu", Divisor: 1}, &wire.PodResources{MemoryBytes: 128 << 20}, "1500"},
		// Another container's, by name (a volume file names it).
		{&bare, wire.ResourceRef{Container: "app", Resource: "limits.cpu", Divisor: 1}, nil, "250"},
		{nil, wire.ResourceRef{Container: "app", Resource: "requests.memory", Divisor: 1 << 20}, nil, "32"},
	} {
		p.Resources = tc.pod
		got, err := w.resource(p, tc.c, &tc.ref)
		if err != nil || got != tc.want {
			t.Errorf("%+v (pod %+v) = %q, %v; want %q", tc.ref, tc.pod, got, err, tc.want)
		}
	}
	if _, err := w.resource(p, nil, &wire.ResourceRef{Container: "nope", Resource: "limits.cpu"}); err == nil {
		t.Error("a missing container resolved")
	}
	if _, err := w.resource(p, nil, &wire.ResourceRef{Resource: "limits.cpu"}); err == nil {
		t.Error("a volume file without a container resolved")
	}
}

// TestContainerHashIgnoresUnsetFields: a container that sets none of the
// fields added for envFrom, requests and terminals hashes as before they
// existed, so a new agent restarts no container.
func TestContainerHashIgnoresUnsetFields(t *testing.T) {
	c := wire.Container{Name: "app", Image: "busybox", Env: []wire.EnvVar{{Name: "A", From: &wire.EnvSource{Field: "metadata.name"}}}}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"EnvFrom", "RequestCPUMillis", "RequestMemoryBytes", "Stdin", "StdinOnce", "TTY", "Resource"} {
		if strings.Contains(string(b), `"`+f+`"`) {
			t.Errorf("an unset %s is in the hashed form: %s", f, b)
		}
	}
	// The form the hash had before: only the fields then known.
	const before = `{"Name":"app","Image":"busybox","Command":null,"Args":null,"Env":[{"Name":"A","Value":"","From":{"ConfigMap":null,"Secret":null,"Field":"metadata.name"}}],"WorkingDir":"","Mounts":null,"CPUMillis":0,"MemoryBytes":0,"Privileged":false,"CapAdd":null,"CapDrop":null,"LivenessProbe":null,"ReadinessProbe":null,"StartupProbe":null,"ImagePullPolicy":"","RunAsUser":null,"RunAsGroup":null}`
	if string(b) != before {
		t.Errorf("hashed form\n%s\nwant\n%s", b, before)
	}
}
