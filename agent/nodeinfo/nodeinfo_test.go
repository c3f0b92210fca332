package nodeinfo

import (
	"net"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"testing/fstest"

	"outpost.dev/wire"
)

const gib = 1 << 30

// machine is a fake root with 4 GiB of memory and the identity files.
func machine() fstest.MapFS {
	f := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	return fstest.MapFS{
		"etc/os-release":                 f("NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n"),
		"etc/machine-id":                 f("0123456789abcdef0123456789abcdef\n"),
		"proc/sys/kernel/osrelease":      f("6.1.0-18-arm64\n"),
		"proc/sys/kernel/hostname":       f("gw-1\n"),
		"proc/sys/kernel/random/boot_id": f("4b1c2a3e-0000-4000-8000-000000000001\n"),
		"proc/meminfo":                   f("MemTotal:        4194304 kB\nMemFree:         1000000 kB\n"),
	}
}

func with(base fstest.MapFS, files map[string]string) fstest.MapFS {
	for k, v := range files {
		base[k] = &fstest.MapFile{Data: []byte(v)}
	}
	return base
}

func TestRead(t *testing.T) {
	v1Hybrid := "12:pids:/\n5:memory:/system.slice/outpost.service\n4:cpu,cpuacct:/system.slice/outpost.service\n1:name=systemd:/system.slice/outpost.service\n0::/system.slice/outpost.service\n"
	tests := []struct {
		name    string
		files   map[string]string
		cpus    int
		wantCPU int64 // capacity millicores
		wantMem int64 // capacity bytes
	}{
		{
			name:    "no cgroup file: machine figures",
			cpus:    4,
			wantCPU: 4000, wantMem: 4 * gib,
		},
		{
			name: "cgroup v1 hybrid, no limits",
			files: map[string]string{
				"proc/self/cgroup": v1Hybrid,
				"sys/fs/cgroup/memory/system.slice/outpost.service/memory.limit_in_bytes":  "9223372036854771712\n",
				"sys/fs/cgroup/memory/memory.limit_in_bytes":                               "9223372036854771712\n",
				"sys/fs/cgroup/cpu,cpuacct/system.slice/outpost.service/cpu.cfs_quota_us":  "-1\n",
				"sys/fs/cgroup/cpu,cpuacct/system.slice/outpost.service/cpu.cfs_period_us": "100000\n",
				"sys/fs/cgroup/unified/system.slice/outpost.service/memory.max":            "512000000\n", // ignored: v1 owns memory
			},
			cpus:    4,
			wantCPU: 4000, wantMem: 4 * gib,
		},
		{
			name: "cgroup v1 limits, the parent's memory limit is smaller",
			files: map[string]string{
				"proc/self/cgroup": v1Hybrid,
				"sys/fs/cgroup/memory/system.slice/outpost.service/memory.limit_in_bytes":  "2147483648\n",
				"sys/fs/cgroup/memory/system.slice/memory.limit_in_bytes":                  "1073741824\n",
				"sys/fs/cgroup/cpu,cpuacct/system.slice/outpost.service/cpu.cfs_quota_us":  "150000\n",
				"sys/fs/cgroup/cpu,cpuacct/system.slice/outpost.service/cpu.cfs_period_us": "100000\n",
			},
			cpus:    4,
			wantCPU: 1500, wantMem: 1 * gib,
		},
		{
			name: "cgroup v1 with separate cpu mount and container namespace",
			files: map[string]string{
				"proc/self/cgroup": "4:memory:/docker/abc\n1:cpu:/docker/abc\n0::/\n",
				// The process's path is not under the mount inside a container; the root is its cgroup.
				"sys/fs/cgroup/memory/memory.limit_in_bytes": "268435456\n",
				"sys/fs/cgroup/cpu/cpu.cfs_quota_us":         "50000\n",
				"sys/fs/cgroup/cpu/cpu.cfs_period_us":        "100000\n",
			},
			cpus:    2,
			wantCPU: 500, wantMem: 256 << 20,
		},
		{
			name: "cgroup v1 quota above the CPU count",
			files: map[string]string{
				"proc/self/cgroup":                    "1:cpu:/\n",
				"sys/fs/cgroup/cpu/cpu.cfs_quota_us":  "800000\n",
				"sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
			},
			cpus:    2,
			wantCPU: 2000, wantMem: 4 * gib,
		},
		{
			name: "cgroup v2 limits",
			files: map[string]string{
				"proc/self/cgroup":                                      "0::/system.slice/outpost.service\n",
				"sys/fs/cgroup/cgroup.controllers":                      "cpu memory pids\n",
				"sys/fs/cgroup/system.slice/outpost.service/cpu.max":    "25000 100000\n",
				"sys/fs/cgroup/system.slice/outpost.service/memory.max": "536870912\n",
				"sys/fs/cgroup/system.slice/memory.max":                 "max\n",
			},
			cpus:    4,
			wantCPU: 250, wantMem: 512 << 20,
		},
		{
			name: "cgroup v2 no limits",
			files: map[string]string{
				"proc/self/cgroup":                                      "0::/system.slice/outpost.service\n",
				"sys/fs/cgroup/cgroup.controllers":                      "cpu memory pids\n",
				"sys/fs/cgroup/system.slice/outpost.service/cpu.max":    "max 100000\n",
				"sys/fs/cgroup/system.slice/outpost.service/memory.max": "max\n",
			},
			cpus:    4,
			wantCPU: 4000, wantMem: 4 * gib,
		},
		{
			name: "cgroup v2 memory limit above the machine",
			files: map[string]string{
				"proc/self/cgroup":                 "0::/\n",
				"sys/fs/cgroup/cgroup.controllers": "memory\n",
				"sys/fs/cgroup/memory.max":         "68719476736\n",
			},
			cpus:    1,
			wantCPU: 1000, wantMem: 4 * gib,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Read(Options{
				FS: with(machine(), tt.files), Board: "rpi4", StateDir: "/var/lib/outpost",
				MaxPods: 110, ReservedCPUMillis: 100, ReservedMemory: 64 << 20,
				NumCPU: tt.cpus,
				Addrs: func() ([]net.IP, error) {
					return []net.IP{net.ParseIP("fe80::1"), net.ParseIP("2001:db8::5"), net.ParseIP("192.168.1.20"), net.ParseIP("127.0.0.1")}, nil
				},
				DiskBytes: func(dir string) (int64, error) { return 32 * gib, nil },
			})
			if err != nil {
				t.Fatal(err)
			}
			want := wire.NodeInfo{
				Arch: runtime.GOARCH, OS: runtime.GOOS,
				OSImage: "Debian GNU/Linux 12 (bookworm)", KernelVersion: "6.1.0-18-arm64",
				Board: "rpi4", Hostname: "gw-1",
				MachineID: "0123456789abcdef0123456789abcdef", BootID: "4b1c2a3e-0000-4000-8000-000000000001",
				Addresses: []wire.Address{
					{Type: "InternalIP", Address: "192.168.1.20"},
					{Type: "InternalIP", Address: "2001:db8::5"},
					{Type: "Hostname", Address: "gw-1"},
				},
				Capacity: wire.Resources{CPUMillis: tt.wantCPU, MemoryBytes: tt.wantMem, Pods: 110, EphemeralStorage: 32 * gib},
				Allocatable: wire.Resources{
					CPUMillis: tt.wantCPU - 100, MemoryBytes: tt.wantMem - 64<<20,
					Pods: 110, EphemeralStorage: 32 * gib,
				},
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestAllocatableFloor(t *testing.T) {
	got, err := Read(Options{
		FS:    with(machine(), map[string]string{"proc/meminfo": "MemTotal: 32768 kB\n"}),
		Board: "tiny", NumCPU: 1, ReservedCPUMillis: 5000, ReservedMemory: 1 << 30,
		Addrs: func() ([]net.IP, error) { return nil, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.Allocatable.CPUMillis != minAllocatableCPU || got.Allocatable.MemoryBytes != minAllocatableMemory {
		t.Errorf("allocatable = %+v, want the floors %dm and %d bytes", got.Allocatable, minAllocatableCPU, minAllocatableMemory)
	}
}

func TestReadFailures(t *testing.T) {
	tests := []struct {
		name    string
		fs      fstest.MapFS
		wantErr string
	}{
		{name: "no meminfo", fs: fstest.MapFS{}, wantErr: "node memory"},
		{name: "meminfo without total", fs: with(machine(), map[string]string{"proc/meminfo": "MemFree: 1 kB\n"}), wantErr: "MemTotal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Read(Options{FS: tt.fs, NumCPU: 1, Addrs: func() ([]net.IP, error) { return nil, nil }})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestReadMinimalMachine(t *testing.T) {
	// Only meminfo: everything optional is empty, the board defaults to sim.
	got, err := Read(Options{
		FS:     fstest.MapFS{"proc/meminfo": {Data: []byte("MemTotal: 262144 kB\n")}},
		NumCPU: 1, Addrs: func() ([]net.IP, error) { return nil, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.Board != "sim" || got.OSImage != "" || got.Capacity.MemoryBytes != 256<<20 {
		t.Errorf("got %+v", got)
	}
}

func TestReadThisMachine(t *testing.T) {
	got, err := Read(Options{Board: "sim", StateDir: t.TempDir(), MaxPods: 110, ReservedCPUMillis: 100, ReservedMemory: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if got.Capacity.EphemeralStorage <= 0 && runtime.GOOS == "linux" {
		t.Errorf("no ephemeral storage measured: %+v", got.Capacity)
	}
	t.Logf("%+v", got)
}
