package wire

import (
	"errors"
	"strings"
	"testing"
)

func sampleStats() *StatsResponse {
	return &StatsResponse{ID: 1, Node: &Usage{At: 1_800_000_000_000_000_000, CPUNanos: 5e9, MemoryWorkingSet: 64 << 20},
		Containers: []ContainerUsage{{Namespace: "ns", Pod: "p", Container: "c", StartTime: 1_800_000_000,
			Usage: Usage{At: 1_800_000_000_000_000_000, CPUNanos: 1e6, MemoryWorkingSet: 1 << 20},
			Logs:  &FsUsage{At: 1_800_000_000_000_000_000, CapacityBytes: 1 << 30, AvailableBytes: 1 << 29, UsedBytes: 4096}}},
		NodeFs: &FsUsage{At: 1_800_000_000_000_000_000, CapacityBytes: 1 << 30, AvailableBytes: 1 << 29, UsedBytes: 1 << 29, Inodes: 1000, InodesFree: 900},
		Pods:   []PodUsage{{Namespace: "ns", Pod: "p", Network: &NetworkUsage{At: 1_800_000_000_000_000_000, Interface: "eth0", RxBytes: 1234, TxBytes: 567}}}}
}

func TestStatsRoundTrip(t *testing.T) {
	b, err := Encode(TypeStatsResponse, 0, sampleStats())
	if err != nil {
		t.Fatal(err)
	}
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	var got StatsResponse
	if err := f.DecodeBody(&got); err != nil {
		t.Fatal(err)
	}
	if got.Node.CPUNanos != 5e9 || len(got.Containers) != 1 || got.Containers[0].Usage.MemoryWorkingSet != 1<<20 ||
		got.Containers[0].Logs.UsedBytes != 4096 || got.NodeFs.InodesFree != 900 || len(got.Pods) != 1 || got.Pods[0].Network.RxBytes != 1234 {
		t.Fatalf("round trip: %+v", got)
	}
}

func TestStatsInvalid(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*StatsResponse)
		want string
	}{
		{"no id", func(r *StatsResponse) { r.ID = 0 }, "no id"},
		{"nothing", func(r *StatsResponse) { r.Node = nil }, "neither"},
		{"node time", func(r *StatsResponse) { r.Node.At = 0 }, "time"},
		{"bad pod", func(r *StatsResponse) { r.Containers[0].Pod = "../x" }, "pod"},
		{"bad container", func(r *StatsResponse) { r.Containers[0].Container = "" }, "container"},
		{"logs time", func(r *StatsResponse) { r.Containers[0].Logs.At = 0 }, "logs"},
		{"node fs free over size", func(r *StatsResponse) { r.NodeFs.AvailableBytes = 2 << 30 }, "free of"},
		{"pod name", func(r *StatsResponse) { r.Pods[0].Pod = "a/b" }, "pod"},
		{"interface name", func(r *StatsResponse) { r.Pods[0].Network.Interface = "../eth0" }, "interface name"},
		{"interface name length", func(r *StatsResponse) { r.Pods[0].Network.Interface = "a-very-long-ifname" }, "interface name"},
		{"too many pods", func(r *StatsResponse) {
			r.Pods = make([]PodUsage, MaxStatsContainers+1)
			for i := range r.Pods {
				r.Pods[i] = sampleStats().Pods[0]
			}
		}, "limit"},
		{"too many", func(r *StatsResponse) {
			r.Containers = make([]ContainerUsage, MaxStatsContainers+1)
			for i := range r.Containers {
				r.Containers[i] = sampleStats().Containers[0]
			}
		}, "limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := sampleStats()
			tc.mod(r)
			err := r.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
			raw, merr := encMode.Marshal(r)
			if merr != nil {
				t.Fatal(merr)
			}
			b, ferr := EncodeFrame(Frame{Type: TypeStatsResponse, Body: raw})
			if ferr != nil {
				return // too large to frame at all
			}
			f, derr := Decode(b)
			if derr != nil {
				return
			}
			if err := f.DecodeBody(&StatsResponse{}); !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("DecodeBody = %v, want refused", err)
			}
		})
	}
	if err := (&StatsRequest{}).Validate(); err == nil {
		t.Fatal("a stats request without an id validated")
	}
}
