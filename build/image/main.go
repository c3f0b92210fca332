// Command image builds a flashable disk image for a gateway board without
// root, loop devices or mounts, in the manner of gokrazy: the agent from
// build/cross, Debian's containerd, runc, busybox and kernel for the
// board's architecture (downloaded with a private apt configuration and
// unpacked with dpkg-deb -x, never installed or run), an initramfs written
// as cpio, a FAT boot partition written with mtools, an ext4 root written
// with mkfs.ext4 -d, and an MBR written here.
//
//	go run ./build/image -board rpi4 -relay https://relay:8443 -token abcdef.0123456789abcdef [-ca-cert-hash sha256:HEX]
//
// The image boots busybox init, which mounts what is needed, starts
// containerd, then the agent; on first boot the agent joins with the token
// and the token is deleted. The same commit, Debian packages and
// SOURCE_DATE_EPOCH give the same bytes.
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"

	"outpost.dev/agent/join"
	"outpost.dev/build/cross"
)

//go:embed files
var files embed.FS

type options struct {
	board                  board
	relay, token, version  string
	caCertHash             string   // pin of the relay CA, passed to the first-boot join
	registries             []string // host:port reached over plain HTTP
	out, cache             string
	mirror, securityMirror string
	suite                  string
	rootFree               int64 // bytes free in the root file system
	epoch                  time.Time
	start                  time.Time
	step, steps            int
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "image: %s\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fset := flag.NewFlagSet("image", flag.ContinueOnError)
	boardName := fset.String("board", "", "board to build for: "+strings.Join(boardNames(), ", "))
	o := &options{start: time.Now()}
	fset.StringVar(&o.relay, "relay", "", "relay URL written to the first-boot config, https://HOST:PORT")
	fset.StringVar(&o.token, "token", "", "bootstrap token the gateway joins with on first boot (outpost-relay token create)")
	fset.StringVar(&o.caCertHash, "ca-cert-hash", "", "pin the relay CA for the first-boot join: sha256:<hex>, as outpost-agent join --ca-cert-hash takes it (a leaked token then cannot point the gateway at another relay)")
	fset.StringVar(&o.version, "version", "", "version stamped into the agent; default dev")
	fset.StringVar(&o.out, "out", "bin/images", "output directory")
	cacheDefault, _ := os.UserCacheDir()
	fset.StringVar(&o.cache, "cache", filepath.Join(cacheDefault, "outpost"), "cache for Debian package lists and packages")
	fset.StringVar(&o.mirror, "mirror", "http://deb.debian.org/debian", "Debian mirror")
	fset.StringVar(&o.securityMirror, "security-mirror", "http://deb.debian.org/debian-security", "Debian security mirror; empty for none")
	fset.StringVar(&o.suite, "suite", "", "Debian suite; default the board's (bookworm, trixie for riscv64)")
	freeMiB := fset.Int64("root-free", 512, "MiB left free in the root file system for images and state")
	regs := fset.String("insecure-registries", "", "comma-separated HOST:PORT registries the agent pulls from over plain HTTP (tests: 10.0.2.2:PORT)")
	if err := fset.Parse(args); err != nil {
		return err
	}
	b, err := lookupBoard(*boardName)
	if err != nil {
		return err
	}
	o.board, o.rootFree = b, *freeMiB<<20
	for _, r := range strings.Split(*regs, ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		if !validHostPort(r) {
			return fmt.Errorf("-insecure-registries: %q is not HOST:PORT", r)
		}
		o.registries = append(o.registries, r)
	}
	if o.suite == "" {
		o.suite = b.suite
	}
	if o.suite == "" {
		o.suite = "bookworm"
	}
	if o.caCertHash != "" {
		if o.caCertHash, err = join.ParsePin(o.caCertHash); err != nil {
			return fmt.Errorf("-ca-cert-hash: %w", err)
		}
	}
	if o.relay == "" || o.token == "" {
		fmt.Fprintln(os.Stderr, "image: warning: no RELAY or TOKEN given: the gateway will boot but cannot join until /etc/outpost/agent.yaml has server and /etc/outpost/join-token the token")
	}
	if o.epoch, err = sourceDate(); err != nil {
		return err
	}
	if err := checkTools(); err != nil {
		return err
	}
	return build(o)
}

