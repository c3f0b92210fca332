//go:build qemu

// The QEMU boot test needs the network (Debian packages) and a few
// minutes, so it runs only with -tags qemu: make image-boot.

package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"outpost.dev/boards/images"
)

// TestBootQEMU builds the qemu-arm64 image, boots it under
// qemu-system-aarch64 and follows the console until the agent speaks:
// with a relay URL pointing at a closed port on the host, its first line
// is a join error that proves the guest got this far, network included.
func TestBootQEMU(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-aarch64")
	if err != nil {
		t.Fatal("qemu-system-aarch64 is missing: install Debian's qemu-system-arm")
	}
	out := t.TempDir()
	start := time.Now()
	if err := run([]string{"-board", "qemu-arm64", "-out", out, "-relay", "https://10.0.2.2:1", "-token", "abcdef.0123456789abcdef", "-root-free", "64"}); err != nil {
		t.Fatal(err)
	}
	t.Logf("image built in %s", time.Since(start).Round(time.Second))
	base := filepath.Join(out, "outpost-qemu-arm64")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-M", "virt", "-cpu", "cortex-a72", "-m", "512", "-smp", "2", "-nographic", "-no-reboot",
		"-kernel", base+".vmlinuz", "-initrd", base+".initrd", "-append", qemuArm64Console(t)+" root=LABEL=outpost-root",
		"-drive", "file="+base+".img,format=raw,if=virtio",
		"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,romfile=")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	boot := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	want := []string{"outpost: initramfs: root is /dev/vda2", "outpost: up: outpost-", "outpost: containerd is up",
		"outpost-agent: join: cannot reach relay at 10.0.2.2:1"}
	var console []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && len(want) > 0 {
		line := strings.TrimSpace(sc.Text())
		console = append(console, line)
		if strings.Contains(line, want[0]) {
			t.Logf("%5.1fs after start: %s", time.Since(boot).Seconds(), line)
			want = want[1:]
		}
	}
	if len(want) > 0 {
		t.Fatalf("the console never showed %q; it showed:\n%s", want[0], strings.Join(console, "\n"))
	}
}

func qemuArm64Console(t *testing.T) string {
	b, err := images.Lookup("qemu-arm64")
	if err != nil {
		t.Fatal(err)
	}
	return b.Console
}
