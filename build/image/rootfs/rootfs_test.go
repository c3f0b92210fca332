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

// TestKeepOnly: everything but the kept names goes; a kept name that is
// not there is an error.
func TestKeepOnly(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"bridge", "host-local", "portmap", "dhcp", "macvlan"} {
		os.WriteFile(filepath.Join(dir, f), nil, 0o755)
	}
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	if err := KeepOnly(dir, []string{"bridge", "host-local", "portmap"}); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, " ") != "bridge host-local portmap" {
		t.Errorf("left %q", got)
	}
	for _, bad := range [][]string{{"tuning"}, {"../portmap"}, {""}} {
		if err := KeepOnly(dir, bad); err == nil {
			t.Errorf("KeepOnly %q: no error", bad)
		}
	}
}

// TestAlternatives: links in the same directory to existing targets; a
// missing target, an existing name or a path is an error.
func TestAlternatives(t *testing.T) {
	root := t.TempDir()
	sbin := filepath.Join(root, "usr/sbin")
	os.MkdirAll(sbin, 0o755)
	os.WriteFile(filepath.Join(sbin, "xtables-nft-multi"), nil, 0o755)
	os.Symlink("xtables-nft-multi", filepath.Join(sbin, "iptables-nft"))
	if err := Alternatives(root, "usr/sbin", map[string]string{"iptables": "iptables-nft"}); err != nil {
		t.Fatal(err)
	}
	if l, err := os.Readlink(filepath.Join(sbin, "iptables")); err != nil || l != "iptables-nft" {
		t.Errorf("iptables -> %q, %v", l, err)
	}
	for _, bad := range []map[string]string{
		{"iptables": "iptables-nft"},         // exists already
		{"ip6tables": "ip6tables-nft"},       // no target
		{"ip6tables": "../../bin/busybox"},   // a path
		{"../iptables-save": "iptables-nft"}, // a path
	} {
		if err := Alternatives(root, "usr/sbin", bad); err == nil {
			t.Errorf("Alternatives %v: no error", bad)
		}
	}
}