// checkTools names the Debian package of every missing tool at once.
func checkTools() error {
	need := []struct{ tool, pkg string }{
		{"apt-get", "apt"}, {"apt-cache", "apt"}, {"dpkg-deb", "dpkg"},
		{"mkfs.ext4", "e2fsprogs"}, {"debugfs", "e2fsprogs"},
		{"mformat", "mtools"}, {"mcopy", "mtools"}, {"xz", "xz-utils"},
	}
	var missing []string
	pkgs := map[string]bool{}
	for _, n := range need {
		if _, err := exec.LookPath(n.tool); err != nil {
			missing = append(missing, n.tool)
			pkgs[n.pkg] = true
		}
	}
	if len(missing) == 0 {
		return nil
	}
	var p []string
	for k := range pkgs {
		p = append(p, k)
	}
	sort.Strings(p)
	return fmt.Errorf("%s missing: apt-get install %s (or make install-deps)", strings.Join(missing, ", "), strings.Join(p, " "))
}

func (o *options) progress(format string, args ...any) {
	o.step++
	fmt.Printf("[%2d/%d %5.1fs] %s\n", o.step, o.steps, time.Since(o.start).Seconds(), fmt.Sprintf(format, args...))
}

func (o *options) note(format string, args ...any) {
	fmt.Printf("              %s\n", fmt.Sprintf(format, args...))
}

