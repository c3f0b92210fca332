package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// RequireContainerd skips t when containerd, runc or busybox-static is
// missing, or when not root. Under CI=true it fails instead: .ci/run
// installs them, so a machine without them must not pass by skipping.
func RequireContainerd(t testing.TB) {
	t.Helper()
	for _, err := range []error{ContainerdMissing(), BusyboxMissing()} {
		missing(t, err)
	}
}

// RequireCNI skips t when the default pod network's CNI plugins (bridge,
// host-local, portmap from Debian's containernetworking-plugins) or
// iptables are missing; under CI=true it fails instead.
func RequireCNI(t testing.TB) {
	t.Helper()
	var gone []string
	for _, p := range []string{"bridge", "host-local", "portmap"} {
		if _, err := os.Stat(filepath.Join("/usr/lib/cni", p)); err != nil {
			gone = append(gone, p)
		}
	}
	if _, err := exec.LookPath("iptables-save"); err != nil {
		gone = append(gone, "iptables")
	}
	if len(gone) > 0 {
		missing(t, fmt.Errorf("CNI plugins or tools missing (%s): run build/install-deps.sh (Debian's containernetworking-plugins and iptables)", strings.Join(gone, ", ")))
	}
}

// RequireTool returns the path of the command name, from the Debian
// package pkg; when it is missing it skips t, or fails it under CI=true
// (build/install-deps.sh installs it).
func RequireTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		missing(t, fmt.Errorf("%s not found: install the Debian package %s (build/install-deps.sh)", name, pkg))
	}
	return p
}

// missing skips t for err, or fails it under CI=true: .ci/run installs
// what the tests need, so a machine without it must not pass by skipping.
func missing(t testing.TB, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true: %v", err)
	}
	t.Skip(err)
}

// RequireRoot skips t unless it runs as root (mounts, namespaces). Under
// CI=true it fails instead, as RequireContainerd does.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true: this test mounts: run the tests as root")
	}
	t.Skip("this test mounts: run it as root")
}
