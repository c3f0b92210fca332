package wire

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
)

func sampleHello() *Hello {
	return &Hello{
		MinVersion:   ProtocolMin,
		MaxVersion:   ProtocolMax,
		AgentVersion: "v0.1.0",
		Node: NodeInfo{
			Arch: "arm64", OS: "linux", OSImage: "Debian GNU/Linux 12 (bookworm)",
			KernelVersion: "6.1.0-rpi7-rpi-v8", Board: "rpi4", Hostname: "gw-1",
			Addresses:   []Address{{Type: "InternalIP", Address: "192.0.2.10"}, {Type: "Hostname", Address: "gw-1"}},
			Capacity:    Resources{CPUMillis: 4000, MemoryBytes: 4 << 30, Pods: 110, EphemeralStorage: 32 << 30},
			Allocatable: Resources{CPUMillis: 3900, MemoryBytes: 4<<30 - 64<<20, Pods: 110, EphemeralStorage: 32 << 30},
			MachineID:   "0123456789abcdef0123456789abcdef", BootID: "5b7c1c0e-6f0b-4a4e-9d0a-1f2e3d4c5b6a",
		},
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		typ  Type
		seq  uint64
		body Body
		out  Body
	}{
		{"hello", TypeHello, 0, sampleHello(), &Hello{}},
		{"hello-ack", TypeHelloAck, 0, &HelloAck{Version: 1, NodeName: "gw-1", HeartbeatSeconds: 10, RelayVersion: "v0.1.0"}, &HelloAck{}},
		{"heartbeat", TypeHeartbeat, 0, nil, &Heartbeat{}},
		{"error", TypeError, 0, &Error{Code: CodeMalformed, Reason: "bad", Fatal: true}, &Error{}},
		{"sync", TypeSync, 0, sampleSync(), &Sync{}},
		{"sync with pod fields", TypeSync, 0, podFieldsSync(), &Sync{}},
		{"twin-report", TypeTwinReport, 12, sampleTwin(), &TwinReport{}},
		{"twin-report-short", TypeTwinReport, 13, sampleShortTwin(), &TwinReport{}},
		{"sync-device", TypeSync, 0, &Sync{Upserts: []Object{sampleDeviceObject()}}, &Sync{}},
		{"pod-status", TypePodStatus, 9, samplePodStatus(), &PodStatus{}},
		{"stream-open", TypeStreamOpen, 0, &StreamOpen{ID: 3, Namespace: "ns", Pod: "p", Container: "c", Follow: true, TailLines: -1}, &StreamOpen{}},
		{"stream-data", TypeStreamData, 0, &StreamData{ID: 3, Data: []byte("line\n"), EOF: true}, &StreamData{}},
		{"stream-ack", TypeStreamAck, 0, &StreamAck{ID: 3, Consumed: 4096}, &StreamAck{}},
		{"cert-request", TypeCertRequest, 0, &CertRequest{CSR: []byte{0x30, 1, 2}}, &CertRequest{}},
		{"cert-issued", TypeCertIssued, 0, &CertIssued{Certificate: []byte{0x30, 3, 4}}, &CertIssued{}},
		{"node-status", TypeNodeStatus, 42, &NodeStatus{Node: sampleHello().Node, Conditions: []Condition{{Type: "Ready", Status: "True"}}}, &NodeStatus{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Encode(tt.typ, tt.seq, tt.body)
			if err != nil {
				t.Fatal(err)
			}
			f, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if f.Type != tt.typ || f.Seq != tt.seq {
				t.Fatalf("got type %v seq %d, want %v %d", f.Type, f.Seq, tt.typ, tt.seq)
			}
			if err := f.DecodeBody(tt.out); err != nil {
				t.Fatal(err)
			}
			if tt.body != nil {
				again, err := Encode(tt.typ, tt.seq, tt.out)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(again, b) {
					t.Fatalf("re-encoding differs:\n%x\n%x", again, b)
				}
			}
		})
	}
}