func build(o *options) error {
	b := o.board
	o.steps = 10
	root, err := cross.ModuleRoot(".")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	work := filepath.Join(o.out, "work-"+b.name)
	if err := os.RemoveAll(work); err != nil {
		return err
	}
	rootfs, kdir, fwdir := filepath.Join(work, "root"), filepath.Join(work, "kernel"), filepath.Join(work, "firmware")
	for _, d := range []string{rootfs, kdir, fwdir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}

	tg, err := cross.Lookup(b.arch)
	if err != nil {
		return err
	}
	// outpost-logger beside the agent writes the containers' logs at 0.7 MB
	// PSS each; without it the agent would run itself in logger mode.
	for _, cmd := range []string{"outpost-agent", "outpost-logger"} {
		o.progress("agent: building %s for %s", cmd, b.arch)
		out := filepath.Join(rootfs, "usr/bin", cmd)
		if err := cross.Build(context.Background(), tg, out, cross.Options{ModuleRoot: root, Version: o.version, Package: "./agent/cmd/" + cmd}); err != nil {
			return err
		}
	}

	o.progress("debian: package lists for %s %s (private apt state in %s)", o.suite, b.debArch, o.cache)
	a, err := newApt(o.cache, o.mirror, o.securityMirror, o.suite, b.debArch, o.note)
	if err != nil {
		return err
	}
	if err := a.update(); err != nil {
		return err
	}
	userland, err := a.resolve([]string{"containerd", "runc", "busybox-static"}, nil)
	if err != nil {
		return err
	}
	// The kernel package's own dependencies (initramfs-tools, kmod, ...)
	// would run on a full Debian; this image has its own initramfs.
	kernelMeta := "linux-image-" + b.debArch
	kernelPkg, err := a.dependsOn(kernelMeta, "linux-image-")
	if err != nil {
		return err
	}
	boot := []string{kernelPkg}
	if b.firmware {
		boot = append(boot, "raspi-firmware")
	}
	bootPkgs, err := a.resolve(nil, boot)
	if err != nil {
		return err
	}

	o.progress("debian: downloading %d packages (cached in %s)", len(userland)+len(bootPkgs), a.dir)
	userDebs, err := a.download(userland)
	if err != nil {
		return err
	}
	bootDebs, err := a.download(bootPkgs)
	if err != nil {
		return err
	}

	o.progress("root: unpacking %d packages with dpkg-deb -x (no maintainer scripts run)", len(userDebs))
	for _, d := range userDebs {
		if err := unpack(d, rootfs); err != nil {
			return err
		}
	}
	for _, d := range bootDebs {
		dst := kdir
		if strings.Contains(filepath.Base(d), "raspi-firmware") {
			dst = fwdir
		}
		if err := unpack(d, dst); err != nil {
			return err
		}
	}
	// trixie's packages install into /usr only (merged /usr); bookworm's
	// still use /bin and /lib. Both end up merged, as on a Debian install.
	for _, d := range []string{rootfs, kdir} {
		if err := mergeUsr(d); err != nil {
			return err
		}
	}
	if err := prune(rootfs); err != nil {
		return err
	}

	if err := decompressModules(kdir); err != nil {
		return err
	}

	o.progress("root: busybox, init, containerd config and the first-boot config")
	if err := layout(o, rootfs); err != nil {
		return err
	}

	o.progress("kernel: modules and initramfs")
	kver, err := kernelVersion(kdir)
	if err != nil {
		return err
	}
	initrd, nmods, err := kernelFiles(o, kdir, kver, rootfs)
	if err != nil {
		return err
	}
	o.note("kernel %s, %d modules, initramfs %.1f MB", kver, nmods, float64(len(initrd))/1e6)

	o.progress("boot: FAT partition with the kernel%s", map[bool]string{true: ", device trees and Raspberry Pi firmware", false: ""}[b.firmware])
	bootDir := filepath.Join(work, "boot")
	if err := bootFiles(o, kdir, kver, fwdir, initrd, bootDir); err != nil {
		return err
	}
	bootImg := filepath.Join(work, "boot.img")
	if err := fatImage(o, bootDir, bootImg, 128<<20); err != nil {
		return err
	}

	o.progress("root: ext4 file system with mkfs.ext4 -d")
	rootImg := filepath.Join(work, "root.img")
	used, err := duBytes(rootfs)
	if err != nil {
		return err
	}
	rootSize := roundUp(used+used/5+o.rootFree, 1<<20)
	if err := ext4Image(o, rootfs, rootImg, rootSize); err != nil {
		return err
	}

	o.progress("disk: MBR, boot and root partitions")
	img := filepath.Join(o.out, "outpost-"+b.name+".img")
	if err := assemble(o, img, bootImg, rootImg); err != nil {
		return err
	}
	// For QEMU's -kernel and -initrd: the same kernel and initramfs.
	for name, src := range map[string]string{".vmlinuz": filepath.Join(bootDir, "vmlinuz"), ".initrd": filepath.Join(bootDir, "initrd.img")} {
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(o.out, "outpost-"+b.name+name), data, 0o644); err != nil {
			return err
		}
	}

	o.progress("manifest")
	sum, size, err := fileSum(img)
	if err != nil {
		return err
	}
	var man strings.Builder
	fmt.Fprintf(&man, "board %s\nagent %s\nkernel %s\nimage %s %d sha256:%x\nsource-date-epoch %d\n", b.name, versionOr(o.version), kver, filepath.Base(img), size, sum, o.epoch.Unix())
	all := map[string]string{}
	for k, v := range userland {
		all[k] = v
	}
	for k, v := range bootPkgs {
		all[k] = v
	}
	var names []string
	for k := range all {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&man, "debian %s %s %s\n", n, all[n], b.debArch)
	}
	if err := os.WriteFile(filepath.Join(o.out, "outpost-"+b.name+".manifest"), []byte(man.String()), 0o644); err != nil {
		return err
	}
	if err := os.RemoveAll(work); err != nil {
		return err
	}
	fmt.Printf("wrote %s: %.1f MB (root file system %.1f MB used of %.1f MB), in %.0fs\n", img, float64(size)/1e6,
		float64(used)/1e6, float64(rootSize)/1e6, time.Since(o.start).Seconds())
	switch {
	case b.firmware:
		fmt.Printf("flash it: dd if=%s of=/dev/sdX bs=4M conv=fsync (or Raspberry Pi Imager, \"Use custom\")\n", img)
	default:
		fmt.Printf("boot it: %[4]s -m 512 -nographic -kernel %[1]s.vmlinuz -initrd %[1]s.initrd -append '%[2]s root=LABEL=outpost-root' -drive file=%[3]s,format=raw,if=virtio -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile=\n",
			filepath.Join(o.out, "outpost-"+b.name), b.console, img, b.qemu)
	}
	return nil
}

// validHostPort accepts HOST:PORT with a numeric port and a host of
// letters, digits, dots and dashes.
func validHostPort(s string) bool {
	h, p, ok := strings.Cut(s, ":")
	if !ok || h == "" || strings.Trim(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") != "" {
		return false
	}
	n, err := strconv.Atoi(p)
	return err == nil && n > 0 && n < 65536
}

