// Package mountinfo reads this process's mount table
// (/proc/self/mountinfo): which mount points lie below a directory, so a
// pod's volumes (or a test's leftovers) can be unmounted before removal,
// and how the mount holding a path propagates, so a volume asking for
// mount propagation is refused when its source cannot give it.
package mountinfo

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Under lists mount points at or below dir, deepest (longest) first so
// they can be unmounted in order; nil if the table cannot be read.
func Under(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	return under(f, dir)
}

func under(r io.Reader, dir string) []string {
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescape(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// Propagation says how the mount holding path (an absolute path with no
// symlinks) propagates: its mount point, and whether it is shared (a
// peer group) or a slave (receives from a master). The last, longest
// mount point that holds path wins, as the kernel's stacking does.
func Propagation(path string) (mountPoint string, shared, slave bool, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", false, false, err
	}
	defer f.Close()
	return propagation(f, path)
}

func propagation(r io.Reader, path string) (mountPoint string, shared, slave bool, err error) {
	found := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 {
			continue
		}
		mp := unescape(fields[4])
		if !holds(mp, path) || (found && len(mp) < len(mountPoint)) {
			continue
		}
		found, mountPoint, shared, slave = true, mp, false, false
		// Optional fields run from the seventh to the "-" separator.
		for _, opt := range fields[6:] {
			if opt == "-" {
				break
			}
			shared = shared || strings.HasPrefix(opt, "shared:")
			slave = slave || strings.HasPrefix(opt, "master:")
		}
	}
	if err := sc.Err(); err != nil {
		return "", false, false, err
	}
	if !found {
		return "", false, false, fmt.Errorf("no mount holds %s", path)
	}
	return mountPoint, shared, slave, nil
}

// holds reports whether the mount point mp holds path.
func holds(mp, path string) bool {
	return mp == "/" || path == mp || strings.HasPrefix(path, mp+"/")
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
