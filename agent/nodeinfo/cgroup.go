package nodeinfo

import (
	"io/fs"
	"path"
	"strconv"
	"strings"
)

// cgroups is where this process sits in each hierarchy, from
// /proc/self/cgroup. Outpost's gateways and CI machines run cgroup v1
// (often hybrid: v1 controllers plus an empty v2 mount), newer ones run v2,
// so a controller found in a v1 line wins and v2 is the fallback.
type cgroups struct {
	v1       map[string]v1Entry // controller → entry
	v2       string             // path in the unified hierarchy
	v2Exists bool
}

type v1Entry struct {
	mount string // directory name under /sys/fs/cgroup, e.g. "cpu,cpuacct"
	path  string
}

// unlimited is the threshold above which a v1 limit means "none": the
// kernel reports no limit as LONG_MAX rounded down to a page.
const unlimited = 1 << 62

func readCgroups(fsys fs.FS) cgroups {
	cg := cgroups{v1: map[string]v1Entry{}}
	b, err := readFile(fsys, "proc/self/cgroup")
	if err != nil {
		return cg
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			continue
		}
		if f[0] == "0" && f[1] == "" {
			cg.v2, cg.v2Exists = f[2], true
			continue
		}
		for _, c := range strings.Split(f[1], ",") {
			cg.v1[c] = v1Entry{mount: f[1], path: f[2]}
		}
	}
	return cg
}

// v2Root is the unified hierarchy's mount: /sys/fs/cgroup on a pure v2
// system, /sys/fs/cgroup/unified on a hybrid one.
func v2Root(fsys fs.FS) string {
	if _, err := fs.Stat(fsys, "sys/fs/cgroup/cgroup.controllers"); err == nil {
		return "sys/fs/cgroup"
	}
	return "sys/fs/cgroup/unified"
}

// walkUp calls fn with the cgroup directory of p and each ancestor up to
// the mount root: the effective limit is the smallest on the way. Inside a
// container the process's path may not exist under the mount (its root is
// the container's cgroup), so missing directories are skipped.
func walkUp(root, p string, fn func(dir string)) {
	p = path.Clean("/" + p)
	for {
		fn(path.Join(root, p))
		if p == "/" {
			return
		}
		p = path.Dir(p)
	}
}

func (cg cgroups) memoryLimit(fsys fs.FS) (int64, bool) {
	best, found := int64(0), false
	take := func(v int64) {
		if v > 0 && v < unlimited && (!found || v < best) {
			best, found = v, true
		}
	}
	if e, ok := cg.v1["memory"]; ok {
		walkUp("sys/fs/cgroup/"+e.mount, e.path, func(dir string) {
			if v, err := strconv.ParseInt(firstLine(fsys, path.Join(dir, "memory.limit_in_bytes")), 10, 64); err == nil {
				take(v)
			}
		})
		return best, found
	}
	if cg.v2Exists {
		walkUp(v2Root(fsys), cg.v2, func(dir string) {
			s := firstLine(fsys, path.Join(dir, "memory.max"))
			if v, err := strconv.ParseInt(s, 10, 64); err == nil { // "max" fails here: no limit
				take(v)
			}
		})
	}
	return best, found
}

func (cg cgroups) cpuLimitMillis(fsys fs.FS) (int64, bool) {
	best, found := int64(0), false
	take := func(quota, period int64) {
		if quota <= 0 || period <= 0 {
			return
		}
		// Round up: a 0.05-CPU quota is 50m, never 0.
		m := (quota*1000 + period - 1) / period
		if !found || m < best {
			best, found = m, true
		}
	}
	if e, ok := cg.v1["cpu"]; ok {
		for _, mount := range uniq(e.mount, "cpu", "cpu,cpuacct") {
			root := "sys/fs/cgroup/" + mount
			if _, err := fs.Stat(fsys, root); err != nil {
				continue
			}
			walkUp(root, e.path, func(dir string) {
				q, err1 := strconv.ParseInt(firstLine(fsys, path.Join(dir, "cpu.cfs_quota_us")), 10, 64)
				p, err2 := strconv.ParseInt(firstLine(fsys, path.Join(dir, "cpu.cfs_period_us")), 10, 64)
				if err1 == nil && err2 == nil {
					take(q, p)
				}
			})
			return best, found
		}
		return 0, false
	}
	if cg.v2Exists {
		walkUp(v2Root(fsys), cg.v2, func(dir string) {
			f := strings.Fields(firstLine(fsys, path.Join(dir, "cpu.max")))
			if len(f) != 2 {
				return
			}
			q, err1 := strconv.ParseInt(f[0], 10, 64) // "max" fails here: no limit
			p, err2 := strconv.ParseInt(f[1], 10, 64)
			if err1 == nil && err2 == nil {
				take(q, p)
			}
		})
	}
	return best, found
}

func uniq(ss ...string) []string {
	var out []string
	for _, s := range ss {
		dup := false
		for _, o := range out {
			dup = dup || o == s
		}
		if !dup {
			out = append(out, s)
		}
	}
	return out
}