func versionOr(v string) string {
	if v == "" {
		return "dev"
	}
	return v
}

// dependsOn returns the package meta depends on whose name starts with
// prefix: linux-image-arm64 → linux-image-6.1.0-50-arm64.
func (a *apt) dependsOn(meta, prefix string) (string, error) {
	out, err := a.cmd(a.dir, "apt-cache", "depends", meta)
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], prefix) {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("%s depends on no %s* package:\n%s", meta, prefix, out)
}

func unpack(deb, dir string) error {
	out, err := exec.Command("dpkg-deb", "-x", deb, dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("dpkg-deb -x %s: %v\n%s", deb, err, out)
	}
	return nil
}

// prune removes what a gateway never reads: documentation, systemd units,
// locales and converters, and binaries the image does not use.
func prune(root string) error {
	for _, p := range []string{
		"usr/share/doc", "usr/share/man", "usr/share/lintian", "usr/share/locale", "usr/share/bug",
		"usr/share/bash-completion", "usr/share/zsh", "usr/lib/systemd", "usr/lib/aarch64-linux-gnu/gconv", "usr/lib/riscv64-linux-gnu/gconv",
		"usr/bin/containerd-shim", "usr/bin/containerd-shim-runc-v1", "usr/bin/containerd-stress",
		"usr/share/initramfs-tools", "etc/ld.so.conf.d", "sbin/ldconfig", "usr/bin/ldd",
		"usr/bin/iconv", "usr/bin/getconf", "usr/bin/getent", "usr/bin/locale", "usr/bin/localedef",
		"usr/bin/pldd", "usr/bin/tzselect", "usr/bin/zdump", "usr/bin/catchsegv", "usr/sbin/iconvconfig", "usr/sbin/zic",
	} {
		if err := os.RemoveAll(filepath.Join(root, p)); err != nil {
			return err
		}
	}
	return nil
}

// decompressModules unpacks xz-compressed kernel modules (trixie's
// kernels ship .ko.xz) in place, so their modinfo can be read here and
// busybox's insmod loads them without xz support. Two xz at a time.
func decompressModules(kdir string) error {
	var all []string
	err := filepath.WalkDir(kdir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case strings.HasSuffix(p, ".ko.xz"):
			all = append(all, p)
		case strings.HasSuffix(p, ".ko.zst") || strings.HasSuffix(p, ".ko.gz"):
			return fmt.Errorf("kernel module %s: only xz-compressed modules are handled", p)
		}
		return nil
	})
	if err != nil || len(all) == 0 {
		return err
	}
	errs := make(chan error, 2)
	for half := range 2 {
		go func() {
			part := all[len(all)*half/2 : len(all)*(half+1)/2]
			if len(part) == 0 {
				errs <- nil // xz with no files would read stdin
				return
			}
			out, err := exec.Command("xz", append([]string{"-d", "-q"}, part...)...).CombinedOutput()
			if err != nil {
				err = fmt.Errorf("xz -d (kernel modules): %v\n%s", err, out)
			}
			errs <- err
		}()
	}
	return errors.Join(<-errs, <-errs)
}

// mergeUsr moves what packages put under /bin, /sbin and /lib into /usr
// and leaves links in their place (Debian's merged /usr): trixie's
// packages expect the links (the dynamic loader's path is /lib/...,
// files are under /usr/lib), bookworm's still ship both halves. A file
// in both places is an error, not a silent choice.
func mergeUsr(root string) error {
	for _, d := range []string{"bin", "sbin", "lib"} {
		top, usr := filepath.Join(root, d), filepath.Join(root, "usr", d)
		if err := os.MkdirAll(usr, 0o755); err != nil {
			return err
		}
		fi, err := os.Lstat(top)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return err
		case fi.Mode()&fs.ModeSymlink != 0:
			continue
		case !fi.IsDir():
			return fmt.Errorf("merged /usr: /%s is neither a directory nor a link", d)
		default:
			if err := moveTree(top, usr); err != nil {
				return fmt.Errorf("merged /usr: %w", err)
			}
			if err := os.RemoveAll(top); err != nil {
				return err
			}
		}
		if err := os.Symlink("usr/"+d, top); err != nil {
			return err
		}
	}
	return nil
}

