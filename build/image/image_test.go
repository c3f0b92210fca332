package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	agentboards "outpost.dev/boards"
)

func TestMBRBytes(t *testing.T) {
	b, err := MBR(0xdeadbeef, []Partition{
		{Type: 0x0c, Bootable: true, Start: 2048, Sectors: 262144},
		{Type: 0x83, Start: 264192, Sectors: 1000},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 512 || b[510] != 0x55 || b[511] != 0xaa {
		t.Fatal("no boot signature")
	}
	if id := binary.LittleEndian.Uint32(b[440:]); id != 0xdeadbeef {
		t.Errorf("disk id %x", id)
	}
	want := []byte{0x80, 0xfe, 0xff, 0xff, 0x0c, 0xfe, 0xff, 0xff, 0x00, 0x08, 0, 0, 0, 0, 4, 0}
	if !bytes.Equal(b[446:462], want) {
		t.Errorf("entry 1 = % x, want % x", b[446:462], want)
	}
	if b[462] != 0 || b[466] != 0x83 || binary.LittleEndian.Uint32(b[470:]) != 264192 || binary.LittleEndian.Uint32(b[474:]) != 1000 {
		t.Errorf("entry 2 = % x", b[462:478])
	}
	if !bytes.Equal(b[478:510], make([]byte, 32)) {
		t.Error("unused entries are not zero")
	}
	if _, err := MBR(1, []Partition{{Type: 0x83, Start: 2048, Sectors: 10}, {Type: 0x83, Start: 2050, Sectors: 10}}); err == nil {
		t.Error("overlapping partitions accepted")
	}
}

// TestMBRReadBySfdisk has util-linux read the table back.
func TestMBRReadBySfdisk(t *testing.T) {
	if _, err := exec.LookPath("sfdisk"); err != nil {
		t.Fatal("sfdisk is missing: install Debian's fdisk package (build/install-deps.sh)")
	}
	b, _ := MBR(0x12345678, []Partition{{Type: 0x0c, Bootable: true, Start: 2048, Sectors: 2048}, {Type: 0x83, Start: 4096, Sectors: 4096}})
	img := filepath.Join(t.TempDir(), "disk.img")
	os.WriteFile(img, append(b, make([]byte, 8192*512)...), 0o644)
	out, err := exec.Command("sfdisk", "--dump", img).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"label-id: 0x12345678", "start=        2048, size=        2048, type=c, bootable", "start=        4096, size=        4096, type=83"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("sfdisk --dump lacks %q:\n%s", want, out)
		}
	}
}

