// Package nodeinfo reads the gateway into a wire.NodeInfo: what it is
// (arch, OS image, kernel, board, ids), where it is (addresses) and what it
// can hold (capacity and allocatable).
//
// Every file is read through an fs.FS rooted at "/", so tests run against a
// fake /proc and /sys tree. Capacity honours cgroup limits, v1 and v2, so an
// agent confined to a slice of a machine reports that slice rather than
// inviting the scheduler to overcommit it.
package nodeinfo

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"

	"outpost.dev/wire"
)

// Floors for allocatable: a node whose reservations exceed its capacity
// still reports a positive figure, since zero is not a valid NodeInfo and
// a node that cannot take even a tiny pod is better shown nearly full
// than shown broken.
const (
	minAllocatableCPU    = 10       // millicores
	minAllocatableMemory = 16 << 20 // bytes
)

// maxFileRead bounds every file read; the largest expected is
// /proc/self/cgroup or /proc/meminfo, a few KiB.
const maxFileRead = 64 << 10

// Options says what to read and how. Zero fields take the real machine.
type Options struct {
	// FS is the root file system; nil means os.DirFS("/").
	FS fs.FS
	// Board is the board name reported as NodeInfo.Board.
	Board string
	// StateDir is where ephemeral storage is measured.
	StateDir string
	// MaxPods is the pods capacity.
	MaxPods int
	// ReservedCPUMillis and ReservedMemory are subtracted from capacity.
	ReservedCPUMillis int64
	ReservedMemory    int64

	// NumCPU overrides runtime.NumCPU, for tests.
	NumCPU int
	// Addrs lists the node's IPs; nil means the up, non-loopback
	// interfaces' addresses.
	Addrs func() ([]net.IP, error)
	// DiskBytes measures the file system holding a directory; nil means
	// statfs(2).
	DiskBytes func(dir string) (int64, error)
}

// Read returns the node's current facts. Only the figures the relay cannot
// do without (arch, OS, capacity) make it fail; the rest are best effort
// and left empty when unreadable.
func Read(o Options) (wire.NodeInfo, error) {
	fsys := o.FS
	if fsys == nil {
		fsys = os.DirFS("/")
	}
	n := wire.NodeInfo{
		Arch:          runtime.GOARCH,
		OS:            runtime.GOOS,
		Board:         o.Board,
		OSImage:       osImage(fsys),
		KernelVersion: firstLine(fsys, "proc/sys/kernel/osrelease"),
		Hostname:      firstLine(fsys, "proc/sys/kernel/hostname"),
		MachineID:     firstLine(fsys, "etc/machine-id"),
		BootID:        firstLine(fsys, "proc/sys/kernel/random/boot_id"),
	}
	if n.Hostname == "" {
		n.Hostname, _ = os.Hostname()
	}
	if n.Board == "" {
		n.Board = "sim"
	}

	cpus := o.NumCPU
	if cpus <= 0 {
		cpus = runtime.NumCPU()
	}
	cg := readCgroups(fsys)
	n.Capacity.CPUMillis = int64(cpus) * 1000
	if q, ok := cg.cpuLimitMillis(fsys); ok && q < n.Capacity.CPUMillis {
		n.Capacity.CPUMillis = q
	}
	mem, err := memTotal(fsys)
	if err != nil {
		return n, err
	}
	if l, ok := cg.memoryLimit(fsys); ok && l < mem {
		mem = l
	}
	n.Capacity.MemoryBytes = mem
	n.Capacity.Pods = int64(o.MaxPods)
	if o.StateDir != "" {
		disk := o.DiskBytes
		if disk == nil {
			disk = diskBytes
		}
		// Unknown storage is left out rather than failing the hello.
		if b, err := disk(o.StateDir); err == nil && b > 0 {
			n.Capacity.EphemeralStorage = b
		}
	}
	n.Allocatable = n.Capacity
	n.Allocatable.CPUMillis = subtractFloor(n.Capacity.CPUMillis, o.ReservedCPUMillis, minAllocatableCPU)
	n.Allocatable.MemoryBytes = subtractFloor(n.Capacity.MemoryBytes, o.ReservedMemory, minAllocatableMemory)

	addrs := o.Addrs
	if addrs == nil {
		addrs = interfaceAddrs
	}
	ips, _ := addrs()
	n.Addresses = addresses(ips, n.Hostname)

	if err := n.Validate(); err != nil {
		return n, fmt.Errorf("node info: %w", err)
	}
	return n, nil
}

func subtractFloor(v, reserved, floor int64) int64 {
	floor = min(floor, v)
	return max(v-reserved, floor)
}

// addresses lists IPv4 before IPv6, as the kubelet does, so a consumer
// taking the first InternalIP gets the one most likely reachable, and
// keeps within the wire limit.
func addresses(ips []net.IP, hostname string) []wire.Address {
	const limit = 15 // wire allows 16; one is the hostname
	var out []wire.Address
	for _, want4 := range []bool{true, false} {
		for _, ip := range ips {
			if (ip.To4() != nil) != want4 || ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() || ip.IsMulticast() {
				continue
			}
			if len(out) < limit {
				out = append(out, wire.Address{Type: "InternalIP", Address: ip.String()})
			}
		}
	}
	if hostname != "" {
		out = append(out, wire.Address{Type: "Hostname", Address: hostname})
	}
	return out
}

func interfaceAddrs() ([]net.IP, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var ips []net.IP
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		as, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range as {
			if ipn, ok := a.(*net.IPNet); ok {
				ips = append(ips, ipn.IP)
			}
		}
	}
	return ips, nil
}

func osImage(fsys fs.FS) string {
	for _, p := range []string{"etc/os-release", "usr/lib/os-release"} {
		b, err := readFile(fsys, p)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				if u, err := strconv.Unquote(v); err == nil {
					return u
				}
				return strings.Trim(v, `"'`)
			}
		}
	}
	return ""
}

func memTotal(fsys fs.FS) (int64, error) {
	b, err := readFile(fsys, "proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("node memory: %w", err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil || kb <= 0 {
				break
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("node memory: no MemTotal in /proc/meminfo")
}

func firstLine(fsys fs.FS, name string) string {
	b, err := readFile(fsys, name)
	if err != nil {
		return ""
	}
	l, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(l)
}

func readFile(fsys fs.FS, name string) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxFileRead))
}