// moveTree moves src's entries into dst, merging directories.
func moveTree(src, dst string) error {
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		s, d := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		di, err := os.Lstat(d)
		if errors.Is(err, fs.ErrNotExist) {
			if err := os.Rename(s, d); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if e.IsDir() && di.IsDir() {
			if err := moveTree(s, d); err != nil {
				return err
			}
			continue
		}
		return fmt.Errorf("%s and %s both exist", s, d)
	}
	return nil
}

func render(name string, data any) ([]byte, error) {
	text, err := files.ReadFile("files/" + name)
	if err != nil {
		return nil, err
	}
	t, err := template.New(name).Delims("{{", "}}").Parse(string(text))
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	err = t.Execute(&buf, data)
	return buf.Bytes(), err
}

// layout writes busybox's links and the image's own files into root.
func layout(o *options, root string) error {
	bb := filepath.Join(root, "bin/busybox")
	data, err := os.ReadFile(bb)
	if err != nil {
		return fmt.Errorf("busybox-static did not unpack /bin/busybox: %w", err)
	}
	applets, err := busyboxApplets(data)
	if err != nil {
		return err
	}
	for _, d := range []string{"proc", "sys", "dev", "run", "tmp", "sbin", "usr/sbin", "var/lib/outpost", "var/lib/containerd", "var/log", "etc/outpost", "etc/init.d", "etc/containerd", "root"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	os.Chmod(filepath.Join(root, "var/lib/outpost"), 0o700)
	os.Chmod(filepath.Join(root, "tmp"), 0o1777)
	for _, a := range append(applets, "init") {
		dir := "bin"
		if a == "init" {
			dir = "sbin"
		}
		link := filepath.Join(root, dir, a)
		if _, err := os.Lstat(link); err == nil {
			continue // a real binary (runc, containerd) wins
		}
		if err := os.Symlink("/bin/busybox", link); err != nil {
			return err
		}
	}
	cfg := "# First-boot configuration written by make image; see /etc/outpost/agent.yaml's fields in agent/README.md.\n"
	if o.relay != "" {
		cfg += "server: " + o.relay + "\n"
	} else {
		cfg += "# No relay URL was given to make image: set server here.\n#server: https://relay.example.com:8443\n"
	}
	agentBoard := o.board.agentBoard
	if agentBoard == "" {
		agentBoard = o.board.name
	}
	cfg += "board: " + agentBoard + "\n"
	if len(o.registries) > 0 {
		cfg += "containerd:\n  registries:\n"
		for _, r := range o.registries {
			cfg += fmt.Sprintf("    %q: {plainHTTP: true}\n", r)
		}
	}
	type file struct {
		path string
		mode fs.FileMode
		data []byte
	}
	var out []file
	for _, f := range []struct {
		src, dst string
		mode     fs.FileMode
	}{
		{"rcS", "etc/init.d/rcS", 0o755}, {"inittab", "etc/inittab", 0o644},
		{"agent.sh", "etc/outpost/agent.sh", 0o755}, {"containerd.sh", "etc/outpost/containerd.sh", 0o755},
		{"udhcpc.script", "etc/outpost/udhcpc.script", 0o755}, {"containerd.toml", "etc/containerd/config.toml", 0o644},
		{"memreport.sh", "etc/outpost/memreport.sh", 0o755},
	} {
		b, err := render(f.src, map[string]any{"Epoch": o.epoch.Unix()})
		if err != nil {
			return err
		}
		out = append(out, file{f.dst, f.mode, b})
	}
	out = append(out,
		file{"etc/outpost/agent.yaml", 0o644, []byte(cfg)},
		file{"etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n")},
		file{"etc/group", 0o644, []byte("root:x:0:\ntty:x:5:\n")},
		file{"etc/hosts", 0o644, []byte("127.0.0.1\tlocalhost\n::1\tlocalhost\n")},
		file{"etc/os-release", 0o644, []byte(fmt.Sprintf("NAME=Outpost\nID=outpost\nID_LIKE=debian\nPRETTY_NAME=\"Outpost %s (Debian %s packages)\"\nVERSION_ID=%q\n", versionOr(o.version), o.suite, versionOr(o.version)))},
	)
	if o.token != "" {
		out = append(out, file{"etc/outpost/join-token", 0o600, []byte(o.token + "\n")})
	}
	if o.caCertHash != "" {
		out = append(out, file{"etc/outpost/ca-cert-hash", 0o644, []byte(o.caCertHash + "\n")})
	}
	for _, f := range out {
		p := filepath.Join(root, f.path)
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			return err
		}
		if err := os.Chmod(p, f.mode); err != nil {
			return err
		}
	}
	os.Remove(filepath.Join(root, "etc/resolv.conf"))
	return os.Symlink("/run/resolv.conf", filepath.Join(root, "etc/resolv.conf"))
}

