// Package usage reads the resource usage of the node and of its
// containers' cgroups (cumulative CPU time and memory working set, as
// the kubelet reports them for metrics-server) and answers the relay's
// stats requests with them (wire.StatsRequest). It reads only when asked.
package usage

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"outpost.dev/wire"
)

// maxStatFile bounds one read of a cgroup or /proc file: the largest,
// memory.stat and /proc/stat, are a few kilobytes.
const maxStatFile = 64 << 10

// userHZ is the unit of /proc/stat's CPU times (USER_HZ, 100 on Linux).
const userHZ = 100

// Reader reads cgroups under Root (where the hierarchies are mounted,
// /sys/fs/cgroup) and node figures from Proc (/proc).
type Reader struct {
	Root string
	Proc string
	// Now stamps the readings; default time.Now.
	Now func() time.Time
}

func (r *Reader) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// cgroup2 says whether Root is the unified hierarchy.
func (r *Reader) cgroup2() bool {
	_, err := os.Stat(filepath.Join(r.Root, "cgroup.controllers"))
	return err == nil
}

// CheckCgroupPath checks a container's cgroupsPath: a clean absolute
// path of plain names, as the agent sets it (/<namespace>/<id>, or under a
// pod cgroup), never a systemd slice or one that leaves the hierarchy.
func CheckCgroupPath(rel string) error {
	if rel == "" || len(rel) > 1024 || !strings.HasPrefix(rel, "/") || path.Clean(rel) != rel || rel == "/" {
		return fmt.Errorf("cgroup path %q: want a clean absolute path below the root", rel)
	}
	for _, seg := range strings.Split(rel[1:], "/") {
		if seg == "." || seg == ".." || strings.ContainsAny(seg, ":\x00") {
			return fmt.Errorf("cgroup path %q: segment %q not allowed", rel, seg)
		}
	}
	return nil
}

// Cgroup reads the cgroup rel (a container's cgroupsPath): cgroup v2's
// cpu.stat usage_usec, memory.current and memory.stat inactive_file, or
// cgroup v1's cpuacct.usage, memory.usage_in_bytes and memory.stat
// total_inactive_file. The working set is usage less inactive file
// pages, never below zero, as the kubelet (cadvisor) computes it.
func (r *Reader) Cgroup(rel string) (wire.Usage, error) {
	if err := CheckCgroupPath(rel); err != nil {
		return wire.Usage{}, err
	}
	var cpu, mem, inactive uint64
	var err error
	if r.cgroup2() {
		dir := filepath.Join(r.Root, rel)
		var usec uint64
		if usec, err = keyed(filepath.Join(dir, "cpu.stat"), "usage_usec"); err != nil {
			return wire.Usage{}, err
		}
		cpu = usec * 1000
		if mem, err = single(filepath.Join(dir, "memory.current")); err != nil {
			return wire.Usage{}, err
		}
		if inactive, err = keyed(filepath.Join(dir, "memory.stat"), "inactive_file"); err != nil {
			return wire.Usage{}, err
		}
	} else {
		if cpu, err = single(filepath.Join(r.Root, "cpuacct", rel, "cpuacct.usage")); err != nil {
			return wire.Usage{}, err
		}
		mdir := filepath.Join(r.Root, "memory", rel)
		if mem, err = single(filepath.Join(mdir, "memory.usage_in_bytes")); err != nil {
			return wire.Usage{}, err
		}
		if inactive, err = keyed(filepath.Join(mdir, "memory.stat"), "total_inactive_file"); err != nil {
			return wire.Usage{}, err
		}
	}
	return wire.Usage{At: r.now().UnixNano(), CPUNanos: cpu, MemoryWorkingSet: sub(mem, inactive)}, nil
}

// Node reads the node's figures: CPU time from the root cgroup's
// cpu.stat (cgroup v2) or /proc/stat (the busy times, all but idle and
// iowait), and the working set from /proc/meminfo (MemTotal − MemFree −
// Inactive(file)).
func (r *Reader) Node() (wire.Usage, error) {
	at := r.now().UnixNano()
	var cpu uint64
	if usec, err := keyed(filepath.Join(r.Root, "cpu.stat"), "usage_usec"); err == nil && r.cgroup2() {
		cpu = usec * 1000
	} else {
		jiffies, err := procStatBusy(filepath.Join(r.Proc, "stat"))
		if err != nil {
			return wire.Usage{}, err
		}
		cpu = jiffies * (1e9 / userHZ)
	}
	mi, err := readBounded(filepath.Join(r.Proc, "meminfo"))
	if err != nil {
		return wire.Usage{}, err
	}
	var total, free, inactive uint64
	for _, f := range []struct {
		key string
		v   *uint64
	}{{"MemTotal:", &total}, {"MemFree:", &free}, {"Inactive(file):", &inactive}} {
		kb, err := field(mi, f.key)
		if err != nil {
			return wire.Usage{}, fmt.Errorf("%s: %w", filepath.Join(r.Proc, "meminfo"), err)
		}
		*f.v = kb * 1024
	}
	return wire.Usage{At: at, CPUNanos: cpu, MemoryWorkingSet: sub(sub(total, free), inactive)}, nil
}

func sub(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}

// readBounded reads at most maxStatFile bytes of file name.
func readBounded(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStatFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxStatFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, maxStatFile)
	}
	return b, nil
}

// single reads a file holding one number.
func single(name string) (uint64, error) {
	b, err := readBounded(name)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: not a number", name)
	}
	return v, nil
}

// keyed reads the value of key in a flat-keyed file ("key value" lines).
func keyed(name, key string) (uint64, error) {
	b, err := readBounded(name)
	if err != nil {
		return 0, err
	}
	v, err := field(b, key)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return v, nil
}

// field finds the line starting with the word key and parses the number
// after it.
func field(b []byte, key string) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == key {
			v, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %q is not a number", key, f[1])
			}
			return v, nil
		}
	}
	return 0, fmt.Errorf("no %s", key)
}

// procStatBusy sums the busy CPU times of /proc/stat's first line, in
// jiffies: user, nice, system, irq, softirq and steal (guest time is in
// user already).
func procStatBusy(name string) (uint64, error) {
	b, err := readBounded(name)
	if err != nil {
		return 0, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("%s: no cpu line", name)
	}
	var sum uint64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // idle (4) and iowait (5) left out
		v, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: field %d %q is not a number", name, i, f[i])
		}
		sum += v
	}
	return sum, nil
}

var errBusy = errors.New("a stats collection is already running on this node; try again")
