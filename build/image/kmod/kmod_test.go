package kmod

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestModulesDepAndOrder(t *testing.T) {
	ms := &Modules{dir: "/m", byName: map[string]*Module{}, alias: map[string]string{"crypto-crc32c": "crc32c_generic"}}
	for _, m := range []*Module{
		{Name: "ext4", Path: "kernel/fs/ext4/ext4.ko", Depends: []string{"jbd2", "mbcache"}, SoftPre: []string{"crypto-crc32c"}},
		{Name: "jbd2", Path: "kernel/fs/jbd2/jbd2.ko"},
		{Name: "mbcache", Path: "kernel/fs/mbcache.ko"},
		{Name: "crc32c_generic", Path: "kernel/crypto/crc32c_generic.ko"},
		{Name: "bridge", Path: "kernel/net/bridge/bridge.ko", Depends: []string{"llc", "stp"}},
		{Name: "stp", Path: "kernel/net/802/stp.ko", Depends: []string{"llc"}},
		{Name: "llc", Path: "kernel/net/llc/llc.ko"},
	} {
		ms.byName[m.Name] = m
	}
	order, err := ms.Closure([]string{"ext4"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range order {
		names = append(names, m.Name)
	}
	if got := strings.Join(names, " "); got != "crc32c_generic jbd2 mbcache ext4" {
		t.Errorf("load order %q", got)
	}
	dep := ms.ModulesDep(order)
	if !strings.Contains(dep, "kernel/fs/ext4/ext4.ko: kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n") || !strings.Contains(dep, "kernel/fs/jbd2/jbd2.ko:\n") {
		t.Errorf("modules.dep:\n%s", dep)
	}
	// modprobe loads from the end of the line: llc before stp before bridge.
	br, _ := ms.Closure([]string{"bridge"}, nil)
	if dep := ms.ModulesDep(br); !strings.Contains(dep, "kernel/net/bridge/bridge.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko\n") {
		t.Errorf("modules.dep for bridge:\n%s", dep)
	}
	if _, err := ms.Closure([]string{"nosuch"}, map[string]bool{"virtio_blk": true}); err == nil {
		t.Error("a missing module was not an error")
	}
	if _, err := ms.Closure([]string{"virtio-blk"}, map[string]bool{"virtio_blk": true}); err != nil {
		t.Errorf("a built-in module: %v", err)
	}
}

func TestDecompress(t *testing.T) {
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
	if err := Decompress(dir); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(ko); err != nil || string(b) != "\x7fELF module" {
		t.Errorf("%s after decompressing: %q, %v", ko, b, err)
	}
	os.WriteFile(ko+".zst", nil, 0o644)
	if err := Decompress(dir); err == nil || !strings.Contains(err.Error(), "only xz") {
		t.Errorf("a .ko.zst: %v, want an error", err)
	}
}
