package disk

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
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

func requireSfdisk(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("sfdisk"); err != nil {
		t.Fatal("sfdisk is missing: install Debian's fdisk package (build/install-deps.sh)")
	}
}

// TestMBRReadBySfdisk has util-linux read the table back.
func TestMBRReadBySfdisk(t *testing.T) {
	requireSfdisk(t)
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

// TestAssemble places a 1.5 MiB boot and a 1 MiB root partition: the root
// starts at the next MiB, both are where the table says, and sfdisk reads
// the table back.
func TestAssemble(t *testing.T) {
	requireSfdisk(t)
	dir := t.TempDir()
	boot, root := bytes.Repeat([]byte{0xb0}, 3*MiB/2), make([]byte, MiB)
	copy(root[MiB-4:], "root")
	bootImg, rootImg, img := filepath.Join(dir, "boot.img"), filepath.Join(dir, "root.img"), filepath.Join(dir, "disk.img")
	os.WriteFile(bootImg, boot, 0o644)
	os.WriteFile(rootImg, root, 0o644)
	bs, rs, err := Assemble(img, bootImg, rootImg, 0xa1ca9646)
	if err != nil {
		t.Fatal(err)
	}
	if bs != int64(len(boot)) || rs != int64(len(root)) {
		t.Errorf("sizes %d, %d; want %d, %d", bs, rs, len(boot), len(root))
	}
	got, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4*MiB || !bytes.Equal(got[MiB:MiB+len(boot)], boot) || !bytes.Equal(got[3*MiB:], root) {
		t.Errorf("image of %d bytes does not hold the boot partition at 1 MiB and the root at 3 MiB", len(got))
	}
	out, err := exec.Command("sfdisk", "--dump", img).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"label-id: 0xa1ca9646", "start=        2048, size=        3072, type=c, bootable", "start=        6144, size=        2048, type=83"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("sfdisk --dump lacks %q:\n%s", want, out)
		}
	}
}

// TestExt4Repeatable writes a small tree twice, the second time with
// other times on its files, and wants the same bytes: fixed UUID and seed,
// times and owners fixed by debugfs, e2fsprogs' clock fixed to the epoch.
// Every inode time (to the nanosecond, which the build's clock could not
// hit twice) and every superblock time must be the epoch, so no clock
// reading reaches the image whichever second the builds run in.
func TestExt4Repeatable(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "debugfs", "dumpe2fs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: install Debian's e2fsprogs", tool)
		}
	}
	epoch := time.Unix(1700000000, 0)
	uuid := [16]byte{0x6c, 0x1d, 0x2a, 0x7e, 0x10, 0x3b, 0x4f, 0x5a, 0x8c, 0x9d, 0xae, 0xbf, 0xc0, 0xd1, 0xe2, 0xf3}
	paths := []string{"/", "/etc", "/etc/outpost", "/etc/outpost/agent.yaml", "/etc/resolv.conf"}
	// The tree's own times, as a checkout or an earlier build left them:
	// the first tree's are now, the second's a day and a bit later.
	other := time.Now().Add(24*time.Hour + 1234567891*time.Nanosecond)
	var sums [2][]byte
	for i := range sums {
		dir := t.TempDir()
		root := filepath.Join(dir, "root")
		os.MkdirAll(filepath.Join(root, "etc/outpost"), 0o755)
		os.WriteFile(filepath.Join(root, "etc/outpost/agent.yaml"), []byte("server: https://r:1\n"), 0o644)
		os.Symlink("/run/resolv.conf", filepath.Join(root, "etc/resolv.conf"))
		if i == 1 {
			for _, p := range paths {
				if p == "/etc/resolv.conf" {
					continue // os.Chtimes follows symlinks
				}
				if err := os.Chtimes(filepath.Join(root, p), other, other); err != nil {
					t.Fatal(err)
				}
			}
		}
		img := filepath.Join(dir, "root.img")
		if err := Ext4(root, img, "outpost-root", 8<<20, uuid, epoch); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		sums[i] = b
		for _, p := range paths {
			out, _ := exec.Command("debugfs", "-R", "stat "+p, img).CombinedOutput()
			if !strings.Contains(string(out), "User:     0   Group:     0") {
				t.Errorf("build %d: debugfs stat %s: not owned by 0:0:\n%s", i, p, out)
			}
			for _, f := range []string{" ctime", " atime", " mtime", "crtime"} {
				if want := f + ": 0x6553f100:00000000"; !strings.Contains(string(out), want) {
					t.Errorf("build %d: debugfs stat %s lacks %q:\n%s", i, p, want, out)
				}
			}
		}
		dump := exec.Command("dumpe2fs", "-h", img)
		dump.Env = append(os.Environ(), "TZ=UTC")
		out, err := dump.CombinedOutput()
		if err != nil {
			t.Fatalf("dumpe2fs: %v\n%s", err, out)
		}
		at := epoch.UTC().Format(time.ANSIC)
		for _, f := range []string{"Filesystem created:", "Last write time:", "Last checked:"} {
			if !regexp.MustCompile(`(?m)^` + f + ` +` + at + `$`).Match(out) {
				t.Errorf("build %d: dumpe2fs -h: %s is not %s:\n%s", i, f, at, out)
			}
		}
		if !regexp.MustCompile(`(?m)^Last mount time: +n/a$`).Match(out) {
			t.Errorf("build %d: dumpe2fs -h: the image was mounted:\n%s", i, out)
		}
	}
	if !bytes.Equal(sums[0], sums[1]) {
		t.Error("the same tree gave two different ext4 images")
	}
}
