package containerd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// Pod cgroups: a pod with pod-level resources (spec.resources) gets a
// cgroup of its own under the runtime's, holding its limits, and its
// containers' cgroups are made inside it (Spec.CgroupParent), so the
// kernel bounds them together as a kubelet's pod cgroup does. cgroup v1
// (each controller its own hierarchy, as on hybrid machines) and v2.

// SetPodCgroup makes (or updates) the cgroup name under the runtime's
// with the given limits (0: none) and returns the path to give as
// Spec.CgroupParent. name is a pod's, checked like a pod UID.
func (r *Runtime) SetPodCgroup(name string, cpuMillis, memoryBytes int64) (string, error) {
	rel, err := r.podCgroup(name)
	if err != nil {
		return "", err
	}
	quota, mem := "max", "max"
	if cpuMillis > 0 {
		quota = strconv.FormatInt(cpuMillis*100, 10) // per 100 ms period
	}
	if memoryBytes > 0 {
		mem = strconv.FormatInt(memoryBytes, 10)
	}
	if isCgroup2() {
		ns := filepath.Join(cgroupRoot, r.cfg.Namespace)
		dir := filepath.Join(ns, name)
		for _, d := range []string{ns, dir} {
			if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return "", fmt.Errorf("pod cgroup: %w", err)
			}
		}
		// The runtime's cgroup hands cpu and memory down to the pod's.
		if err := writeCgroup(filepath.Join(ns, "cgroup.subtree_control"), "+cpu +memory"); err != nil {
			return "", err
		}
		if err := writeCgroup(filepath.Join(dir, "memory.max"), mem); err != nil {
			return "", err
		}
		if err := writeCgroup(filepath.Join(dir, "cpu.max"), quota+" 100000"); err != nil {
			return "", err
		}
		return rel, nil
	}
	if mem == "max" {
		mem = "-1"
	}
	if quota == "max" {
		quota = "-1"
	}
	for _, f := range []struct{ ctrl, file, v string }{
		{"memory", "memory.limit_in_bytes", mem},
		{"cpu", "cpu.cfs_period_us", "100000"},
		{"cpu", "cpu.cfs_quota_us", quota},
	} {
		dir := filepath.Join(cgroupRoot, f.ctrl, rel)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", fmt.Errorf("pod cgroup: %w", err)
		}
		if err := writeCgroup(filepath.Join(dir, f.file), f.v); err != nil {
			return "", err
		}
	}
	return rel, nil
}

// RemovePodCgroup removes the pod cgroup name from every hierarchy; its
// containers must be gone (their cgroups are removed with their tasks).
func (r *Runtime) RemovePodCgroup(name string) error {
	rel, err := r.podCgroup(name)
	if err != nil {
		return err
	}
	dirs := []string{filepath.Join(cgroupRoot, rel)}
	if !isCgroup2() {
		hs, _ := os.ReadDir(cgroupRoot)
		dirs = dirs[:0]
		for _, h := range hs {
			dirs = append(dirs, filepath.Join(cgroupRoot, h.Name(), rel))
		}
	}
	var errs []error
	for _, d := range dirs {
		if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) {
			errs = append(errs, fmt.Errorf("remove pod cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// AdoptProcess moves process pid (a helper the agent started for its
// pods, such as the holder of a shared PID namespace) into the cgroup
// name under the runtime's, in every hierarchy, so that it leaves the
// agent's own cgroup: a service manager stopping the agent (systemd's
// KillMode=control-group) then leaves it running, as it leaves the
// containers.
func (r *Runtime) AdoptProcess(name string, pid int) error {
	rel, err := r.podCgroup(name)
	if err != nil {
		return err
	}
	dirs := []string{filepath.Join(cgroupRoot, rel)}
	if !isCgroup2() {
		hs, _ := os.ReadDir(cgroupRoot)
		dirs = dirs[:0]
		for _, h := range hs {
			if _, err := os.Stat(filepath.Join(cgroupRoot, h.Name(), "cgroup.procs")); err == nil {
				dirs = append(dirs, filepath.Join(cgroupRoot, h.Name(), rel))
			}
		}
	}
	var errs []error
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := writeCgroup(filepath.Join(d, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// podCgroup is the cgroup path of pod cgroup name.
func (r *Runtime) podCgroup(name string) (string, error) {
	ok := name != "" && len(name) <= 63
	for _, c := range name {
		ok = ok && (c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-')
	}
	if !ok {
		return "", fmt.Errorf("pod cgroup %q: want 1 to 63 of a-z, 0-9 and -", name)
	}
	return "/" + r.cfg.Namespace + "/" + name, nil
}

// isCgroup2 says whether cgroupRoot is the unified hierarchy.
func isCgroup2() bool {
	_, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers"))
	return err == nil
}

func writeCgroup(path, v string) error {
	if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
		return fmt.Errorf("pod cgroup: %w", err)
	}
	return nil
}

// CgroupsPath returns the cgroup of container id as its OCI spec names
// it (linux.cgroupsPath, relative to the hierarchies' roots), for reading
// its usage.
func (r *Runtime) CgroupsPath(ctx context.Context, id string) (string, error) {
	_, spec, err := r.containerSpec(ctx, id)
	if err != nil {
		return "", err
	}
	var s struct {
		Linux *struct {
			CgroupsPath string `json:"cgroupsPath"`
		} `json:"linux"`
	}
	if err := json.Unmarshal(spec, &s); err != nil {
		return "", fmt.Errorf("container %s: spec: %w", id, err)
	}
	if s.Linux == nil || s.Linux.CgroupsPath == "" {
		return "", fmt.Errorf("container %s: its spec names no cgroup", id)
	}
	return s.Linux.CgroupsPath, nil
}