func TestHeartbeatIsTiny(t *testing.T) {
	b, err := Encode(TypeHeartbeat, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 3 {
		t.Fatalf("heartbeat is %d bytes (%x), want 3", len(b), b)
	}
}

func TestDeterministic(t *testing.T) {
	a, _ := Encode(TypeHello, 0, sampleHello())
	for i := 0; i < 20; i++ {
		b, _ := Encode(TypeHello, 0, sampleHello())
		if !bytes.Equal(a, b) {
			t.Fatal("encoding is not deterministic")
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	hb, _ := Encode(TypeHeartbeat, 0, nil)
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"garbage", []byte("GET / HTTP/1.1\r\n"), ErrMalformed},
		{"truncated", hb[:2], ErrMalformed},
		{"trailing bytes", append(append([]byte{}, hb...), 0x00), ErrMalformed},
		{"not a map", []byte{0x83, 0x01, 0x02, 0x03}, ErrMalformed},
		{"no type", []byte{0xa1, 0x02, 0x05}, ErrInvalid},
		{"oversized", make([]byte, MaxFrameSize+1), ErrTooLarge},
		// A byte string declaring 2^32 bytes in a 10-byte frame: must fail
		// without allocating what it declares (CVE-2026-62370 class).
		{"declared huge body", []byte{0xa2, 0x01, 0x01, 0x04, 0x5a, 0xff, 0xff, 0xff, 0xff, 0x00}, ErrMalformed},
		{"declared huge array", []byte{0xa2, 0x01, 0x01, 0x04, 0x9b, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, ErrMalformed},
		{"indefinite length", []byte{0xbf, 0x01, 0x03, 0xff}, ErrMalformed},
		{"duplicate key", []byte{0xa2, 0x01, 0x03, 0x01, 0x03}, ErrMalformed},
		{"tag", []byte{0xc1, 0xa1, 0x01, 0x03}, ErrMalformed},
		{"body not cbor", []byte{0xa2, 0x01, 0x01, 0x04, 0xff}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decode = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDeepNestingRejected(t *testing.T) {
	// {1: 1, 4: [[[[...]]]]} 100 levels deep.
	body := append(bytes.Repeat([]byte{0x81}, 100), 0x00)
	f := append([]byte{0xa2, 0x01, 0x01, 0x04}, body...)
	fr, err := Decode(f)
	if err == nil {
		err = fr.DecodeBody(&Hello{})
	}
	if err == nil {
		t.Fatal("100-level nesting accepted")
	}
}

// A message that leaves out a field a handler needs must fail validation
// rather than reach the handler (CVE-2022-31076 class).
func TestMissingFieldsRejected(t *testing.T) {
	full := sampleHello()
	tests := []struct {
		name   string
		mutate func(h *Hello)
		want   string
	}{
		{"no version", func(h *Hello) { h.MinVersion, h.MaxVersion = 0, 0 }, "version range"},
		{"inverted range", func(h *Hello) { h.MinVersion, h.MaxVersion = 3, 2 }, "version range"},
		{"no node", func(h *Hello) { h.Node = NodeInfo{} }, "arch missing"},
		{"no board", func(h *Hello) { h.Node.Board = "" }, "board missing"},
		{"no capacity", func(h *Hello) { h.Node.Capacity = Resources{} }, "capacity"},
		{"no agent version", func(h *Hello) { h.AgentVersion = "" }, "agentVersion missing"},
		{"long hostname", func(h *Hello) { h.Node.Hostname = strings.Repeat("a", 300) }, "hostname"},
		{"too many addresses", func(h *Hello) { h.Node.Addresses = make([]Address, 17) }, "addresses"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := *full
			h.Node.Addresses = append([]Address(nil), full.Node.Addresses...)
			tt.mutate(&h)
			// Encode the invalid body by hand: Encode itself refuses it.
			raw, err := encMode.Marshal(&h)
			if err != nil {
				t.Fatal(err)
			}
			b, err := EncodeFrame(Frame{Type: TypeHello, Body: raw})
			if err != nil {
				t.Fatal(err)
			}
			f, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			err = f.DecodeBody(&Hello{})
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("DecodeBody = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
			if _, err := Encode(TypeHello, 0, &h); err == nil {
				t.Fatal("Encode accepted an invalid body")
			}
		})
	}
}

func TestBodyOfWrongTypeRejected(t *testing.T) {
	b, _ := Encode(TypeError, 0, &Error{Code: CodeInternal, Reason: "x"})
	f, _ := Decode(b)
	if err := f.DecodeBody(&Hello{}); err == nil {
		t.Fatal("an error body decoded as a valid hello")
	}
}

func TestNegotiate(t *testing.T) {
	tests := []struct {
		min, max uint16
		want     uint16
		ok       bool
	}{
		{1, 1, 1, true},
		{1, 9, ProtocolMax, true},
		{0, 1, 1, true},
		{2, 9, 0, false},
	}
	for _, tt := range tests {
		got, ok := Negotiate(tt.min, tt.max)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Negotiate(%d, %d) = %d, %v; want %d, %v", tt.min, tt.max, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseToken(t *testing.T) {
	tests := []struct {
		in     string
		id, sc string
		ok     bool
	}{
		{"abcdef.0123456789abcdef", "abcdef", "0123456789abcdef", true},
		{"ABCDEF.0123456789abcdef", "", "", false},
		{"abcdef0123456789abcdef", "", "", false},
		{"abcde.0123456789abcdefg", "", "", false},
		{"abcdef.0123456789abcde!", "", "", false},
		{"", "", "", false},
	}
	for _, tt := range tests {
		id, sc, err := ParseToken(tt.in)
		if (err == nil) != tt.ok || id != tt.id || sc != tt.sc {
			t.Errorf("ParseToken(%q) = %q, %q, %v", tt.in, id, sc, err)
		}
	}
}

func TestCASignature(t *testing.T) {
	ca := []byte("-----BEGIN CERTIFICATE-----\n...")
	sig := CASignature("0123456789abcdef", ca)
	if !CheckCASignature("0123456789abcdef", ca, sig) {
		t.Fatal("own signature rejected")
	}
	if CheckCASignature("0123456789abcdeX", ca, sig) {
		t.Fatal("signature accepted with the wrong secret")
	}
	if CheckCASignature("0123456789abcdef", append(ca, 'x'), sig) {
		t.Fatal("signature accepted for another CA")
	}
	if CheckCASignature("0123456789abcdef", ca, "zz") {
		t.Fatal("non-hex signature accepted")
	}
}

func sampleSync() *Sync {
	uid, fsGroup := int64(1000), int64(2000)
	return &Sync{
		Initial: true, Complete: true,
		Upserts: []Object{
			{Kind: KindPod, UID: "6f1c", Namespace: "default", Name: "web-1", Version: "123", Pod: &Pod{
				RestartPolicy: "Always", TerminationGracePeriodSeconds: 30,
				Containers: []Container{{
					Name: "web", Image: "registry.local/busybox:1", Command: []string{"httpd", "-f"},
					Env: []EnvVar{{Name: "A", Value: "1"}, {Name: "POD", From: &EnvSource{Field: "metadata.name"}},
						{Name: "PW", From: &EnvSource{Secret: &KeyRef{Name: "s", Key: "pw"}}}},
					Mounts:      []VolumeMount{{Name: "cfg", MountPath: "/etc/cfg", ReadOnly: true}},
					MemoryBytes: 64 << 20, CPUMillis: 250, RunAsUser: &uid,
					Seccomp: &SeccompProfile{Type: SeccompLocalhost, LocalhostProfile: "profiles/web.json"}, NoNewPrivileges: true, ReadOnlyRootFilesystem: true, ProcUnmasked: true, RunAsNonRoot: true,
					LivenessProbe: &Probe{HTTPGet: &HTTPGet{Path: "/", Port: 80}, PeriodSeconds: 10},
					PostStart:     &Handler{Exec: []string{"sh", "-c", "touch /ready"}},
					PreStop:       &Handler{HTTPGet: &HTTPGet{Path: "/drain", Port: 80, Headers: [][2]string{{"X-Why", "stop"}}}},
				}},
				InitContainers: []Container{{Name: "proxy", Image: "registry.local/busybox:1", Sidecar: true,
					PreStop: &Handler{SleepSeconds: 5}}},
				Volumes:            []Volume{{Name: "cfg", ConfigMap: &FilesVolume{Name: "cfg"}}},
				SupplementalGroups: []int64{3000}, FSGroup: &fsGroup, FSGroupChangePolicy: "OnRootMismatch",
				Sysctls: []Sysctl{{Name: "net.ipv4.ping_group_range", Value: "0 2147483647"}},
			}},
			{Kind: KindConfigMap, UID: "7a2d", Namespace: "default", Name: "cfg", Version: "99",
				ConfigMap: &ConfigMap{Data: map[string]string{"a.conf": "x=1"}}},
		},
		Deletes: []ObjectRef{{Kind: KindPod, UID: "0ld"}},
	}
}

// podFieldsSync is sampleSync with envFrom, the downward API's resources
// and metadata, namespaces, a deadline, pod-level resources, a terminal
// and a finished phase.
func podFieldsSync() *Sync {
	s := sampleSync()
	p := s.Upserts[0].Pod
	c := &p.Containers[0]
	c.EnvFrom = []EnvFromSource{{ConfigMap: "cfg"}, {Prefix: "S_", Secret: "s", Optional: true}}
	c.Env = append(c.Env, EnvVar{Name: "MEM", From: &EnvSource{Resource: &ResourceRef{Resource: ResourceLimitsMemory, Divisor: 1 << 20}}})
	c.RequestCPUMillis, c.RequestMemoryBytes, c.Stdin, c.StdinOnce, c.TTY = 100, 32<<20, true, true, true
	p.Labels, p.Annotations = map[string]string{"app": "web"}, map[string]string{"note": "x"}
	p.ActiveDeadlineSeconds, p.Finished = 60, "Succeeded"
	p.Namespaces = &PodNamespaces{PID: PIDPod, HostIPC: true}
	p.Resources = &PodResources{CPUMillis: 500, MemoryBytes: 128 << 20}
	p.Volumes = append(p.Volumes, Volume{Name: "info", Projected: &Projected{Sources: []ProjectedSource{{DownwardAPI: []FieldFile{
		{Path: "labels", Field: "metadata.labels"}, {Path: "cpu", Resource: &ResourceRef{Container: "web", Resource: ResourceLimitsCPU, Divisor: 1}}}}}}})
	return s
}

func TestSyncRejectsInconsistentObjects(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(s *Sync)
	}{
		{"pod kind with configmap body", func(s *Sync) { s.Upserts[0].Pod, s.Upserts[0].ConfigMap = nil, &ConfigMap{} }},
		{"two bodies", func(s *Sync) { s.Upserts[1].Secret = &Secret{} }},
		{"no containers", func(s *Sync) { s.Upserts[0].Pod.Containers = nil }},
		{"bad restart policy", func(s *Sync) { s.Upserts[0].Pod.RestartPolicy = "Sometimes" }},
		{"no image", func(s *Sync) { s.Upserts[0].Pod.Containers[0].Image = "" }},
		{"env with two sources", func(s *Sync) {
			s.Upserts[0].Pod.Containers[0].Env[2].From.Field = "metadata.name"
		}},
		{"probe without handler", func(s *Sync) { s.Upserts[0].Pod.Containers[0].LivenessProbe.HTTPGet = nil }},
		{"hook without action", func(s *Sync) { s.Upserts[0].Pod.Containers[0].PostStart.Exec = nil }},
		{"hook with two actions", func(s *Sync) { s.Upserts[0].Pod.Containers[0].PreStop.SleepSeconds = 1 }},
		{"negative sleep hook", func(s *Sync) { s.Upserts[0].Pod.InitContainers[0].PreStop.SleepSeconds = -1 }},
		{"hook port out of range", func(s *Sync) { s.Upserts[0].Pod.Containers[0].PreStop.HTTPGet.Port = 70000 }},
		{"regular container as sidecar", func(s *Sync) { s.Upserts[0].Pod.Containers[0].Sidecar = true }},
		{"volume without source", func(s *Sync) { s.Upserts[0].Pod.Volumes[0].ConfigMap = nil }},
		{"fsGroup ownership of a configMap volume", func(s *Sync) { s.Upserts[0].Pod.Volumes[0].FSGroupOwned = true }},
		{"seccomp of unknown type", func(s *Sync) { s.Upserts[0].Pod.Containers[0].Seccomp.Type = "Strict" }},
		{"localhost seccomp without a name", func(s *Sync) { s.Upserts[0].Pod.Containers[0].Seccomp.LocalhostProfile = "" }},
		{"localhost seccomp name too long", func(s *Sync) {
			s.Upserts[0].Pod.Containers[0].Seccomp.LocalhostProfile = strings.Repeat("a", 4097)
		}},
		{"runtime default seccomp with a name", func(s *Sync) { s.Upserts[0].Pod.Containers[0].Seccomp.Type = SeccompRuntimeDefault }},
		{"negative supplemental group", func(s *Sync) { s.Upserts[0].Pod.SupplementalGroups = []int64{-1} }},
		{"fsGroup out of range", func(s *Sync) { g := int64(1 << 32); s.Upserts[0].Pod.FSGroup = &g }},
		{"too many groups", func(s *Sync) { s.Upserts[0].Pod.SupplementalGroups = make([]int64, 65) }},
		{"bad fsGroupChangePolicy", func(s *Sync) { s.Upserts[0].Pod.FSGroupChangePolicy = "Sometimes" }},
		{"sysctl without a name", func(s *Sync) { s.Upserts[0].Pod.Sysctls[0].Name = "" }},
		{"too many sysctls", func(s *Sync) { s.Upserts[0].Pod.Sysctls = make([]Sysctl, 65) }},
		{"envFrom naming two objects", func(s *Sync) {
			s.Upserts[0].Pod.Containers[0].EnvFrom = []EnvFromSource{{ConfigMap: "a", Secret: "b"}}
		}},
		{"envFrom naming none", func(s *Sync) { s.Upserts[0].Pod.Containers[0].EnvFrom = []EnvFromSource{{Prefix: "P_"}} }},
		{"resourceFieldRef of an unknown resource", func(s *Sync) {
			s.Upserts[0].Pod.Containers[0].Env[1].From = &EnvSource{Resource: &ResourceRef{Resource: "limits.gpu"}}
		}},
		{"env with a field and a resource", func(s *Sync) {
			s.Upserts[0].Pod.Containers[0].Env[1].From.Resource = &ResourceRef{Resource: ResourceLimitsCPU}
		}},
		{"downward file with neither field nor resource", func(s *Sync) {
			s.Upserts[0].Pod.Volumes = append(s.Upserts[0].Pod.Volumes, Volume{Name: "info", Projected: &Projected{Sources: []ProjectedSource{{DownwardAPI: []FieldFile{{Path: "x"}}}}}})
		}},
		{"downward resource file without a container", func(s *Sync) {
			s.Upserts[0].Pod.Volumes = append(s.Upserts[0].Pod.Volumes, Volume{Name: "info", Projected: &Projected{Sources: []ProjectedSource{{DownwardAPI: []FieldFile{
				{Path: "x", Resource: &ResourceRef{Resource: ResourceLimitsMemory}}}}}}})
		}},
		{"unknown PID namespace mode", func(s *Sync) { s.Upserts[0].Pod.Namespaces = &PodNamespaces{PID: "Node"} }},
		{"unknown finished phase", func(s *Sync) { s.Upserts[0].Pod.Finished = "Running" }},
		{"negative activeDeadlineSeconds", func(s *Sync) { s.Upserts[0].Pod.ActiveDeadlineSeconds = -1 }},
		{"negative pod-level limit", func(s *Sync) { s.Upserts[0].Pod.Resources = &PodResources{MemoryBytes: -1} }},
		{"too many labels", func(s *Sync) {
			s.Upserts[0].Pod.Labels = map[string]string{}
			for i := range 257 {
				s.Upserts[0].Pod.Labels[fmt.Sprint("k", i)] = "v"
			}
		}},
		{"annotations too large", func(s *Sync) { s.Upserts[0].Pod.Annotations = map[string]string{"a": strings.Repeat("x", 256<<10)} }},
		{"complete without initial", func(s *Sync) { s.Initial = false }},
		{"delete without uid", func(s *Sync) { s.Deletes[0].UID = "" }},
		{"no uid", func(s *Sync) { s.Upserts[1].UID = "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := sampleSync()
			tt.mutate(s)
			if err := s.Validate(); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func samplePodStatus() *PodStatus {
	return &PodStatus{
		UID: "6f1c", Namespace: "default", Name: "web-1", Phase: "Running", PodIP: "192.0.2.10", HostIP: "192.0.2.10",
		StartTime:  1764100000,
		Conditions: []Condition{{Type: "Ready", Status: "True"}, {Type: "ContainersReady", Status: "True"}},
		Containers: []ContainerStatus{{
			Name: "web", Image: "registry.local/busybox:1", ImageID: "registry.local/busybox@sha256:abc",
			ContainerID: "containerd://0123", Ready: true, Started: true, RestartCount: 2,
			State:     ContainerState{Kind: StateRunning, StartedAt: 1764100001000},
			LastState: ContainerState{Kind: StateTerminated, Reason: "Error", ExitCode: 1, FinishedAt: 1764100000500},
		}},
	}
}

func TestPodStatusRejects(t *testing.T) {
	for name, mutate := range map[string]func(*PodStatus){
		"no uid":             func(s *PodStatus) { s.UID = "" },
		"bad phase":          func(s *PodStatus) { s.Phase = "Sleeping" },
		"state without kind": func(s *PodStatus) { s.Containers[0].State = ContainerState{} },
		"unknown state kind": func(s *PodStatus) { s.Containers[0].LastState.Kind = 9 },
		"negative restarts":  func(s *PodStatus) { s.Containers[0].RestartCount = -1 },
	} {
		s := samplePodStatus()
		mutate(s)
		if s.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if (&StreamData{ID: 1, Data: make([]byte, MaxStreamChunk+1)}).Validate() == nil {
		t.Error("oversized stream chunk accepted")
	}
}

func sampleTwin() *TwinReport {
	return &TwinReport{Device: "default/bme", Values: []TwinValue{{Name: "temperature", Num: 21.5, At: 1764100000123}},
		Conditions: []Condition{{Type: "Connected", Status: "True"}}}
}

func sampleShortTwin() *TwinReport {
	return &TwinReport{ID: 3, Short: []ShortValue{{Index: 0, Num: 21.53, Age: 12}},
		Values: []TwinValue{{Name: "humidity", Num: 40, At: 1764100000123}}}
}

func sampleDeviceObject() Object {
	return Object{Kind: KindDevice, UID: "d1", Namespace: "default", Name: "bme", Version: "5.3", LinkID: 3, Device: &Device{
		Driver: "bme280", Bus: "I2C1", Address: 0x76, Properties: []DeviceProperty{{Name: "temperature"}}}}
}

func TestTwinReportValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		r    TwinReport
		ok   bool
	}{
		{"by name", TwinReport{Device: "default/bme"}, true},
		{"by link id", TwinReport{ID: 1, Short: []ShortValue{{Index: 63, Num: 1, Age: 1 << 40}}}, true},
		{"by link id with names and conditions", TwinReport{ID: MaxLinkID, Values: []TwinValue{{Name: "x", Num: 1}},
			Conditions: []Condition{{Type: "Connected", Status: "True"}}}, true},
		{"no device", TwinReport{}, false},
		{"name and link id", TwinReport{Device: "default/bme", ID: 1}, false},
		{"link id too large", TwinReport{ID: MaxLinkID + 1}, false},
		{"short values without link id", TwinReport{Device: "default/bme", Short: []ShortValue{{Num: 1}}}, false},
		{"index out of range", TwinReport{ID: 1, Short: []ShortValue{{Index: 64, Num: 1}}}, false},
		{"age out of range", TwinReport{ID: 1, Short: []ShortValue{{Num: 1, Age: 1<<40 + 1}}}, false},
		{"not a number", TwinReport{ID: 1, Short: []ShortValue{{Num: math.NaN()}}}, false},
		{"infinite", TwinReport{ID: 1, Short: []ShortValue{{Num: math.Inf(-1)}}}, false},
		{"too many values", TwinReport{ID: 1, Short: make([]ShortValue, 33), Values: slices.Repeat([]TwinValue{{Name: "x"}}, 32)}, false},
	} {
		if err := tt.r.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
	o := sampleDeviceObject()
	o.LinkID = MaxLinkID + 1
	if o.Validate() == nil {
		t.Error("object: link id out of range accepted")
	}
	o = sampleSync().Upserts[0]
	o.LinkID = 1
	if o.Validate() == nil {
		t.Error("object: link id on a pod accepted")
	}
}

// A twin update on the link by link id, conditions unchanged: the frame
// the agent sends for one changed property.
func TestShortTwinUpdateSize(t *testing.T) {
	up, err := Encode(TypeTwinReport, 1234, &TwinReport{ID: 7, Short: []ShortValue{{Index: 0, Num: 21.53, Age: 250}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("short twin update: %d B up (CBOR only)", len(up))
	if len(up) > 27 {
		t.Fatalf("short twin update is %d B of CBOR", len(up))
	}
}

// The peer's figure to beat is 883 B for one twin property update, round
// trip; this is the CBOR part of ours.
func TestTwinUpdateSize(t *testing.T) {
	up, _ := Encode(TypeTwinReport, 1234, &TwinReport{Device: "default/bme", Values: []TwinValue{{Name: "temperature", Num: 21.5, At: 1764100000123}}})
	ack, _ := EncodeFrame(Frame{Type: TypeAck, Ack: 1234})
	t.Logf("twin update: %d B up, %d B ack (CBOR only)", len(up), len(ack))
	if len(up)+len(ack) > 60 {
		t.Fatalf("twin update round trip is %d B of CBOR", len(up)+len(ack))
	}
}

func TestDeviceObject(t *testing.T) {
	o := Object{Kind: KindDevice, UID: "d1", Namespace: "default", Name: "bme", Version: "5", Device: &Device{
		Driver: "bme280", Bus: "I2C1", Address: 0x76,
		Properties: []DeviceProperty{{Name: "temperature", Type: "float", Unit: "Cel", Access: "ReadOnly", PollMillis: 1000, ReportMillis: 5000, Deadband: 0.1}},
	}}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	o.Device.Properties[0].Access = "WriteOnly"
	if o.Validate() == nil {
		t.Fatal("bad access accepted")
	}
	o.Device.Properties[0].Access = "ReadOnly"
	o.Pod = &Pod{}
	if o.Validate() == nil {
		t.Fatal("two bodies accepted")
	}
}

// TestPathNamesRejected checks that every name the agent turns into a
// path on the gateway is refused at decode unless it is a Kubernetes
// identifier, and that ordinary names pass.
func TestPathNamesRejected(t *testing.T) {
	pod := func(s *Sync) *Pod { return s.Upserts[0].Pod }
	tests := []struct {
		name   string
		mutate func(s *Sync)
		want   string // "" means valid
	}{
		{"uuid uid", func(s *Sync) { s.Upserts[0].UID = "0b5a3c4e-8f1d-4a7b-9c2e-1d3f5a7b9c0d" }, ""},
		{"uid with ..", func(s *Sync) { s.Upserts[0].UID = "../../etc" }, "not a UID"},
		{"uid with /", func(s *Sync) { s.Upserts[0].UID = "a/b" }, "not a UID"},
		{"namespace ..", func(s *Sync) { s.Upserts[0].Namespace = ".." }, "namespace \"..\" is not a DNS-1123 label"},
		{"namespace with _", func(s *Sync) { s.Upserts[0].Namespace = "a_b" }, "not a DNS-1123 label"},
		{"pod name with /", func(s *Sync) { s.Upserts[0].Name = "web/../../x" }, "not a DNS-1123 subdomain"},
		{"pod name glob", func(s *Sync) { s.Upserts[0].Name = "*" }, "not a DNS-1123 subdomain"},
		{"pod name dotted", func(s *Sync) { s.Upserts[0].Name = "web.v1" }, ""},
		{"container name ..", func(s *Sync) { pod(s).Containers[0].Name = ".." }, "container: name \"..\" is not a DNS-1123 label"},
		{"two containers alike", func(s *Sync) {
			pod(s).InitContainers = []Container{{Name: "web", Image: "i"}}
		}, `two containers named "web"`},
		{"volume name with /", func(s *Sync) { pod(s).Volumes[0].Name = "a/b" }, "volume: name \"a/b\" is not a DNS-1123 label"},
		{"two volumes alike", func(s *Sync) { pod(s).Volumes = append(pod(s).Volumes, Volume{Name: "cfg", EmptyDir: &EmptyDir{}}) }, `two volumes named "cfg"`},
		{"mount of a bad volume name", func(s *Sync) { pod(s).Containers[0].Mounts[0].Name = "../cfg" }, "volume mount \"../cfg\" is not a DNS-1123 label"},
		{"subPath ..", func(s *Sync) { pod(s).Containers[0].Mounts[0].SubPath = "a/../../b" }, "subPath \"a/../../b\" must not contain '..'"},
		{"subPath absolute", func(s *Sync) { pod(s).Containers[0].Mounts[0].SubPath = "/etc" }, "must be a relative path"},
		{"subPath with dots in a name", func(s *Sync) { pod(s).Containers[0].Mounts[0].SubPath = "a..b/c" }, ""},
		{"propagation HostToContainer", func(s *Sync) { pod(s).Containers[0].Mounts[0].Propagation = PropagationHostToContainer }, ""},
		{"propagation Bidirectional unprivileged", func(s *Sync) { pod(s).Containers[0].Mounts[0].Propagation = PropagationBidirectional }, "Bidirectional propagation needs a privileged container"},
		{"propagation Bidirectional privileged", func(s *Sync) {
			pod(s).Containers[0].Privileged = true
			pod(s).Containers[0].Mounts[0].Propagation = PropagationBidirectional
		}, ""},
		{"propagation unknown", func(s *Sync) { pod(s).Containers[0].Mounts[0].Propagation = "Sideways" }, "unknown propagation"},
		{"item path ..", func(s *Sync) {
			pod(s).Volumes[0].ConfigMap.Items = []KeyToPath{{Key: "a", Path: "../a"}}
		}, "must not start with '..'"},
		{"item path ..data", func(s *Sync) {
			pod(s).Volumes[0].ConfigMap.Items = []KeyToPath{{Key: "a", Path: "..data/a"}}
		}, "must not start with '..'"},
		{"item path inner ..", func(s *Sync) {
			pod(s).Volumes[0].ConfigMap.Items = []KeyToPath{{Key: "a", Path: "x/../../a"}}
		}, "must not contain '..'"},
		{"item path absolute", func(s *Sync) {
			pod(s).Volumes[0].ConfigMap.Items = []KeyToPath{{Key: "a", Path: "/etc/a"}}
		}, "must be a relative path"},
		{"item path nested", func(s *Sync) {
			pod(s).Volumes[0].ConfigMap.Items = []KeyToPath{{Key: "a", Path: "conf.d/a.conf"}}
		}, ""},
		{"item key with /", func(s *Sync) {
			pod(s).Volumes[0].ConfigMap.Items = []KeyToPath{{Key: "a/b", Path: "a"}}
		}, "not a valid key"},
		{"downward API path", func(s *Sync) {
			pod(s).Volumes[0] = Volume{Name: "cfg", Projected: &Projected{Sources: []ProjectedSource{{DownwardAPI: []FieldFile{{Path: "../name", Field: "metadata.name"}}}}}}
		}, "downward API path"},
		{"token path", func(s *Sync) {
			pod(s).Volumes[0] = Volume{Name: "cfg", Projected: &Projected{Sources: []ProjectedSource{{ServiceAccountToken: &TokenSource{Path: "/token"}}}}}
		}, "token path"},
		{"hostname", func(s *Sync) { pod(s).Hostname = "a\n1.2.3.4 evil" }, "hostname"},
		{"configmap key ..data", func(s *Sync) { s.Upserts[1].ConfigMap.Data["..data"] = "x" }, "not a valid key"},
		{"configmap key with /", func(s *Sync) { s.Upserts[1].ConfigMap.Data["a/b"] = "x" }, "not a valid key"},
		{"configmap name", func(s *Sync) { s.Upserts[1].Name = "Cfg" }, "not a DNS-1123 subdomain"},
		{"secret key", func(s *Sync) {
			s.Upserts[1].ConfigMap, s.Upserts[1].Kind = nil, KindSecret
			s.Upserts[1].Secret = &Secret{Data: map[string][]byte{"../pw": nil}}
		}, "secret: key"},
		{"token object", func(s *Sync) {
			s.Upserts[1].ConfigMap, s.Upserts[1].Kind = nil, KindToken
			s.Upserts[1].Token = &PodTokens{Items: []Token{{Volume: "../v", Path: "token", Token: "t", Expires: 1}}}
		}, "token: volume"},
		{"device name with capitals", func(s *Sync) {
			s.Upserts[1].ConfigMap, s.Upserts[1].Kind, s.Upserts[1].Name = nil, KindDevice, "BME-1"
			s.Upserts[1].Device = &Device{Driver: "bme280"}
		}, "not a DNS-1123 subdomain"},
		{"device name with /", func(s *Sync) {
			s.Upserts[1].ConfigMap, s.Upserts[1].Kind, s.Upserts[1].Name = nil, KindDevice, "a/b"
			s.Upserts[1].Device = &Device{Driver: "bme280"}
		}, "not a DNS-1123 subdomain"},
		{"device name with an MQTT wildcard", func(s *Sync) {
			s.Upserts[1].ConfigMap, s.Upserts[1].Kind, s.Upserts[1].Name = nil, KindDevice, "temp#1"
			s.Upserts[1].Device = &Device{Driver: "bme280"}
		}, "not a DNS-1123 subdomain"},
		{"device name with a glob character", func(s *Sync) {
			s.Upserts[1].ConfigMap, s.Upserts[1].Kind, s.Upserts[1].Name = nil, KindDevice, "*0"
			s.Upserts[1].Device = &Device{Driver: "bme280"}
		}, "not a DNS-1123 subdomain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := sampleSync()
			tt.mutate(s)
			raw, err := encMode.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			b, err := EncodeFrame(Frame{Type: TypeSync, Body: raw})
			if err != nil {
				t.Fatal(err)
			}
			f, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			err = f.DecodeBody(&Sync{})
			if tt.want == "" {
				if err != nil {
					t.Fatalf("DecodeBody = %v, want it accepted", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("DecodeBody = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
}

func TestStreamOpenNames(t *testing.T) {
	for _, o := range []StreamOpen{
		{ID: 1, Namespace: "..", Pod: "p"},
		{ID: 1, Namespace: "default", Pod: "*"},
		{ID: 1, Namespace: "default", Pod: "p", Container: "../../x"},
	} {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	ok := StreamOpen{ID: 1, Namespace: "default", Pod: "web-1.v2", Container: "app"}
	if err := ok.Validate(); err != nil {
		t.Error(err)
	}
}

func TestCertMessagesBounded(t *testing.T) {
	for _, b := range []Body{
		&CertRequest{}, &CertRequest{CSR: make([]byte, maxCertDER+1)},
		&CertIssued{}, &CertIssued{Certificate: make([]byte, maxCertDER+1)},
	} {
		if err := b.Validate(); err == nil {
			t.Errorf("%T with an empty or oversized DER validated", b)
		}
	}
	if !TypeCertRequest.Known() || !TypeCertIssued.Known() || TypeCertRequest.String() != "cert-request" {
		t.Fatal("rotation types unknown to this build")
	}
}

func TestNodeConfig(t *testing.T) {
	for _, tt := range []struct {
		cidrs []string
		ok    bool
	}{
		{nil, true},
		{[]string{"10.244.3.0/24"}, true},
		{[]string{"10.244.3.0/24", "fd00::/64"}, true},
		{[]string{"10.244.3.0"}, false},
		{[]string{"a", "b", "c"}, false},
		{[]string{"10.0.0.0/8", "10.1.0.0/16", "fd00::/64"}, false},
	} {
		b, err := Encode(TypeNodeConfig, 0, &NodeConfig{PodCIDRs: tt.cidrs})
		if !tt.ok {
			if err == nil {
				f, derr := Decode(b)
				var c NodeConfig
				if derr == nil && f.DecodeBody(&c) == nil {
					t.Errorf("%v: accepted", tt.cidrs)
				}
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v", tt.cidrs, err)
		}
		f, err := Decode(b)
		var c NodeConfig
		if err != nil || f.DecodeBody(&c) != nil || len(c.PodCIDRs) != len(tt.cidrs) {
			t.Errorf("%v: decoded %v, %v", tt.cidrs, c.PodCIDRs, err)
		}
	}
}
