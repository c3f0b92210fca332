package usage

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"outpost.dev/agent/crilog"
	"outpost.dev/wire"
)

// Fs reads the file system holding path with statfs: its size, what is
// free for unprivileged users and its inodes; UsedBytes is the size less
// the free blocks.
func (r *Reader) Fs(path string) (wire.FsUsage, error) {
	var s syscall.Statfs_t
	if err := syscall.Statfs(path, &s); err != nil {
		return wire.FsUsage{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := uint64(s.Bsize)
	f := wire.FsUsage{At: r.now().UnixNano(), CapacityBytes: uint64(s.Blocks) * bs, AvailableBytes: uint64(s.Bavail) * bs,
		UsedBytes: sub(uint64(s.Blocks), uint64(s.Bfree)) * bs, Inodes: uint64(s.Files), InodesFree: uint64(s.Ffree)}
	// A file system that reports more free than it has (some FUSE ones)
	// is reported as full rather than refused by the relay.
	f.AvailableBytes, f.InodesFree = min(f.AvailableBytes, f.CapacityBytes), min(f.InodesFree, f.Inodes)
	return f, nil
}

// Logs reads what a container's log at path takes (the file and its
// rotated ones, crilog.Files), on the file system holding it.
func (r *Reader) Logs(path string) (wire.FsUsage, error) {
	if !filepath.IsAbs(path) {
		return wire.FsUsage{}, fmt.Errorf("log path %q: want an absolute path", path)
	}
	f, err := r.Fs(filepath.Dir(path))
	if err != nil {
		return wire.FsUsage{}, err
	}
	f.UsedBytes = 0
	for _, p := range crilog.Files(path) {
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() {
			f.UsedBytes += uint64(fi.Size())
		}
	}
	return f, nil
}

// errHostNetwork is PodNetwork's answer for a process in the agent's own
// network namespace: a pod on the host's network, whose traffic is not
// its own to count.
var errHostNetwork = fmt.Errorf("on the host's network")

// PodNetwork reads the counters of interface ifname in the network
// namespace of process pid (a container of the pod) from Proc/PID/net/dev.
func (r *Reader) PodNetwork(pid uint32, ifname string) (wire.NetworkUsage, error) {
	if pid == 0 {
		return wire.NetworkUsage{}, fmt.Errorf("no process")
	}
	dir := filepath.Join(r.Proc, strconv.FormatUint(uint64(pid), 10))
	own, err1 := os.Readlink(filepath.Join(r.Proc, "self", "ns", "net"))
	theirs, err2 := os.Readlink(filepath.Join(dir, "ns", "net"))
	if err1 != nil || err2 != nil {
		return wire.NetworkUsage{}, fmt.Errorf("network namespace of process %d: %v", pid, firstErr(err1, err2))
	}
	if own == theirs {
		return wire.NetworkUsage{}, errHostNetwork
	}
	at := r.now().UnixNano()
	b, err := readBounded(filepath.Join(dir, "net", "dev"))
	if err != nil {
		return wire.NetworkUsage{}, err
	}
	n, err := netDev(b, ifname)
	if err != nil {
		return wire.NetworkUsage{}, fmt.Errorf("%s: %w", filepath.Join(dir, "net", "dev"), err)
	}
	n.At = at
	return n, nil
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// netDev finds interface ifname in /proc/net/dev's table: after "name:",
// eight receive columns (bytes, packets, errs, …) then eight transmit
// ones.
func netDev(b []byte, ifname string) (wire.NetworkUsage, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(name) != ifname {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 16 {
			return wire.NetworkUsage{}, fmt.Errorf("interface %s: %d columns, want 16", ifname, len(f))
		}
		var v [4]uint64
		for i, col := range []int{0, 2, 8, 10} {
			x, err := strconv.ParseUint(f[col], 10, 64)
			if err != nil {
				return wire.NetworkUsage{}, fmt.Errorf("interface %s: column %d %q is not a number", ifname, col+1, f[col])
			}
			v[i] = x
		}
		return wire.NetworkUsage{Interface: ifname, RxBytes: v[0], RxErrors: v[1], TxBytes: v[2], TxErrors: v[3]}, nil
	}
	return wire.NetworkUsage{}, fmt.Errorf("no interface %s", ifname)
}
