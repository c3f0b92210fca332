package usage

import (
	"path"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the parsers of what the agent reads:
// cgroup stat files (keyed fields), /proc/PID/net/dev and a container's
// cgroupsPath. Neither
// may panic, and an accepted path stays below the hierarchy's root.
func FuzzParse(f *testing.F) {
	f.Add([]byte("usage_usec 1234\nuser_usec 1000\n"), "/outpost/abc")
	f.Add([]byte("total_inactive_file 99\n"), "/k8s.io/../etc")
	f.Add([]byte("usage_usec x\n"), "outpost:abc")
	f.Add([]byte(netDevSample), "/outpost/pod/c")
	f.Fuzz(func(t *testing.T, b []byte, p string) {
		for _, key := range []string{"usage_usec", "inactive_file", "total_inactive_file"} {
			_, _ = field(b, key)
		}
		if n, err := netDev(b, "eth0"); err == nil && n.Interface != "eth0" {
			t.Fatalf("netDev named %q", n.Interface)
		}
		if CheckCgroupPath(p) == nil {
			if !strings.HasPrefix(p, "/") || path.Clean(p) != p || strings.Contains(p, "..") && strings.Contains("/"+p+"/", "/../") {
				t.Fatalf("accepted %q", p)
			}
		}
	})
}