// busyboxApplets reads the applet names busybox carries (its sorted,
// NUL-separated name table), so links match the binary without running it.
func busyboxApplets(bin []byte) ([]string, error) {
	// The table starts "[", "[[" (sorted); what precedes it varies by
	// architecture (riscv64's is not NUL-aligned).
	i := bytes.Index(bin, []byte("[\x00[[\x00"))
	if i < 0 {
		return nil, errors.New("cannot find busybox's applet table")
	}
	var names []string
	for _, n := range bytes.Split(bin[i:], []byte{0}) {
		if len(n) == 0 {
			break
		}
		names = append(names, string(n))
	}
	for _, must := range []string{"sh", "mount", "switch_root", "insmod", "modprobe", "findfs", "udhcpc", "ip", "init"} {
		if sort.SearchStrings(names, must) == len(names) || names[sort.SearchStrings(names, must)] != must {
			return nil, fmt.Errorf("busybox lacks the %s applet the image needs", must)
		}
	}
	return names, nil
}

func kernelVersion(kdir string) (string, error) {
	ents, err := os.ReadDir(filepath.Join(kdir, "lib/modules"))
	if err != nil || len(ents) != 1 {
		return "", fmt.Errorf("want exactly one kernel under %s/lib/modules: %v", kdir, err)
	}
	return ents[0].Name(), nil
}

// kernelFiles copies the board's modules into root with a modules.dep,
// and returns the gzipped initramfs that loads rootModules.
func kernelFiles(o *options, kdir, kver, root string) ([]byte, int, error) {
	mdir := filepath.Join(kdir, "lib/modules", kver)
	ms, err := readModules(mdir)
	if err != nil {
		return nil, 0, err
	}
	builtinData, _ := os.ReadFile(filepath.Join(mdir, "modules.builtin"))
	builtin := readBuiltin(builtinData)
	boot, err := ms.closure(o.board.rootModules, builtin)
	if err != nil {
		return nil, 0, err
	}
	var present []string
	for _, m := range o.board.runModules {
		if ms.lookup(m) != nil {
			present = append(present, m)
		} else if !builtin[canon(m)] {
			o.note("kernel %s has no module %s: left out", kver, m)
		}
	}
	all, err := ms.closure(append(append([]string{}, o.board.rootModules...), present...), builtin)
	if err != nil {
		return nil, 0, err
	}
	dst := filepath.Join(root, "lib/modules", kver)
	for _, m := range all {
		if err := copyFile(filepath.Join(mdir, m.path), filepath.Join(dst, m.path), 0o644); err != nil {
			return nil, 0, err
		}
	}
	for _, f := range []string{"modules.builtin", "modules.builtin.modinfo", "modules.order"} {
		if _, err := os.Stat(filepath.Join(mdir, f)); err == nil {
			if err := copyFile(filepath.Join(mdir, f), filepath.Join(dst, f), 0o644); err != nil {
				return nil, 0, err
			}
		}
	}
	if err := os.WriteFile(filepath.Join(dst, "modules.dep"), []byte(ms.modulesDep(all)), 0o644); err != nil {
		return nil, 0, err
	}
	if err := os.WriteFile(filepath.Join(root, "etc/modules"), []byte(strings.Join(append(append([]string{}, o.board.rootModules...), present...), "\n")+"\n"), 0o644); err != nil {
		return nil, 0, err
	}

	// The initramfs: busybox, the modules in load order, and init.
	var raw bytes.Buffer
	c := &cpioWriter{w: &raw, mtime: o.epoch.Unix()}
	for _, d := range []string{"bin", "dev", "etc", "lib", "lib/modules", "newroot", "proc", "sys"} {
		c.Dir(d, 0o755)
	}
	c.CharDev("dev/console", 0o600, 5, 1)
	bb, err := os.ReadFile(filepath.Join(root, "bin/busybox"))
	if err != nil {
		return nil, 0, err
	}
	c.File("bin/busybox", 0o755, bb)
	c.Symlink("bin/sh", "busybox")
	initScript, err := render("initramfs-init", nil)
	if err != nil {
		return nil, 0, err
	}
	c.File("init", 0o755, initScript)
	var order []string
	for _, m := range boot {
		data, err := os.ReadFile(filepath.Join(mdir, m.path))
		if err != nil {
			return nil, 0, err
		}
		name := filepath.Base(m.path)
		c.File("lib/modules/"+name, 0o644, data)
		order = append(order, name)
	}
	c.File("etc/modules.order", 0o644, []byte(strings.Join(order, "\n")+"\n"))
	if err := c.Close(); err != nil {
		return nil, 0, err
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zw.Write(raw.Bytes())
	if err := zw.Close(); err != nil {
		return nil, 0, err
	}
	return gz.Bytes(), len(all), nil
}

func bootFiles(o *options, kdir, kver, fwdir string, initrd []byte, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// riscv64's Debian kernel is an uncompressed Image named vmlinux-*.
	kernel := filepath.Join(kdir, "boot", "vmlinuz-"+kver)
	if _, err := os.Stat(kernel); err != nil {
		kernel = filepath.Join(kdir, "boot", "vmlinux-"+kver)
	}
	if err := copyFile(kernel, filepath.Join(dir, "vmlinuz"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "initrd.img"), initrd, 0o644); err != nil {
		return err
	}
	if !o.board.firmware {
		return nil
	}
	for _, f := range []string{"start4.elf", "fixup4.dat", "bootcode.bin"} {
		if err := copyFile(filepath.Join(fwdir, "usr/lib/raspi-firmware", f), filepath.Join(dir, f), 0o644); err != nil {
			return err
		}
	}
	for _, d := range o.board.dtbs {
		if err := copyFile(filepath.Join(kdir, "usr/lib/linux-image-"+kver, d), filepath.Join(dir, filepath.Base(d)), 0o644); err != nil {
			return err
		}
	}
	cfg, err := render("config.txt", nil)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.txt"), cfg, 0o644); err != nil {
		return err
	}
	cmdline := o.board.console + " root=LABEL=outpost-root rootwait cgroup_enable=memory\n"
	return os.WriteFile(filepath.Join(dir, "cmdline.txt"), []byte(cmdline), 0o644)
}