// TestCpioLayout reads the newc archive back field by field.
func TestCpioLayout(t *testing.T) {
	var buf bytes.Buffer
	c := &cpioWriter{w: &buf, mtime: 1700000000}
	c.Dir("dev", 0o755)
	c.CharDev("dev/console", 0o600, 5, 1)
	c.File("init", 0o755, []byte("#!/bin/sh\n"))
	c.Symlink("bin/sh", "busybox")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	type entry struct {
		name         string
		mode         uint64
		data         string
		major, minor uint64
	}
	var got []entry
	b := buf.Bytes()
	for off := 0; off < len(b); {
		h := string(b[off : off+110])
		if h[:6] != "070701" {
			t.Fatalf("bad magic at %d: %q", off, h[:6])
		}
		field := func(i int) uint64 { v, _ := strconv.ParseUint(h[6+8*i:14+8*i], 16, 32); return v }
		if field(5) != 1700000000 || field(2) != 0 || field(3) != 0 {
			t.Errorf("entry at %d: mtime %d uid %d gid %d", off, field(5), field(2), field(3))
		}
		nameLen, size := int(field(11)), int(field(6))
		name := string(b[off+110 : off+110+nameLen-1])
		off += (110 + nameLen + 3) &^ 3
		got = append(got, entry{name, field(1), string(b[off : off+size]), field(9), field(10)})
		off += (size + 3) &^ 3
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Errorf("%d bytes after the trailer", len(b)-off)
			}
			break
		}
	}
	want := []entry{
		{"dev", 0o40755, "", 0, 0}, {"dev/console", 0o20600, "", 5, 1}, {"init", 0o100755, "#!/bin/sh\n", 0, 0},
		{"bin/sh", 0o120777, "busybox", 0, 0}, {"TRAILER!!!", 0, "", 0, 0},
	}
	if len(got) != len(want) {
		t.Fatalf("entries %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestUnknownBoardListsKnownOnes(t *testing.T) {
	err := run([]string{"-board", "rpi5"})
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, want := range []string{`unknown board "rpi5"`, "make image BOARD=NAME", "  qemu-arm64 ", "  qemu-riscv64 ", "  rpi4 "} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if err := run(nil); err == nil || !strings.HasPrefix(err.Error(), "no board given") {
		t.Errorf("no board: %v", err)
	}
}

func TestMissingToolNamesPackage(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	err := checkTools()
	if err == nil || !strings.Contains(err.Error(), "apt-get install apt dpkg e2fsprogs mtools xz-utils") {
		t.Errorf("checkTools with an empty PATH: %v", err)
	}
}

func TestBusyboxApplets(t *testing.T) {
	table := "[\x00[[\x00findfs\x00init\x00insmod\x00ip\x00modprobe\x00mount\x00sh\x00switch_root\x00udhcpc\x00\x00rest"
	for _, tc := range []struct{ name, before string }{
		{"NUL before the table (arm64)", "ELF...\x00"},
		{"code bytes before it (riscv64)", "ELF...\xa0\x88 "},
	} {
		got, err := busyboxApplets([]byte(tc.before + table))
		if err != nil || len(got) != 11 || got[0] != "[" || got[10] != "udhcpc" {
			t.Errorf("%s: applets %q, %v", tc.name, got, err)
		}
	}
	if _, err := busyboxApplets([]byte("\x00[\x00[[\x00sh\x00\x00")); err == nil || !strings.Contains(err.Error(), "lacks the mount applet") {
		t.Errorf("short table: %v", err)
	}
}

func TestModulesDepAndOrder(t *testing.T) {
	ms := &modules{dir: "/m", byName: map[string]*module{}, alias: map[string]string{"crypto-crc32c": "crc32c_generic"}}
	for _, m := range []*module{
		{name: "ext4", path: "kernel/fs/ext4/ext4.ko", depends: []string{"jbd2", "mbcache"}, softPre: []string{"crypto-crc32c"}},
		{name: "jbd2", path: "kernel/fs/jbd2/jbd2.ko"},
		{name: "mbcache", path: "kernel/fs/mbcache.ko"},
		{name: "crc32c_generic", path: "kernel/crypto/crc32c_generic.ko"},
		{name: "bridge", path: "kernel/net/bridge/bridge.ko", depends: []string{"llc", "stp"}},
		{name: "stp", path: "kernel/net/802/stp.ko", depends: []string{"llc"}},
		{name: "llc", path: "kernel/net/llc/llc.ko"},
	} {
		ms.byName[m.name] = m
	}
	order, err := ms.closure([]string{"ext4"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range order {
		names = append(names, m.name)
	}
	if got := strings.Join(names, " "); got != "crc32c_generic jbd2 mbcache ext4" {
		t.Errorf("load order %q", got)
	}
	dep := ms.modulesDep(order)
	if !strings.Contains(dep, "kernel/fs/ext4/ext4.ko: kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n") || !strings.Contains(dep, "kernel/fs/jbd2/jbd2.ko:\n") {
		t.Errorf("modules.dep:\n%s", dep)
	}
	// modprobe loads from the end of the line: llc before stp before bridge.
	br, _ := ms.closure([]string{"bridge"}, nil)
	if dep := ms.modulesDep(br); !strings.Contains(dep, "kernel/net/bridge/bridge.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko\n") {
		t.Errorf("modules.dep for bridge:\n%s", dep)
	}
	if _, err := ms.closure([]string{"nosuch"}, map[string]bool{"virtio_blk": true}); err == nil {
		t.Error("a missing module was not an error")
	}
	if _, err := ms.closure([]string{"virtio-blk"}, map[string]bool{"virtio_blk": true}); err != nil {
		t.Errorf("a built-in module: %v", err)
	}
}

// TestExt4Repeatable writes a small tree twice, a second apart, and wants
// the same bytes: fixed UUID and seed, times and owners fixed by debugfs.
func TestExt4Repeatable(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: install Debian's e2fsprogs", tool)
		}
	}
	o := &options{board: boards["qemu-arm64"], epoch: time.Unix(1700000000, 0)}
	var sums [2][]byte
	for i := range sums {
		dir := t.TempDir()
		root := filepath.Join(dir, "root")
		os.MkdirAll(filepath.Join(root, "etc/outpost"), 0o755)
		os.WriteFile(filepath.Join(root, "etc/outpost/agent.yaml"), []byte("server: https://r:1\n"), 0o644)
		os.Symlink("/run/resolv.conf", filepath.Join(root, "etc/resolv.conf"))
		img := filepath.Join(dir, "root.img")
		if err := ext4Image(o, root, img, 8<<20); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		sums[i] = b
		if i == 0 {
			out, _ := exec.Command("debugfs", "-R", "stat /etc/outpost/agent.yaml", img).CombinedOutput()
			if !strings.Contains(string(out), "User:     0   Group:     0") || !strings.Contains(string(out), "ctime: 0x6553f100") {
				t.Errorf("debugfs stat:\n%s", out)
			}
			time.Sleep(1100 * time.Millisecond)
		}
	}
	if !bytes.Equal(sums[0], sums[1]) {
		t.Error("the same tree gave two different ext4 images")
	}
}

// TestAgentBoards: the board each image writes into the first-boot config
// must be one the agent knows, or outpost-agent run exits at start.
func TestAgentBoards(t *testing.T) {
	for _, name := range boardNames() {
		b := boards[name]
		ab := b.agentBoard
		if ab == "" {
			ab = b.name
		}
		if _, err := agentboards.Lookup(ab); err != nil {
			t.Errorf("image board %s writes board: %s, which the agent does not know: %v", name, ab, err)
		}
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
	if err := mergeUsr(root); err != nil {
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
	if err := mergeUsr(root); err != nil {
		t.Errorf("merging twice: %v", err)
	}

	clash := t.TempDir()
	for _, f := range []string{"bin/sh", "usr/bin/sh"} {
		os.MkdirAll(filepath.Join(clash, filepath.Dir(f)), 0o755)
		os.WriteFile(filepath.Join(clash, f), nil, 0o755)
	}
	if err := mergeUsr(clash); err == nil || !strings.Contains(err.Error(), "both exist") {
		t.Errorf("/bin/sh and /usr/bin/sh: %v, want an error naming both", err)
	}
}

func TestDecompressModules(t *testing.T) {
	if _, err := exec.LookPath("xz"); err != nil {
		t.Fatal("xz is missing: install Debian's xz-utils")
	}
	dir := t.TempDir()
	ko := filepath.Join(dir, "lib/modules/6.12.0/kernel/virtio_blk.ko")
	os.MkdirAll(filepath.Dir(ko), 0o755)
	if err := os.WriteFile(ko, []byte("\x7fELF module"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("xz", ko).CombinedOutput(); err != nil {
		t.Fatalf("xz: %v %s", err, out)
	}
	if err := decompressModules(dir); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(ko); err != nil || string(b) != "\x7fELF module" {
		t.Errorf("%s after decompressing: %q, %v", ko, b, err)
	}
	os.WriteFile(ko+".zst", nil, 0o644)
	if err := decompressModules(dir); err == nil || !strings.Contains(err.Error(), "only xz") {
		t.Errorf("a .ko.zst: %v, want an error", err)
	}
}

func TestInsecureRegistriesFlag(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"10.0.2.2:5000", true}, {"reg.local:443", true},
		{"10.0.2.2", false}, {"http://10.0.2.2:5000", false}, {"a b:1", false}, {"h:0", false}, {"h:99999", false}, {`h"x:1`, false},
	} {
		if got := validHostPort(tc.in); got != tc.ok {
			t.Errorf("validHostPort(%q) = %v, want %v", tc.in, got, tc.ok)
		}
	}
	err := run([]string{"-board", "qemu-arm64", "-insecure-registries", "http://x:1"})
	if err == nil || !strings.Contains(err.Error(), "is not HOST:PORT") {
		t.Errorf("a URL as a registry: %v", err)
	}
}

func TestCACertHashFlag(t *testing.T) {
	err := run([]string{"-board", "qemu-arm64", "-ca-cert-hash", "md5:abc"})
	if err == nil || !strings.Contains(err.Error(), "-ca-cert-hash") || !strings.Contains(err.Error(), "64 hex digits") {
		t.Errorf("a malformed pin: %v", err)
	}
}
