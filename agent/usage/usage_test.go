package usage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"outpost.dev/wire"
)

func write(t *testing.T, name, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

var at = time.Unix(1_800_000_000, 5)

func TestCgroupV2(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "cgroup.controllers"), "cpu memory\n")
	dir := filepath.Join(root, "outpost", "pod-x", "c1")
	write(t, filepath.Join(dir, "cpu.stat"), "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n")
	write(t, filepath.Join(dir, "memory.current"), "10485760\n")
	write(t, filepath.Join(dir, "memory.stat"), "anon 100\nfile 4096\nactive_file 0\ninactive_file 4194304\n")
	r := &Reader{Root: root, Now: func() time.Time { return at }}
	u, err := r.Cgroup("/outpost/pod-x/c1")
	if err != nil {
		t.Fatal(err)
	}
	want := wire.Usage{At: at.UnixNano(), CPUNanos: 2_500_000, MemoryWorkingSet: 6 << 20}
	if u != want {
		t.Fatalf("Cgroup = %+v, want %+v", u, want)
	}
}

func TestCgroupV1(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "cpuacct", "outpost", "c1", "cpuacct.usage"), "123456789\n")
	write(t, filepath.Join(root, "memory", "outpost", "c1", "memory.usage_in_bytes"), "1000\n")
	write(t, filepath.Join(root, "memory", "outpost", "c1", "memory.stat"), "inactive_file 9\ntotal_inactive_file 3000\n")
	r := &Reader{Root: root, Now: func() time.Time { return at }}
	u, err := r.Cgroup("/outpost/c1")
	if err != nil {
		t.Fatal(err)
	}
	// More inactive file pages than usage: the working set is zero.
	want := wire.Usage{At: at.UnixNano(), CPUNanos: 123456789, MemoryWorkingSet: 0}
	if u != want {
		t.Fatalf("Cgroup = %+v, want %+v", u, want)
	}
}

func TestCgroupRefused(t *testing.T) {
	r := &Reader{Root: t.TempDir()}
	for _, p := range []string{"", "/", "outpost/c1", "/outpost/../../etc", "/a//b", "system.slice:cri:x", "/a/b/"} {
		if _, err := r.Cgroup(p); err == nil || !strings.Contains(err.Error(), "cgroup path") {
			t.Errorf("Cgroup(%q) = %v, want refused", p, err)
		}
	}
	root := t.TempDir()
	write(t, filepath.Join(root, "cpuacct", "c", "cpuacct.usage"), strings.Repeat("1", maxStatFile+1))
	if _, err := (&Reader{Root: root}).Cgroup("/c"); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized file: %v", err)
	}
}

