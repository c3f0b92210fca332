package harness

import (
	"os"
	"path/filepath"
	"testing"
)

// TestRuntime is what a test that runs containers starts with: a loopback
// registry serving the busybox test images (test/busybox tags 1 and 2) and
// a containerd of its own.
type TestRuntime struct {
	Registry   *Registry
	Images     []BusyboxImage // test/busybox:1 and :2
	Containerd *Containerd    // its directory is Dir/c
	// Dir is a new directory under the system's temporary directory with
	// a short name (prefix and a random suffix: containerd's socket path
	// must fit in 107 bytes).
	Dir string
}

// StartTestRuntime starts a TestRuntime, its registry made as opts say,
// or fails t (skipping without containerd, as RequireContainerd). When t
// ends, containerd is stopped (a failed Stop fails t), Dir removed and the
// registry stopped; a test that must stop containerd earlier (before
// unmounting what its pods left under Dir) calls Containerd.Stop itself.
func StartTestRuntime(t testing.TB, prefix string, opts RegistryOptions) *TestRuntime {
	t.Helper()
	RequireContainerd(t)
	ctx := t.Context()
	reg, err := StartRegistryWith(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Stop() })
	imgs, err := reg.BuildBusyboxImage(ctx, "test/busybox", "1", "2")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	c, err := StartContainerd(ctx, ContainerdOptions{Dir: filepath.Join(dir, "c")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("containerd Stop: %v", err)
		}
	})
	return &TestRuntime{Registry: reg, Images: imgs, Containerd: c, Dir: dir}
}