// fatImage writes a FAT32 file system of size bytes holding dir's files,
// with a serial derived from the board and time, so it repeats.
func fatImage(o *options, dir, img string, size int64) error {
	if err := truncate(img, size); err != nil {
		return err
	}
	h := sum("boot", o)
	serial := fmt.Sprintf("0x%08x", binary.BigEndian.Uint32(h[:4]))
	env := append(os.Environ(), "SOURCE_DATE_EPOCH="+strconv.FormatInt(o.epoch.Unix(), 10), "MTOOLS_SKIP_CHECK=1", "TZ=UTC")
	if err := touchAll(dir, o.epoch); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"mformat", "-i", img, "-F", "-N", serial[2:], "-v", "BOOT", "::"},
		append(append([]string{"mcopy", "-i", img, "-m", "-Q"}, mustList(dir)...), "::"),
	} {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

func mustList(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		out = append(out, filepath.Join(dir, e.Name()))
	}
	return out
}

// ext4Image writes root into a fresh ext4 file system with a fixed UUID,
// hash seed and times, then sets every inode's owner to root and its
// ctime to the build time with debugfs (mkfs.ext4 -d copies both from the
// files, which an unprivileged build cannot set).
func ext4Image(o *options, root, img string, size int64) error {
	if err := touchAll(root, o.epoch); err != nil {
		return err
	}
	u := sum("root", o)
	uuid := fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
	env := append(os.Environ(), "E2FSPROGS_FAKE_TIME="+strconv.FormatInt(o.epoch.Unix(), 10))
	if err := truncate(img, size); err != nil {
		return err
	}
	cmd := exec.Command("mkfs.ext4", "-q", "-F", "-L", "outpost-root", "-U", uuid, "-E", "hash_seed="+uuid+",root_owner=0:0",
		"-b", "4096", "-m", "1", "-d", root, img)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 -d: %v\n%s", err, out)
	}
	var script bytes.Buffer
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := "/" + strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
		if strings.ContainsAny(rel, "\" \n") {
			return fmt.Errorf("%s: a path with spaces or quotes cannot be fixed up with debugfs", rel)
		}
		for _, f := range []string{"uid 0", "gid 0", "ctime @" + strconv.FormatInt(o.epoch.Unix(), 10)} {
			fmt.Fprintf(&script, "sif \"%s\" %s\n", rel, f)
		}
		return nil
	})
	if err != nil {
		return err
	}
	dbg := exec.Command("debugfs", "-w", "-f", "-", img)
	dbg.Env = env
	dbg.Stdin = &script
	out, err := dbg.CombinedOutput()
	if err != nil {
		return fmt.Errorf("debugfs: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "sif") || l == "" || strings.HasPrefix(l, "debugfs ") {
			continue
		}
		return fmt.Errorf("debugfs: %s", l)
	}
	return nil
}

