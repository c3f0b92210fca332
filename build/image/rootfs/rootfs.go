// Package rootfs shapes the root file system tree unpacked from Debian
// packages: Unpack runs dpkg-deb -x (no maintainer script runs), MergeUsr
// makes Debian's merged /usr, Prune drops what a gateway never reads,
// KeepOnly trims a directory to the files the image uses, Alternatives
// makes the links update-alternatives would, BusyboxApplets reads the applet names busybox links must carry, and Size
// is what the tree takes on a 4 KiB-block file system.
package rootfs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
)

// Unpack extracts the .deb file deb into dir with dpkg-deb -x.
func Unpack(deb, dir string) error {
	out, err := exec.Command("dpkg-deb", "-x", deb, dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("dpkg-deb -x %s: %v\n%s", deb, err, out)
	}
	return nil
}

// Prune removes what a gateway never reads from root: documentation,
// systemd units, locales and converters, and binaries the image does not
// use.
func Prune(root string) error {
	for _, p := range []string{
		"usr/share/doc", "usr/share/man", "usr/share/lintian", "usr/share/locale", "usr/share/bug",
		"usr/share/bash-completion", "usr/share/zsh", "usr/lib/systemd", "usr/lib/aarch64-linux-gnu/gconv", "usr/lib/riscv64-linux-gnu/gconv",
		"usr/bin/containerd-shim", "usr/bin/containerd-shim-runc-v1", "usr/bin/containerd-stress",
		"usr/share/initramfs-tools", "etc/ld.so.conf.d", "sbin/ldconfig", "usr/bin/ldd",
		"usr/bin/iconv", "usr/bin/getconf", "usr/bin/getent", "usr/bin/locale", "usr/bin/localedef",
		"usr/bin/pldd", "usr/bin/tzselect", "usr/bin/zdump", "usr/bin/catchsegv", "usr/sbin/iconvconfig", "usr/sbin/zic",
		// iptables: the image runs the nf_tables backend only (xtables-nft-multi).
		"usr/sbin/xtables-legacy-multi", "usr/sbin/iptables-legacy", "usr/sbin/iptables-legacy-save", "usr/sbin/iptables-legacy-restore",
		"usr/sbin/ip6tables-legacy", "usr/sbin/ip6tables-legacy-save", "usr/sbin/ip6tables-legacy-restore", "usr/bin/iptables-xml",
		"usr/sbin/iptables-apply", "usr/sbin/ip6tables-apply", "usr/sbin/nfnl_osf", "usr/share/xtables",
	} {
		if err := os.RemoveAll(filepath.Join(root, p)); err != nil {
			return err
		}
	}
	return nil
}

// KeepOnly removes every entry of dir but the names in keep, each of which
// must be there: a package that renamed or dropped one is an error, not
// an image that lacks it.
func KeepOnly(dir string, keep []string) error {
	want := map[string]bool{}
	for _, k := range keep {
		if k == "" || k != filepath.Base(k) {
			return fmt.Errorf("keep %q in %s: not a file name", k, dir)
		}
		if _, err := os.Lstat(filepath.Join(dir, k)); err != nil {
			return fmt.Errorf("%s has no %s: %w", dir, k, err)
		}
		want[k] = true
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !want[e.Name()] {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// Alternatives writes what update-alternatives would at install time
// (the image runs no maintainer script): each name in links becomes a
// symbolic link, in its own directory, to the file it maps to in that
// directory, which must exist. Debian goes through /etc/alternatives;
// the image links straight to the choice.
func Alternatives(root, dir string, links map[string]string) error {
	names := make([]string, 0, len(links))
	for n := range links {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		target := links[n]
		for _, s := range []string{n, target} {
			if s == "" || s != filepath.Base(s) {
				return fmt.Errorf("alternative %s -> %s: not file names", n, target)
			}
		}
		if _, err := os.Stat(filepath.Join(root, dir, target)); err != nil {
			return fmt.Errorf("alternative %s: %w", n, err)
		}
		link := filepath.Join(root, dir, n)
		if _, err := os.Lstat(link); err == nil {
			return fmt.Errorf("alternative %s: /%s/%s exists already", n, dir, n)
		}
		if err := os.Symlink(target, link); err != nil {
			return err
		}
	}
	return nil
}

// MergeUsr moves what packages put under /bin, /sbin and /lib into /usr
// and leaves links in their place (Debian's merged /usr): trixie's
// packages expect the links (the dynamic loader's path is /lib/...,
// files are under /usr/lib), bookworm's still ship both halves. A file
// in both places is an error, not a silent choice.
func MergeUsr(root string) error {
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

// BusyboxApplets reads the applet names busybox carries (its sorted,
// NUL-separated name table), so links match the binary without running
// it. A busybox without an applet the image needs is an error.
func BusyboxApplets(bin []byte) ([]string, error) {
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

// Size is the bytes dir's entries take, each rounded up to a 4 KiB block.
func Size(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		n += (fi.Size() + 4095) / 4096 * 4096
		return nil
	})
	return n, err
}
