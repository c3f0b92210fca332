package wire

import (
	"slices"
	"strings"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to the frame and body decoders. Nothing
// may panic, and whatever decodes and validates must re-encode.
func FuzzDecode(f *testing.F) {
	for _, c := range []struct {
		t Type
		b Body
	}{
		{TypeHello, sampleHello()},
		{TypeHelloAck, &HelloAck{Version: 1, NodeName: "n", HeartbeatSeconds: 10}},
		{TypeHeartbeat, nil},
		{TypeNodeConfig, &NodeConfig{PodCIDRs: []string{"10.244.3.0/24", "fd00:10:244:3::/64"}}},
		{TypeError, &Error{Code: CodeMalformed, Reason: "x"}},
		{TypeNodeStatus, &NodeStatus{Node: sampleHello().Node}},
		{TypeSync, sampleSync()},
		{TypePodStatus, samplePodStatus()},
		{TypeTwinReport, sampleTwin()},
		{TypeTwinReport, sampleShortTwin()},
		{TypeSync, &Sync{Upserts: []Object{sampleDeviceObject()}}},
		{TypeStreamOpen, &StreamOpen{ID: 1, Namespace: "ns", Pod: "p", Follow: true, TailLines: 10}},
		{TypeStreamData, &StreamData{ID: 1, Data: []byte("hello\n")}},
		{TypeCertRequest, &CertRequest{CSR: []byte{0x30, 0x82, 0x01, 0x00}}},
		{TypeCertIssued, &CertIssued{Certificate: []byte{0x30, 0x82, 0x02, 0x00}}},
		{TypeTunnelOpen, &TunnelOpen{ID: 1, Kind: TunnelExec, Namespace: "ns", Pod: "p", Container: "c", Command: []string{"sh", "-c", "exit 3"}, Stdin: true, Stdout: true, TTY: true}},
		{TypeTunnelOpen, &TunnelOpen{ID: 2, Kind: TunnelPortForward, Namespace: "ns", Pod: "p", Port: 8080}},
		{TypeTunnelData, &TunnelData{ID: 1, Channel: ChanStderr, Data: []byte("x"), EOF: true}},
		{TypeTunnelAck, &TunnelAck{ID: 1, Consumed: 1 << 20}},
		{TypeTunnelResize, &TunnelResize{ID: 1, Width: 80, Height: 24}},
		{TypeTunnelClose, &TunnelClose{ID: 1, Exited: true, ExitCode: 3}},
		{TypeStatsRequest, &StatsRequest{ID: 1}},
		{TypeStatsResponse, sampleStats()},
		{TypeStatsResponse, &StatsResponse{ID: 2, Error: "containerd is not reachable"}},
		{TypeUpgradeOffer, sampleOffer()},
		{TypeUpgradeChunkRequest, &UpgradeChunkRequest{Version: "1.2.0", Offset: 65536, Length: MaxUpgradeWindow}},
		{TypeUpgradeChunk, &UpgradeChunk{Version: "1.2.0", Offset: 32768, Data: []byte("ELF")}},
		{TypeUpgradeChunk, &UpgradeChunk{Version: "1.2.0", Offset: 0, Error: "artifact unavailable"}},
		{TypeUpgradeReport, &UpgradeReport{Name: "agent-1.2", Version: "1.2.0", Phase: UpgradeFailed, Reason: "signature"}},
	} {
		b, err := Encode(c.t, 7, c.b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// Names and paths that must never pass: the fuzzer mutates from here.
	hostile := sampleSync()
	hostile.Upserts[0].UID = "../../x"
	hostile.Upserts[0].Pod.Containers[0].Mounts[0].SubPath = "../../etc"
	hostile.Upserts[0].Pod.Volumes[0].ConfigMap.Items = []KeyToPath{{Key: "a", Path: "..data/a"}}
	if raw, err := encMode.Marshal(hostile); err == nil {
		if b, err := EncodeFrame(Frame{Type: TypeSync, Body: raw}); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte{0xa2, 0x01, 0x01, 0x04, 0x5a, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := Decode(data)
		if err != nil {
			return
		}
		bodies := []Body{&Hello{}, &HelloAck{}, &Heartbeat{}, &Error{}, &NodeStatus{}, &Ack{}, &Sync{}, &PodStatus{}, &StreamOpen{}, &StreamData{}, &StreamAck{}, &TwinReport{}, &CertRequest{}, &CertIssued{},
			&TunnelOpen{}, &TunnelData{}, &TunnelAck{}, &TunnelResize{}, &TunnelClose{},
			&StatsRequest{}, &StatsResponse{}, &NodeConfig{},
			&UpgradeOffer{}, &UpgradeChunkRequest{}, &UpgradeChunk{}, &UpgradeReport{}}
		for _, b := range bodies {
			if fr.DecodeBody(b) == nil {
				if _, err := Encode(fr.Type, fr.Seq, b); err != nil {
					t.Fatalf("valid %T does not re-encode: %v", b, err)
				}
				checkPathNames(t, b)
			}
		}
	})
}

// checkPathNames fails if a body that validated holds a name or path
// that could leave the directory the agent puts it in.
func checkPathNames(t *testing.T, b Body) {
	t.Helper()
	bad := func(what, s string) {
		if s == "." || s == ".." || strings.Contains(s, "/") || strings.ContainsAny(s, "*?[\x00") {
			t.Fatalf("valid %T holds %s %q", b, what, s)
		}
	}
	badPath := func(what, p string) {
		if strings.HasPrefix(p, "/") || slices.Contains(strings.Split(p, "/"), "..") || strings.HasPrefix(p, "..") {
			t.Fatalf("valid %T holds %s %q", b, what, p)
		}
	}
	switch b := b.(type) {
	case *Sync:
		for _, o := range b.Upserts {
			bad("uid", o.UID)
			bad("namespace", o.Namespace)
			bad("name", o.Name)
			if o.Pod == nil {
				continue
			}
			for _, c := range append(append([]Container{}, o.Pod.InitContainers...), o.Pod.Containers...) {
				bad("container name", c.Name)
				for _, m := range c.Mounts {
					bad("mount name", m.Name)
					if strings.HasPrefix(m.SubPath, "/") || slices.Contains(strings.Split(m.SubPath, "/"), "..") {
						t.Fatalf("valid sync holds subPath %q", m.SubPath)
					}
				}
			}
			for _, v := range o.Pod.Volumes {
				bad("volume name", v.Name)
				for _, f := range []*FilesVolume{v.ConfigMap, v.Secret} {
					if f != nil {
						for _, it := range f.Items {
							badPath("item path", it.Path)
						}
					}
				}
			}
		}
	case *StreamOpen:
		bad("namespace", b.Namespace)
		bad("pod", b.Pod)
		bad("container", b.Container)
	case *UpgradeOffer:
		bad("version", b.Version)
	case *UpgradeChunkRequest:
		bad("version", b.Version)
	case *UpgradeChunk:
		bad("version", b.Version)
	case *UpgradeReport:
		bad("version", b.Version)
	case *TunnelOpen:
		bad("namespace", b.Namespace)
		bad("pod", b.Pod)
		bad("container", b.Container)
	}
}
