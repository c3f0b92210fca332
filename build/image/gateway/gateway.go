// Package gateway builds a flashable disk image for a gateway board without
// root, loop devices or mounts, in the manner of gokrazy: the agent from
// build/cross, Debian's containerd, runc, busybox, CNI plugins, iptables
// and kernel for the board's architecture (fetched by build/image/apt and unpacked by
// build/image/rootfs, never installed or run), the image's own files
// (files/), the board's kernel modules (build/image/kmod) and an initramfs
// (build/image/cpio), then a FAT boot and an ext4 root partition behind an
// MBR (build/image/disk). Build runs the steps in order and prints each.
//
// The image boots busybox init, which mounts what is needed, starts
// containerd, then the agent; on first boot the agent joins with the token
// and the token is deleted. The same commit, Debian packages and epoch
// give the same bytes. The boards it builds for are outpost.dev/boards/images.
package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"outpost.dev/boards/images"
	"outpost.dev/build/cross"
	"outpost.dev/build/image/apt"
	"outpost.dev/build/image/disk"
	"outpost.dev/build/image/kmod"
	"outpost.dev/build/image/rootfs"
)

// Config is one image to build.
type Config struct {
	Image                 images.Image
	Relay, Token, Version string
	CACertHash            string   // pin of the relay CA, passed to the first-boot join
	UpgradePublicKey      string   // upgradePublicKey in agent.yaml: the key agent upgrades are signed with
	Registries            []string // host:port reached over plain HTTP
	Out, Cache            string   // output directory; cache for Debian package lists and packages
	Mirror                string
	SecurityMirror        string // "" for none
	Suite                 string // "" for the board's
	RootFree              int64  // bytes free in the root file system
	Epoch                 time.Time
}

// builder is one run of Build: the config and its progress.
type builder struct {
	Config
	start       time.Time
	step, steps int
}

func (o *builder) progress(format string, args ...any) {
	o.step++
	fmt.Printf("[%2d/%d %5.1fs] %s\n", o.step, o.steps, time.Since(o.start).Seconds(), fmt.Sprintf(format, args...))
}

func (o *builder) note(format string, args ...any) {
	fmt.Printf("              %s\n", fmt.Sprintf(format, args...))
}

