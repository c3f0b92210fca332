package rootfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBusyboxApplets(t *testing.T) {
	table := "[\x00[[\x00findfs\x00init\x00insmod\x00ip\x00modprobe\x00mount\x00sh\x00switch_root\x00udhcpc\x00\x00rest"
	for _, tc := range []struct{ name, before string }{
		{"NUL before the table (arm64)", "ELF...\x00"},
		{"code bytes before it (riscv64)", "ELF...\xa0\x88 "},
	} {
		got, err := BusyboxApplets([]byte(tc.before + table))
		if err != nil || len(got) != 11 || got[0] != "[" || got[10] != "udhcpc" {
			t.Errorf("%s: applets %q, %v", tc.name, got, err)
		}
	}
	if _, err := BusyboxApplets([]byte("\x00[\x00[[\x00sh\x00\x00")); err == nil || !strings.Contains(err.Error(), "lacks the mount applet") {
		t.Errorf("short table: %v", err)
	}
}

// TestMergeUsr: /bin, /sbin and /lib from bookworm-style packages move
// under /usr next to trixie-style ones and become links; a file in both
// halves is an error.
func TestMergeUsr(t *testing.T) {
	root := t.TempDir()
	for _, f := range []string{"bin/busybox", "lib/aarch64-linux-gnu/libc.so.6", "usr/lib/aarch64-linux-gnu/libseccomp.so.2", "usr/sbin/runc"} {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := MergeUsr(root); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"bin", "sbin", "lib"} {
		if l, err := os.Readlink(filepath.Join(root, d)); err != nil || l != "usr/"+d {
			t.Errorf("/%s: link %q, %v; want usr/%s", d, l, err, d)
		}
	}
	for _, f := range []string{"usr/bin/busybox", "bin/busybox", "usr/lib/aarch64-linux-gnu/libc.so.6", "usr/lib/aarch64-linux-gnu/libseccomp.so.2", "sbin/runc"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("after merging: %v", err)
		}
	}
	if err := MergeUsr(root); err != nil {
		t.Errorf("merging twice: %v", err)
	}

	clash := t.TempDir()
	for _, f := range []string{"bin/sh", "usr/bin/sh"} {
		os.MkdirAll(filepath.Join(clash, filepath.Dir(f)), 0o755)
		os.WriteFile(filepath.Join(clash, f), nil, 0o755)
	}
	if err := MergeUsr(clash); err == nil || !strings.Contains(err.Error(), "both exist") {
		t.Errorf("/bin/sh and /usr/bin/sh: %v, want an error naming both", err)
	}
}
