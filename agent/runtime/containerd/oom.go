package containerd

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
)

// labelOOM is "true" on a container whose task Reap found OOM-killed.
const labelOOM = "dev.outpost.oom-killed"

// cgroupRoot is where the cgroup hierarchies are mounted.
var cgroupRoot = "/sys/fs/cgroup"

// OOMKilled reports whether the kernel's OOM killer killed a process of
// container id, from the oom_kill counter of its memory cgroup (cgroup v1
// memory.oom_control, or v2 memory.events, pure or hybrid). The cgroup
// lives until the task is deleted, so ask before Reap, which records the
// answer for later (Container.OOMKilled).
func (r *Runtime) OOMKilled(id string) bool {
	rel := filepath.Join(r.cfg.Namespace, id) // the spec's cgroupsPath
	files := []string{
		filepath.Join(cgroupRoot, "memory", rel, "memory.oom_control"),
		filepath.Join(cgroupRoot, rel, "memory.events"),
		filepath.Join(cgroupRoot, "unified", rel, "memory.events"),
	}
	// Or in a pod cgroup (SetPodCgroup): <namespace>/<pod>/<id>.
	for _, g := range []string{
		filepath.Join(cgroupRoot, "memory", r.cfg.Namespace, "*", id, "memory.oom_control"),
		filepath.Join(cgroupRoot, r.cfg.Namespace, "*", id, "memory.events"),
	} {
		m, _ := filepath.Glob(g)
		files = append(files, m...)
	}
	for _, f := range files {
		if n, ok := oomKills(f); ok {
			return n > 0
		}
	}
	return false
}

// oomKills reads the "oom_kill N" line of a cgroup memory file.
func oomKills(file string) (int64, bool) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, _ := bytes.Cut(sc.Bytes(), []byte(" "))
		if string(k) == "oom_kill" {
			n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// OOMKilled reports what Reap recorded: the task was OOM-killed.
func (c Container) OOMKilled() bool { return c.Labels[labelOOM] == "true" }
