// Package disk writes a disk image without root, loop devices or mounts:
// an MBR written here, a FAT32 file system with mtools, an ext4 file
// system with mkfs.ext4 -d and debugfs, and the partitions placed 1 MiB
// aligned in one sparse file. Identifiers (serial, UUID, disk id) and times
// are given by the caller, so the same inputs give the same bytes.
package disk

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// MiB is the partitions' alignment.
const MiB = 1 << 20

// FAT writes a FAT32 file system of size bytes labelled BOOT into img,
// holding dir's files with their times set to epoch.
func FAT(dir, img string, size int64, serial uint32, epoch time.Time) error {
	if err := truncate(img, size); err != nil {
		return err
	}
	env := append(os.Environ(), "SOURCE_DATE_EPOCH="+strconv.FormatInt(epoch.Unix(), 10), "MTOOLS_SKIP_CHECK=1", "TZ=UTC")
	if err := touchAll(dir, epoch); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"mformat", "-i", img, "-F", "-N", fmt.Sprintf("%08x", serial), "-v", "BOOT", "::"},
		append(append([]string{"mcopy", "-i", img, "-m", "-Q"}, list(dir)...), "::"),
	} {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

func list(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		out = append(out, filepath.Join(dir, e.Name()))
	}
	return out
}

// Ext4 writes root into a fresh ext4 file system of size bytes labelled
// label, with uuid as its UUID and hash seed and every time set to epoch,
// then sets every inode's owner to root and its ctime to epoch with
// debugfs (mkfs.ext4 -d copies both from the files, which an unprivileged
// build cannot set).
func Ext4(root, img, label string, size int64, uuid [16]byte, epoch time.Time) error {
	if err := touchAll(root, epoch); err != nil {
		return err
	}
	u := uuid
	id := fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
	env := append(os.Environ(), "E2FSPROGS_FAKE_TIME="+strconv.FormatInt(epoch.Unix(), 10))
	if err := truncate(img, size); err != nil {
		return err
	}
	cmd := exec.Command("mkfs.ext4", "-q", "-F", "-L", label, "-U", id, "-E", "hash_seed="+id+",root_owner=0:0",
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
		for _, f := range []string{"uid 0", "gid 0", "ctime @" + strconv.FormatInt(epoch.Unix(), 10)} {
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

// Assemble writes the MBR with disk identifier id and both partitions into
// img: bootImg as a bootable FAT32 partition, rootImg as a Linux one, 1 MiB
// aligned, leaving zero blocks as holes so the file stays sparse. It
// returns the partitions' sizes in bytes.
func Assemble(img, bootImg, rootImg string, id uint32) (bootSize, rootSize int64, err error) {
	bs, err := os.Stat(bootImg)
	if err != nil {
		return 0, 0, err
	}
	rs, err := os.Stat(rootImg)
	if err != nil {
		return 0, 0, err
	}
	bootStart := int64(MiB)
	rootStart := bootStart + RoundUp(bs.Size(), MiB)
	total := rootStart + RoundUp(rs.Size(), MiB)
	mbr, err := MBR(id, []Partition{
		{Type: 0x0c, Bootable: true, Start: uint32(bootStart / 512), Sectors: uint32(bs.Size() / 512)},
		{Type: 0x83, Start: uint32(rootStart / 512), Sectors: uint32(rs.Size() / 512)},
	})
	if err != nil {
		return 0, 0, err
	}
	os.Remove(img)
	f, err := os.Create(img)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	if err := f.Truncate(total); err != nil {
		return 0, 0, err
	}
	if _, err := f.WriteAt(mbr, 0); err != nil {
		return 0, 0, err
	}
	for _, p := range []struct {
		src string
		at  int64
	}{{bootImg, bootStart}, {rootImg, rootStart}} {
		if err := copySparse(f, p.src, p.at); err != nil {
			return 0, 0, err
		}
	}
	return bs.Size(), rs.Size(), f.Close()
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

// RoundUp rounds n up to a multiple of to.
func RoundUp(n, to int64) int64 { return (n + to - 1) / to * to }

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
