package pods

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"outpost.dev/test/harness"
)

func gidMode(t *testing.T, p string) (int, os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return int(fi.Sys().(*syscall.Stat_t).Gid), fi.Mode()
}

// A container owns its emptyDir: a symlink in it, even one swapped in for
// a directory, never lets the agent change a file outside the volume.
func TestVolumeOwnershipStaysInside(t *testing.T) {
	harness.RequireRoot(t) // chown to another group; the agent runs as root
	dir := t.TempDir()
	root, outside := filepath.Join(dir, "vol"), filepath.Join(dir, "outside")
	for _, d := range []string{filepath.Join(root, "sub"), outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{filepath.Join(root, "sub", "f"), filepath.Join(outside, "secret")} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "dirlink")); err != nil {
		t.Fatal(err)
	}
	if err := volumeOwnership(root, 2000, false, ""); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{
		root:                         os.ModeDir | os.ModeSetgid | 0o775,
		filepath.Join(root, "sub"):   os.ModeDir | os.ModeSetgid | 0o775,
		filepath.Join(root, "sub/f"): 0o660,
	} {
		if g, m := gidMode(t, p); g != 2000 || m != want {
			t.Errorf("%s: gid %d mode %v, want 2000 %v", p, g, m, want)
		}
	}
	if g, _ := gidMode(t, filepath.Join(root, "link")); g != 2000 {
		t.Errorf("the symlink itself: gid %d, want 2000", g)
	}
	for _, p := range []string{outside, filepath.Join(outside, "secret")} {
		if g, m := gidMode(t, p); g != 0 || m.Perm()&0o070 != 0 && p != outside {
			t.Errorf("outside the volume %s changed: gid %d mode %v", p, g, m)
		}
	}
	if _, m := gidMode(t, outside); m != os.ModeDir|0o755 {
		t.Errorf("outside dir mode %v", m)
	}

	// OnRootMismatch: a root already right means nothing below is touched.
	if err := os.WriteFile(filepath.Join(root, "later"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := volumeOwnership(root, 2000, false, "OnRootMismatch"); err != nil {
		t.Fatal(err)
	}
	// (It has the group already: the setgid directory gave it.)
	if g, m := gidMode(t, filepath.Join(root, "later")); g != 2000 || m != 0o600 {
		t.Errorf("OnRootMismatch with the root right: gid %d mode %v, want 2000 and the mode untouched", g, m)
	}
	if err := volumeOwnership(root, 2000, false, "Always"); err != nil {
		t.Fatal(err)
	}
	if g, m := gidMode(t, filepath.Join(root, "later")); g != 2000 || m != 0o660 {
		t.Errorf("Always: gid %d mode %v, want 2000 -rw-rw----", g, m)
	}
	// A read-only volume's files get group read only.
	if err := volumeOwnership(root, 3000, true, ""); err != nil {
		t.Fatal(err)
	}
	if g, m := gidMode(t, filepath.Join(root, "later")); g != 3000 || m != 0o660 {
		t.Errorf("read-only: gid %d mode %v (bits are only added)", g, m)
	}
}