// assemble writes the MBR and both partitions into img, 1 MiB aligned,
// leaving zero blocks as holes so the file stays sparse.
func assemble(o *options, img, bootImg, rootImg string) error {
	const mib = 1 << 20
	bs, err := os.Stat(bootImg)
	if err != nil {
		return err
	}
	rs, err := os.Stat(rootImg)
	if err != nil {
		return err
	}
	bootStart := int64(mib)
	rootStart := bootStart + roundUp(bs.Size(), mib)
	total := rootStart + roundUp(rs.Size(), mib)
	h := sum("disk", o)
	id := binary.BigEndian.Uint32(h[:4])
	mbr, err := MBR(id, []Partition{
		{Type: 0x0c, Bootable: true, Start: uint32(bootStart / 512), Sectors: uint32(bs.Size() / 512)},
		{Type: 0x83, Start: uint32(rootStart / 512), Sectors: uint32(rs.Size() / 512)},
	})
	if err != nil {
		return err
	}
	os.Remove(img)
	f, err := os.Create(img)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(total); err != nil {
		return err
	}
	if _, err := f.WriteAt(mbr, 0); err != nil {
		return err
	}
	for _, p := range []struct {
		src string
		at  int64
	}{{bootImg, bootStart}, {rootImg, rootStart}} {
		if err := copySparse(f, p.src, p.at); err != nil {
			return err
		}
	}
	o.note("partition 1: FAT32 boot, %d MiB; partition 2: ext4 root (label outpost-root), %d MiB; disk id %08x", bs.Size()/mib, rs.Size()/mib, id)
	return f.Close()
}

func copySparse(dst *os.File, src string, at int64) error {
	s, err := os.Open(src)
	if err != nil {
		return err
	}
	defer s.Close()
	buf := make([]byte, 64<<10)
	zero := make([]byte, len(buf))
	for off := int64(0); ; {
		n, err := io.ReadFull(s, buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, err := dst.WriteAt(buf[:n], at+off); err != nil {
				return err
			}
		}
		off += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// sum derives repeatable identifiers (UUIDs, serials) from the board,
// the version and the time.
func sum(what string, o *options) [32]byte {
	return sha256.Sum256([]byte(fmt.Sprintf("outpost %s %s %s %d", what, o.board.name, o.version, o.epoch.Unix())))
}

func touchAll(dir string, t time.Time) error {
	out, err := exec.Command("find", dir, "-exec", "touch", "-h", "-d", "@"+strconv.FormatInt(t.Unix(), 10), "{}", "+").CombinedOutput()
	if err != nil {
		return fmt.Errorf("touch: %v\n%s", err, out)
	}
	return nil
}

func truncate(path string, size int64) error {
	os.Remove(path)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func copyFile(src, dst string, mode fs.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, data, mode)
}

func duBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		n += roundUp(fi.Size(), 4096)
		return nil
	})
	return n, err
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// sourceDate is SOURCE_DATE_EPOCH when set, else the last commit's time.
func sourceDate() (time.Time, error) {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a number of seconds", s)
		}
		return time.Unix(n, 0), nil
	}
	out, err := exec.Command("git", "log", "-1", "--format=%ct").Output()
	if err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil {
			return time.Unix(n, 0), nil
		}
	}
	return time.Unix(0, 0), nil
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