func TestNode(t *testing.T) {
	root, proc := t.TempDir(), t.TempDir()
	// user nice system idle iowait irq softirq steal guest guest_nice
	write(t, filepath.Join(proc, "stat"), "cpu  100 20 30 5000 70 1 2 3 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
	write(t, filepath.Join(proc, "meminfo"), "MemTotal:       2000 kB\nMemFree:         500 kB\nMemAvailable:   1200 kB\nInactive(file):  300 kB\n")
	r := &Reader{Root: root, Proc: proc, Now: func() time.Time { return at }}
	u, err := r.Node()
	if err != nil {
		t.Fatal(err)
	}
	want := wire.Usage{At: at.UnixNano(), CPUNanos: 156 * 10_000_000, MemoryWorkingSet: 1200 * 1024}
	if u != want {
		t.Fatalf("Node = %+v, want %+v", u, want)
	}
	// cgroup v2: the root's cpu.stat.
	write(t, filepath.Join(root, "cgroup.controllers"), "cpu\n")
	write(t, filepath.Join(root, "cpu.stat"), "usage_usec 42\n")
	if u, err = r.Node(); err != nil || u.CPUNanos != 42_000 {
		t.Fatalf("Node on cgroup v2 = %+v, %v", u, err)
	}
}

// TestNodeReal reads this machine's figures: whatever the hierarchy, the
// node has used some CPU and some memory.
func TestNodeReal(t *testing.T) {
	r := &Reader{Root: "/sys/fs/cgroup", Proc: "/proc"}
	u, err := r.Node()
	if err != nil {
		t.Fatal(err)
	}
	if u.CPUNanos == 0 || u.MemoryWorkingSet == 0 {
		t.Fatalf("Node = %+v: no usage", u)
	}
}

func TestServer(t *testing.T) {
	root, proc := t.TempDir(), t.TempDir()
	write(t, filepath.Join(proc, "stat"), "cpu  1 0 0 0 0 0 0 0 0 0\n")
	write(t, filepath.Join(proc, "meminfo"), "MemTotal: 2 kB\nMemFree: 1 kB\nInactive(file): 0 kB\n")
	write(t, filepath.Join(root, "cpuacct", "outpost", "c1", "cpuacct.usage"), "7\n")
	write(t, filepath.Join(root, "memory", "outpost", "c1", "memory.usage_in_bytes"), "8\n")
	write(t, filepath.Join(root, "memory", "outpost", "c1", "memory.stat"), "total_inactive_file 0\n")
	// The pod's process in a network namespace of its own, another on
	// the host's network (the agent's own namespace).
	link(t, "net:[4026531840]", filepath.Join(proc, "self", "ns", "net"))
	link(t, "net:[4026532999]", filepath.Join(proc, "42", "ns", "net"))
	link(t, "net:[4026531840]", filepath.Join(proc, "43", "ns", "net"))
	write(t, filepath.Join(proc, "42", "net", "dev"), netDevSample)
	write(t, filepath.Join(proc, "43", "net", "dev"), netDevSample)
	logs := t.TempDir()
	write(t, filepath.Join(logs, "c.log"), "12345")
	write(t, filepath.Join(logs, "c.log.1"), "1234567890")
	for i := range 2 {
		write(t, filepath.Join(root, "cpuacct", "outpost", "h"+fmt.Sprint(i), "cpuacct.usage"), "1\n")
		write(t, filepath.Join(root, "memory", "outpost", "h"+fmt.Sprint(i), "memory.usage_in_bytes"), "1\n")
		write(t, filepath.Join(root, "memory", "outpost", "h"+fmt.Sprint(i), "memory.stat"), "total_inactive_file 0\n")
	}
	sent := make(chan *wire.StatsResponse, 2)
	s := New(Config{
		Reader: &Reader{Root: root, Proc: proc}, NodeFs: logs, Interface: "eth0",
		Containers: func(context.Context) ([]Container, error) {
			return []Container{
				{Namespace: "ns", Pod: "p", Name: "c", Cgroup: "/outpost/c1", Created: at, Pid: 42, LogPath: filepath.Join(logs, "c.log")},
				{Namespace: "ns", Pod: "host", Name: "a", Cgroup: "/outpost/h0", Pid: 43},
				{Namespace: "ns", Pod: "host", Name: "b", Cgroup: "/outpost/h1", Pid: 43},
				{Namespace: "ns", Pod: "p", Name: "gone", Cgroup: "/outpost/c2"}, // stopped: left out
				{Namespace: "ns", Pod: "p", Name: "evil", Cgroup: "/../../etc"},  // refused
			}, nil
		},
		Send: func(ty wire.Type, _ uint64, b wire.Body) error {
			if ty != wire.TypeStatsResponse {
				t.Errorf("sent %s", ty)
			}
			sent <- b.(*wire.StatsResponse)
			return nil
		},
	})
	b, err := wire.Encode(wire.TypeStatsRequest, 0, &wire.StatsRequest{ID: 9})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := wire.Decode(b)
	if !s.Handle(f) {
		t.Fatal("stats request not handled")
	}
	s.Wait()
	r := <-sent
	if r.ID != 9 || r.Error != "" || r.Node == nil || r.Node.CPUNanos != 1e7 || len(r.Containers) != 3 {
		t.Fatalf("response %+v", r)
	}
	c := r.Containers[0]
	if c.Container != "c" || c.Usage.CPUNanos != 7 || c.Usage.MemoryWorkingSet != 8 || c.StartTime != at.Unix() {
		t.Fatalf("container %+v", c)
	}
	// Its log: the file and the rotated one, on a file system with room.
	if c.Logs == nil || c.Logs.UsedBytes != 15 || c.Logs.CapacityBytes == 0 || c.Logs.AvailableBytes > c.Logs.CapacityBytes {
		t.Fatalf("container logs %+v", c.Logs)
	}
	if r.Containers[1].Logs != nil {
		t.Fatalf("logs %+v for a container without a log", r.Containers[1].Logs)
	}
	if r.NodeFs == nil || r.NodeFs.CapacityBytes == 0 || r.NodeFs.UsedBytes > r.NodeFs.CapacityBytes || r.NodeFs.Inodes == 0 {
		t.Fatalf("node fs %+v", r.NodeFs)
	}
	// One entry per pod; the host-network pod's traffic is not its own.
	if len(r.Pods) != 2 || r.Pods[0].Pod != "p" || r.Pods[1].Pod != "host" || r.Pods[1].Network != nil {
		t.Fatalf("pods %+v", r.Pods)
	}
	if n := r.Pods[0].Network; n == nil || *n != (wire.NetworkUsage{At: n.At, Interface: "eth0", RxBytes: 11817, RxErrors: 2, TxBytes: 4486, TxErrors: 1}) || n.At <= 0 {
		t.Fatalf("pod network %+v", n)
	}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	hb, _ := wire.Encode(wire.TypeHeartbeat, 0, nil)
	if f, _ := wire.Decode(hb); s.Handle(f) {
		t.Fatal("a heartbeat was taken for a stats request")
	}
}

// TestServerOneAtATime: a request while a collection runs is answered at
// once with an error, not queued.
func TestServerOneAtATime(t *testing.T) {
	proc := t.TempDir()
	write(t, filepath.Join(proc, "stat"), "cpu  1 0 0 0 0 0 0 0 0 0\n")
	write(t, filepath.Join(proc, "meminfo"), "MemTotal: 2 kB\nMemFree: 1 kB\nInactive(file): 0 kB\n")
	release := make(chan struct{})
	listing := make(chan struct{})
	sent := make(chan *wire.StatsResponse, 2)
	s := New(Config{
		Reader: &Reader{Root: t.TempDir(), Proc: proc},
		Containers: func(context.Context) ([]Container, error) {
			close(listing)
			<-release
			return nil, nil
		},
		Send: func(_ wire.Type, _ uint64, b wire.Body) error { sent <- b.(*wire.StatsResponse); return nil },
	})
	frame := func(id uint32) wire.Frame {
		b, err := wire.Encode(wire.TypeStatsRequest, 0, &wire.StatsRequest{ID: id})
		if err != nil {
			t.Fatal(err)
		}
		f, _ := wire.Decode(b)
		return f
	}
	s.Handle(frame(1))
	<-listing
	s.Handle(frame(2))
	if r := <-sent; r.ID != 2 || !strings.Contains(r.Error, "already running") {
		t.Fatalf("second request: %+v", r)
	}
	close(release)
	s.Wait()
	if r := <-sent; r.ID != 1 || r.Error != "" || r.Node == nil {
		t.Fatalf("first request: %+v", r)
	}
}

// TestServerAgentMetrics: a request for the agent's own metrics is
// answered with them (cut at a whole line within the wire's bound), or
// with an error when the agent has none; it never reads cgroups.
func TestServerAgentMetrics(t *testing.T) {
	ask := func(render func() []byte) *wire.StatsResponse {
		t.Helper()
		var got *wire.StatsResponse
		s := New(Config{
			Reader:  &Reader{Root: "/nonexistent", Proc: "/nonexistent"},
			Metrics: render,
			Send:    func(_ wire.Type, _ uint64, b wire.Body) error { got = b.(*wire.StatsResponse); return nil },
		})
		b, err := wire.Encode(wire.TypeStatsRequest, 0, &wire.StatsRequest{ID: 7, Metrics: true})
		if err != nil {
			t.Fatal(err)
		}
		f, _ := wire.Decode(b)
		if !s.Handle(f) {
			t.Fatal("a metrics request was not handled")
		}
		s.Wait()
		if got == nil {
			t.Fatal("no answer")
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("answer does not validate: %v", err)
		}
		return got
	}
	if r := ask(func() []byte { return []byte("outpost_link_connected 1\n") }); r.ID != 7 || string(r.Metrics) != "outpost_link_connected 1\n" || r.Node != nil {
		t.Errorf("metrics: %+v", r)
	}
	line := strings.Repeat("x", 99) + "\n"
	big := []byte(strings.Repeat(line, wire.MaxMetricsBytes/len(line)+10))
	if r := ask(func() []byte { return big }); len(r.Metrics) > wire.MaxMetricsBytes || len(r.Metrics)%len(line) != 0 || len(r.Metrics) == 0 {
		t.Errorf("oversize metrics: %d bytes, want whole lines within %d", len(r.Metrics), wire.MaxMetricsBytes)
	}
	if r := ask(nil); r.Error == "" || r.Metrics != nil {
		t.Errorf("no metrics: %+v, want an error", r)
	}
}

func link(t *testing.T, target, name string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, name); err != nil {
		t.Fatal(err)
	}
}

// netDevSample is /proc/PID/net/dev of a pod with loopback and eth0.
const netDevSample = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     120       2    0    0    0     0          0         0      120       2    0    0    0     0       0          0
  eth0:   11817      95    2    0    0     0          0         0     4486      44    1    0    0     0       0          0
`

func TestNetDevRefused(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"missing", "  lo: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n"},
		{"short", "  eth0: 1 2 3\n"},
		{"not a number", "  eth0: x 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n"},
		{"negative", "  eth0: -1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n"},
	} {
		if n, err := netDev([]byte(tc.in), "eth0"); err == nil {
			t.Errorf("%s: %+v, want an error", tc.name, n)
		}
	}
}
