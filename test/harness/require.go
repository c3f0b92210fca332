package harness

import (
	"os"
	"testing"
)

// RequireContainerd skips t when containerd, runc or busybox-static is
// missing, or when not root. Under CI=true it fails instead: .ci/run
// installs them, so a machine without them must not pass by skipping.
func RequireContainerd(t testing.TB) {
	t.Helper()
	for _, err := range []error{ContainerdMissing(), BusyboxMissing()} {
		if err == nil {
			continue
		}
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: %v", err)
		}
		t.Skip(err)
	}
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
