package gateway

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"outpost.dev/build/image/cpio"
	"outpost.dev/build/image/kmod"
)

func kernelVersion(kdir string) (string, error) {
	ents, err := os.ReadDir(filepath.Join(kdir, "lib/modules"))
	if err != nil || len(ents) != 1 {
		return "", fmt.Errorf("want exactly one kernel under %s/lib/modules: %v", kdir, err)
	}
	return ents[0].Name(), nil
}

// kernelFiles copies the board's modules into root with a modules.dep,
// and returns the gzipped initramfs that loads RootModules and how many
// modules root holds.
func (o *builder) kernelFiles(kdir, kver, root string) ([]byte, int, error) {
	mdir := filepath.Join(kdir, "lib/modules", kver)
	ms, err := kmod.Read(mdir)
	if err != nil {
		return nil, 0, err
	}
	builtinData, _ := os.ReadFile(filepath.Join(mdir, "modules.builtin"))
	builtin := kmod.ReadBuiltin(builtinData)
	boot, err := ms.Closure(o.Image.RootModules, builtin)
	if err != nil {
		return nil, 0, err
	}
	var present []string
	for _, m := range o.Image.RunModules {
		if ms.Lookup(m) != nil {
			present = append(present, m)
		} else if !builtin[kmod.Canon(m)] {
			o.note("kernel %s has no module %s: left out", kver, m)
		}
	}
	all, err := ms.Closure(append(append([]string{}, o.Image.RootModules...), present...), builtin)
	if err != nil {
		return nil, 0, err
	}
	dst := filepath.Join(root, "lib/modules", kver)
	for _, m := range all {
		if err := copyFile(filepath.Join(mdir, m.Path), filepath.Join(dst, m.Path), 0o644); err != nil {
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
	if err := os.WriteFile(filepath.Join(dst, "modules.dep"), []byte(ms.ModulesDep(all)), 0o644); err != nil {
		return nil, 0, err
	}
	if err := os.WriteFile(filepath.Join(root, "etc/modules"), []byte(strings.Join(append(append([]string{}, o.Image.RootModules...), present...), "\n")+"\n"), 0o644); err != nil {
		return nil, 0, err
	}

	// The initramfs: busybox, the modules in load order, and init.
	var raw bytes.Buffer
	c := cpio.NewWriter(&raw, o.Epoch.Unix())
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
		data, err := os.ReadFile(filepath.Join(mdir, m.Path))
		if err != nil {
			return nil, 0, err
		}
		name := filepath.Base(m.Path)
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

// bootFiles writes what the boot partition holds into dir: the kernel and
// initramfs, and for a Raspberry Pi its firmware, device trees,
// config.txt and cmdline.txt.
func (o *builder) bootFiles(kdir, kver, fwdir string, initrd []byte, dir string) error {
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
	if !o.Image.Firmware {
		return nil
	}
	for _, f := range []string{"start4.elf", "fixup4.dat", "bootcode.bin"} {
		if err := copyFile(filepath.Join(fwdir, "usr/lib/raspi-firmware", f), filepath.Join(dir, f), 0o644); err != nil {
			return err
		}
	}
	for _, d := range o.Image.DTBs {
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
	cmdline := o.Image.Console + " root=LABEL=outpost-root rootwait cgroup_enable=memory\n"
	return os.WriteFile(filepath.Join(dir, "cmdline.txt"), []byte(cmdline), 0o644)
}
