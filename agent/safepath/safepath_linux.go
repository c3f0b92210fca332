package safepath

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// ErrEscape says a path leads out of its root.
var ErrEscape = errors.New("leads out of the directory it must stay in (an absolute symlink, or .. above it)")

// maxLinks bounds the symlinks followed in one path, as the kernel's 40.
const maxLinks = 40

// noOpenat2 is set once openat2 answered ENOSYS; tests set it to force the
// walk.
var noOpenat2 atomic.Bool

// Open opens rel beneath the directory root and returns an O_PATH
// descriptor of what it names (its Stat works; reading needs a reopen).
// Symlinks on the way are followed while they stay beneath root; an
// absolute one, or ".." above root, fails with an error wrapping
// ErrEscape. A missing component fails with one wrapping fs.ErrNotExist;
// more than 40 symlinks, or a /proc magic link, with ELOOP.
func Open(root *os.File, rel string) (*os.File, error) {
	if rel == "" || rel == "." {
		return reopen(root)
	}
	if strings.IndexByte(rel, 0) >= 0 || strings.HasPrefix(rel, "/") {
		return nil, &os.PathError{Op: "open beneath", Path: rel, Err: ErrEscape}
	}
	if !noOpenat2.Load() {
		f, err := openat2(root, rel)
		if !errors.Is(err, unix.ENOSYS) {
			return f, err
		}
		noOpenat2.Store(true)
	}
	return walk(root, rel)
}

func openat2(root *os.File, rel string) (*os.File, error) {
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS}
	for range 16 {
		fd, err := unix.Openat2(int(root.Fd()), rel, &how)
		switch err {
		case nil:
			return os.NewFile(uintptr(fd), path.Join(root.Name(), rel)), nil
		case unix.EINTR, unix.EAGAIN: // a rename raced with "..": try again
			continue
		case unix.EXDEV:
			err = ErrEscape
		}
		return nil, &os.PathError{Op: "open beneath", Path: rel, Err: err}
	}
	return nil, &os.PathError{Op: "open beneath", Path: rel, Err: unix.EAGAIN}
}

// walk is Open without openat2: one component at a time, never letting
// the kernel follow a symlink.
func walk(root *os.File, rel string) (*os.File, error) {
	fail := func(err error) (*os.File, error) {
		return nil, &os.PathError{Op: "open beneath", Path: rel, Err: err}
	}
	// dirs are the directories entered beneath root, innermost last;
	// ".." leaves the innermost, and leaving root is an escape.
	var dirs []int
	defer func() {
		for _, fd := range dirs {
			unix.Close(fd)
		}
	}()
	cur := func() int {
		if len(dirs) == 0 {
			return int(root.Fd())
		}
		return dirs[len(dirs)-1]
	}
	rest := strings.Split(rel, "/")
	links := 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(dirs) == 0 {
				return fail(ErrEscape)
			}
			unix.Close(dirs[len(dirs)-1])
			dirs = dirs[:len(dirs)-1]
			continue
		}
		fd, err := unix.Openat(cur(), c, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fail(err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return fail(err)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			target, err := readlink(fd)
			unix.Close(fd)
			if err != nil {
				return fail(err)
			}
			if links++; links > maxLinks {
				return fail(unix.ELOOP)
			}
			if strings.HasPrefix(target, "/") {
				return fail(ErrEscape)
			}
			rest = append(strings.Split(target, "/"), rest...)
			continue
		case unix.S_IFDIR:
		default:
			if len(rest) > 0 && strings.Join(rest, "") != "" {
				unix.Close(fd)
				return fail(unix.ENOTDIR)
			}
		}
		dirs = append(dirs, fd)
	}
	if len(dirs) == 0 {
		return reopen(root)
	}
	fd := dirs[len(dirs)-1]
	dirs = dirs[:len(dirs)-1]
	return os.NewFile(uintptr(fd), path.Join(root.Name(), rel)), nil
}

// readlink reads the symlink an O_PATH|O_NOFOLLOW descriptor holds.
func readlink(fd int) (string, error) {
	for size := 256; size <= 1<<16; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return "", err
		}
		if n < size {
			if n == 0 {
				return "", unix.ENOENT
			}
			return string(buf[:n]), nil
		}
	}
	return "", unix.ENAMETOOLONG
}

// reopen is root itself, as a new O_PATH descriptor.
func reopen(root *os.File) (*os.File, error) {
	fd, err := unix.Openat(int(root.Fd()), ".", unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open beneath", Path: ".", Err: err}
	}
	return os.NewFile(uintptr(fd), root.Name()), nil
}

// MkdirAll is Open, first creating the missing directories of rel beneath
// root with mode perm (not masked by the umask), as a kubelet creates a
// subPath that does not exist yet. Existing components are resolved as
// Open resolves them; rel must not contain "..".
func MkdirAll(root *os.File, rel string, perm os.FileMode) (*os.File, error) {
	for _, e := range strings.Split(rel, "/") {
		if e == ".." {
			return nil, &os.PathError{Op: "mkdir beneath", Path: rel, Err: ErrEscape}
		}
	}
	f, err := Open(root, rel)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return f, err
	}
	clean := path.Clean(rel)
	parent, err := MkdirAll(root, path.Dir(clean), perm)
	if err != nil {
		return nil, err
	}
	defer parent.Close()
	name := path.Base(clean)
	switch err := unix.Mkdirat(int(parent.Fd()), name, uint32(perm.Perm())); err {
	case nil:
		// The umask narrowed perm: set it on what was created, never
		// following a symlink swapped in meanwhile.
		fd, err := unix.Openat(int(parent.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, &os.PathError{Op: "mkdir beneath", Path: rel, Err: err}
		}
		err = unix.Fchmod(fd, uint32(perm.Perm()))
		unix.Close(fd)
		if err != nil {
			return nil, &os.PathError{Op: "mkdir beneath", Path: rel, Err: err}
		}
	case unix.EEXIST:
	default:
		return nil, &os.PathError{Op: "mkdir beneath", Path: rel, Err: err}
	}
	return Open(root, rel)
}
