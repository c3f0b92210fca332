package pods

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"outpost.dev/wire"
)

// Permission bits a kubelet adds for a pod's fsGroup (its
// SetVolumeOwnership): group read and write on the files of a writable
// volume, group read on a read-only one, and on directories also group
// search and setgid, so new files inherit the group.
const (
	fsGroupRW   = 0o660
	fsGroupRO   = 0o440
	fsGroupExec = 0o110
)

// groups are the extra groups of the pod's container processes:
// supplementalGroups, then fsGroup.
func groups(p *wire.Pod) []uint32 {
	var out []uint32
	for _, g := range p.Groups() {
		if !containsGID(out, uint32(g)) {
			out = append(out, uint32(g))
		}
	}
	return out
}

func containsGID(l []uint32, g uint32) bool {
	for _, x := range l {
		if x == g {
			return true
		}
	}
	return false
}

// fsGroupFiles adds the group-read bits of an fsGroup to the files of a
// read-only (ConfigMap, Secret, projected) volume before they are written,
// so the modes written are the ones the next pass compares.
func fsGroupFiles(p *wire.Pod, files map[string]file) {
	if p.FSGroup == nil {
		return
	}
	for k, f := range files {
		f.mode |= fsGroupRO
		files[k] = f
	}
}

// fsGroup gives volume name at path the pod's fsGroup, if it has one. A
// writable volume (emptyDir) is done once per worker, as a kubelet does it
// when it sets the volume up, with the pod's fsGroupChangePolicy; a
// read-only one on every pass (entries already right are not written),
// since its files are rewritten when their source changes.
func (w *worker) fsGroup(p *wire.Pod, name, path string, readOnly bool) error {
	if p.FSGroup == nil || !readOnly && w.owned[name] {
		return nil
	}
	policy := p.FSGroupChangePolicy
	if readOnly {
		policy = "Always"
	}
	if err := volumeOwnership(path, int(*p.FSGroup), readOnly, policy); err != nil {
		return err
	}
	if !readOnly {
		w.owned[name] = true
	}
	return nil
}

// volumeOwnership gives what is under root the group gid the way a
// kubelet's SetVolumeOwnership does (files group-readable, and writable
// unless readOnly; directories also group-searchable and setgid). With
// policy OnRootMismatch nothing is done when root already has the group
// and those bits.
//
// A writable volume's content belongs to the container, which may swap a
// directory for a symlink while the walk runs: every entry is opened
// beneath root with openat2 (RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS,
// O_PATH|O_NOFOLLOW) and changed through that descriptor, so nothing
// outside root is ever changed; symlinks themselves get the group only.
// Entries already as wanted are not written.
func volumeOwnership(root string, gid int, readOnly bool, policy string) error {
	mask := os.FileMode(fsGroupRW)
	if readOnly {
		mask = fsGroupRO
	}
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fsGroup: %w", err)
	}
	defer unix.Close(rfd)
	if policy == "OnRootMismatch" {
		var st unix.Stat_t
		if err := unix.Fstat(rfd, &st); err != nil {
			return fmt.Errorf("fsGroup: %w", err)
		}
		want := uint32(mask|fsGroupExec) | unix.S_ISGID
		if int(st.Gid) == gid && st.Mode&want == want {
			return nil
		}
	}
	var errs []error
	walkErr := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			// A name the container removed meanwhile: not ours to report.
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if err := ownEntry(rfd, rel, gid, mask); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("fsGroup %d on %s: %w", gid, rel, err))
			if len(errs) > 10 {
				return errors.Join(errs...)
			}
		}
		return nil
	})
	if walkErr != nil {
		return walkErr
	}
	return errors.Join(errs...)
}

// ownEntry changes one entry, opened beneath the root descriptor.
func ownEntry(rfd int, rel string, gid int, mask os.FileMode) error {
	fd, err := unix.Openat2(rfd, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if int(st.Gid) != gid {
		if err := unix.Fchownat(fd, "", -1, gid, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	typ := st.Mode & unix.S_IFMT
	if typ != unix.S_IFREG && typ != unix.S_IFDIR {
		return nil // symlinks, devices, FIFOs, sockets: the group only
	}
	want := st.Mode&0o7777 | uint32(mask)
	if typ == unix.S_IFDIR {
		want |= fsGroupExec | unix.S_ISGID
	}
	if want == st.Mode&0o7777 {
		return nil
	}
	// An O_PATH descriptor cannot be fchmod'ed; its /proc/self/fd link
	// names the very inode it holds.
	return unix.Fchmodat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), want, 0)
}
