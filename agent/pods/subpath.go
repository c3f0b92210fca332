package pods

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"outpost.dev/agent/safepath"
	"outpost.dev/wire"
)

// mountSource is the host path containerd mounts for mount i (m) of
// container c. For a volume the agent made, without a subPath, it is the
// volume's directory. Otherwise it is a bind mount, at
// <pod dir>/volume-subpaths/<volume>/<container>/<i> as a kubelet lays it
// out, of a descriptor of what m names: the subPath resolved beneath the
// volume by agent/safepath, or the hostPath opened and type-checked. runc
// then follows no path a container can change: a symlink swapped in after
// the check changes nothing, and a subPath leading out of its volume is
// refused here, naming it.
//
// It is idempotent: a bind already there of the same file is kept (the
// agent restarted, or an earlier attempt made it), a stale one is
// replaced. tearDown unmounts them with the pod.
func (w *worker) mountSource(src volSource, c *wire.Container, i int, m *wire.VolumeMount) (string, error) {
	if m.SubPath == "" && src.host == nil {
		return src.path, nil
	}
	if err := wire.CheckSubPath("subPath", m.SubPath); err != nil {
		return "", fmt.Errorf("container %s: volume %s: %w", c.Name, m.Name, err)
	}
	for _, n := range []string{c.Name, m.Name} {
		if err := wire.CheckLabel("name", n); err != nil {
			return "", fmt.Errorf("container %s: volume %s: %w", c.Name, m.Name, err)
		}
	}
	dir, err := w.podDir()
	if err != nil {
		return "", err
	}
	var root *os.File
	if src.host != nil {
		root, err = openHostPath(src.host)
	} else {
		root, err = os.OpenFile(src.path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return "", fmt.Errorf("container %s: volume %s: %w", c.Name, m.Name, err)
	}
	defer root.Close()
	f := root
	if m.SubPath != "" {
		f, err = openSubPath(root, src.readOnly, m.SubPath)
		if err != nil {
			if errors.Is(err, safepath.ErrEscape) {
				return "", fmt.Errorf("container %s: subPath %q of volume %s leads out of the volume (an absolute symlink, or .. above the volume): not mounted", c.Name, m.SubPath, m.Name)
			}
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err // the subPath is named already; no host path in the message
			}
			return "", fmt.Errorf("container %s: subPath %q of volume %s: %w", c.Name, m.SubPath, m.Name, err)
		}
		defer f.Close()
	}
	target := filepath.Join(dir, "volume-subpaths", m.Name, c.Name, strconv.Itoa(i))
	if err := bindFD(f, target); err != nil {
		return "", fmt.Errorf("container %s: volume %s: binding subPath %q: %w", c.Name, m.Name, m.SubPath, err)
	}
	return target, nil
}

// openSubPath opens sub beneath root. A missing subPath of a volume the
// pod writes is created as a directory with the volume's mode, as a
// kubelet does; in a ConfigMap, Secret or projected volume it is an error.
func openSubPath(root *os.File, readOnly bool, sub string) (*os.File, error) {
	if readOnly {
		f, err := safepath.Open(root, sub)
		if errors.Is(err, os.ErrNotExist) {
			return nil, errors.New("no such file or directory in the volume")
		}
		return f, err
	}
	st, err := root.Stat()
	if err != nil {
		return nil, err
	}
	return safepath.MkdirAll(root, sub, st.Mode().Perm())
}

// bindFD makes target a bind mount of the file f holds (through
// /proc/self/fd), unless it already is one of that file. target is made a
// directory or an empty file to match f.
func bindFD(f *os.File, target string) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if cur, err := os.Stat(target); err == nil && os.SameFile(cur, st) {
		return nil
	}
	for range 16 { // peel stale binds of another file
		if unix.Unmount(target, unix.MNT_DETACH) != nil {
			break
		}
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
		return err
	}
	if cur, err := os.Lstat(target); err == nil && cur.IsDir() != st.IsDir() {
		if err := os.Remove(target); err != nil {
			return err
		}
	}
	if st.IsDir() {
		if err := os.Mkdir(target, 0o750); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	} else {
		t, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o640)
		if err != nil {
			return err
		}
		t.Close()
	}
	src := "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
	if err := unix.Mount(src, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return &os.PathError{Op: "bind mount", Path: target, Err: err}
	}
	return nil
}