// Build writes OUT/outpost-BOARD.img, the kernel and initramfs beside it
// (.vmlinuz, .initrd, for QEMU's -kernel and -initrd) and a .manifest
// naming the agent, the kernel, the image's SHA-256 and every Debian
// package, reporting each step on standard output.
func Build(c Config) error {
	o := &builder{Config: c, start: time.Now(), steps: 11}
	b := o.Image
	if o.Suite == "" {
		o.Suite = b.Suite
	}
	if o.Suite == "" {
		o.Suite = "bookworm"
	}
	root, err := cross.ModuleRoot(".")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return err
	}
	work := filepath.Join(o.Out, "work-"+b.Name)
	if err := os.RemoveAll(work); err != nil {
		return err
	}
	rootDir, kdir, fwdir := filepath.Join(work, "root"), filepath.Join(work, "kernel"), filepath.Join(work, "firmware")
	for _, d := range []string{rootDir, kdir, fwdir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}

	tg, err := cross.Lookup(b.Arch)
	if err != nil {
		return err
	}
	// outpost-logger beside the agent is the logger process of
	// `logging: process` (0.7 MB PSS per container; the default, `logging:
	// agent`, copies the logs in the agent and runs none); without it that
	// setting would run the agent itself in logger mode.
	// outpost-boot is what agent.sh runs: the agent of the current
	// upgrade slot, else this outpost-agent.
	for _, cmd := range []string{"outpost-agent", "outpost-logger", "outpost-boot"} {
		o.progress("agent: building %s for %s", cmd, tg.Name())
		out := filepath.Join(rootDir, "usr/bin", cmd)
		if err := cross.Build(context.Background(), tg, out, cross.Options{ModuleRoot: root, Version: o.Version, Package: "./agent/cmd/" + cmd}); err != nil {
			return err
		}
	}

	o.progress("debian: package lists for %s %s (private apt state in %s)", o.Suite, b.Arch, o.Cache)
	a, err := apt.New(o.Cache, o.Mirror, o.SecurityMirror, o.Suite, b.Arch, o.note)
	if err != nil {
		return err
	}
	if err := a.Update(); err != nil {
		return err
	}
	userland, err := a.Resolve(append([]string{"containerd", "runc", "busybox-static"}, podNetPackages...), nil)
	if err != nil {
		return err
	}
	// The kernel package's own dependencies (initramfs-tools, kmod, ...)
	// would run on a full Debian; this image has its own initramfs.
	kernelPkg, err := a.DependsOn("linux-image-"+b.Arch, "linux-image-")
	if err != nil {
		return err
	}
	boot := []string{kernelPkg}
	if b.Firmware {
		boot = append(boot, "raspi-firmware")
	}
	bootPkgs, err := a.Resolve(nil, boot)
	if err != nil {
		return err
	}

	o.progress("debian: downloading %d packages (cached in %s)", len(userland)+len(bootPkgs), a.Dir())
	userDebs, err := a.Download(userland)
	if err != nil {
		return err
	}
	bootDebs, err := a.Download(bootPkgs)
	if err != nil {
		return err
	}

	o.progress("root: unpacking %d packages with dpkg-deb -x (no maintainer scripts run)", len(userDebs))
	for _, d := range userDebs {
		if err := rootfs.Unpack(d, rootDir); err != nil {
			return err
		}
	}
	for _, d := range bootDebs {
		dst := kdir
		if strings.Contains(filepath.Base(d), "raspi-firmware") {
			dst = fwdir
		}
		if err := rootfs.Unpack(d, dst); err != nil {
			return err
		}
	}
	// trixie's packages install into /usr only (merged /usr); bookworm's
	// still use /bin and /lib. Both end up merged, as on a Debian install.
	for _, d := range []string{rootDir, kdir} {
		if err := rootfs.MergeUsr(d); err != nil {
			return err
		}
	}
	if err := rootfs.Prune(rootDir); err != nil {
		return err
	}
	if err := podNetwork(rootDir); err != nil {
		return err
	}
	if err := kmod.Decompress(kdir); err != nil {
		return err
	}

	o.progress("root: busybox, init, containerd config and the first-boot config")
	if err := o.layout(rootDir); err != nil {
		return err
	}

	o.progress("kernel: modules and initramfs")
	kver, err := kernelVersion(kdir)
	if err != nil {
		return err
	}
	initrd, nmods, err := o.kernelFiles(kdir, kver, rootDir)
	if err != nil {
		return err
	}
	o.note("kernel %s, %d modules, initramfs %.1f MB", kver, nmods, float64(len(initrd))/1e6)

	o.progress("boot: FAT partition with the kernel%s", map[bool]string{true: ", device trees and Raspberry Pi firmware", false: ""}[b.Firmware])
	bootDir := filepath.Join(work, "boot")
	if err := o.bootFiles(kdir, kver, fwdir, initrd, bootDir); err != nil {
		return err
	}
	bootImg := filepath.Join(work, "boot.img")
	h := o.sum("boot")
	if err := disk.FAT(bootDir, bootImg, 128<<20, binary.BigEndian.Uint32(h[:4]), o.Epoch); err != nil {
		return err
	}

	o.progress("root: ext4 file system with mkfs.ext4 -d")
	rootImg := filepath.Join(work, "root.img")
	used, err := rootfs.Size(rootDir)
	if err != nil {
		return err
	}
	rootSize := disk.RoundUp(used+used/5+o.RootFree, disk.MiB)
	h = o.sum("root")
	if err := disk.Ext4(rootDir, rootImg, "outpost-root", rootSize, [16]byte(h[:16]), o.Epoch); err != nil {
		return err
	}

	o.progress("disk: MBR, boot and root partitions")
	img := filepath.Join(o.Out, "outpost-"+b.Name+".img")
	h = o.sum("disk")
	id := binary.BigEndian.Uint32(h[:4])
	bs, rs, err := disk.Assemble(img, bootImg, rootImg, id)
	if err != nil {
		return err
	}
	o.note("partition 1: FAT32 boot, %d MiB; partition 2: ext4 root (label outpost-root), %d MiB; disk id %08x", bs/disk.MiB, rs/disk.MiB, id)
	// For QEMU's -kernel and -initrd: the same kernel and initramfs.
	for name, src := range map[string]string{".vmlinuz": filepath.Join(bootDir, "vmlinuz"), ".initrd": filepath.Join(bootDir, "initrd.img")} {
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(o.Out, "outpost-"+b.Name+name), data, 0o644); err != nil {
			return err
		}
	}

	o.progress("manifest")
	sum, size, err := fileSum(img)
	if err != nil {
		return err
	}
	all := map[string]string{}
	for k, v := range userland {
		all[k] = v
	}
	for k, v := range bootPkgs {
		all[k] = v
	}
	if err := os.WriteFile(filepath.Join(o.Out, "outpost-"+b.Name+".manifest"), []byte(o.manifest(kver, img, size, sum, all)), 0o644); err != nil {
		return err
	}
	if err := os.RemoveAll(work); err != nil {
		return err
	}
	fmt.Printf("wrote %s: %.1f MB (root file system %.1f MB used of %.1f MB), in %.0fs\n", img, float64(size)/1e6,
		float64(used)/1e6, float64(rootSize)/1e6, time.Since(o.start).Seconds())
	switch {
	case b.Firmware:
		fmt.Printf("flash it: dd if=%s of=/dev/sdX bs=4M conv=fsync (or Raspberry Pi Imager, \"Use custom\")\n", img)
	default:
		fmt.Printf("boot it: %[4]s -m 512 -nographic -kernel %[1]s.vmlinuz -initrd %[1]s.initrd -append '%[2]s root=LABEL=outpost-root' -drive file=%[3]s,format=raw,if=virtio -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile=\n",
			filepath.Join(o.Out, "outpost-"+b.Name), b.Console, img, b.Qemu)
	}
	return nil
}

// manifest names the board, agent, kernel, image and every Debian
// package with its version.
func (o *builder) manifest(kver, img string, size int64, sum [32]byte, debs map[string]string) string {
	var man strings.Builder
	fmt.Fprintf(&man, "board %s\nagent %s\nkernel %s\nimage %s %d sha256:%x\nsource-date-epoch %d\n", o.Image.Name, versionOr(o.Version), kver, filepath.Base(img), size, sum, o.Epoch.Unix())
	var names []string
	for k := range debs {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&man, "debian %s %s %s\n", n, debs[n], o.Image.Arch)
	}
	return man.String()
}

// sum derives repeatable identifiers (UUIDs, serials) from the board,
// the version and the time.
func (o *builder) sum(what string) [32]byte {
	return sha256.Sum256([]byte(fmt.Sprintf("outpost %s %s %s %d", what, o.Image.Name, o.Version, o.Epoch.Unix())))
}

func versionOr(v string) string {
	if v == "" {
		return "dev"
	}
	return v
}

func fileSum(path string) ([32]byte, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return [32]byte{}, 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s, n, err
}
