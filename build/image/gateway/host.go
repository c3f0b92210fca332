package gateway

import (
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"
)

// CheckTools names the Debian package of every missing tool Build runs,
// all at once.
func CheckTools() error {
	need := []struct{ tool, pkg string }{
		{"apt-get", "apt"}, {"apt-cache", "apt"}, {"dpkg-deb", "dpkg"},
		{"mkfs.ext4", "e2fsprogs"}, {"debugfs", "e2fsprogs"},
		{"mformat", "mtools"}, {"mcopy", "mtools"}, {"xz", "xz-utils"},
	}
	var missing []string
	pkgs := map[string]bool{}
	for _, n := range need {
		if _, err := exec.LookPath(n.tool); err != nil {
			missing = append(missing, n.tool)
			pkgs[n.pkg] = true
		}
	}
	if len(missing) == 0 {
		return nil
	}
	var p []string
	for k := range pkgs {
		p = append(p, k)
	}
	sort.Strings(p)
	return fmt.Errorf("%s missing: apt-get install %s (or make install-deps)", strings.Join(missing, ", "), strings.Join(p, " "))
}

// SourceDate is SOURCE_DATE_EPOCH when set, else the last commit's time
// (the Unix epoch outside a git checkout).
func SourceDate() (time.Time, error) {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a number of seconds", s)
		}
		return time.Unix(n, 0), nil
	}
	out, err := exec.Command("git", "log", "-1", "--format=%ct").Output()
	if err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil {
			return time.Unix(n, 0), nil
		}
	}
	return time.Unix(0, 0), nil
}
