package safepath

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// tree makes, in a temp dir, root/ (what a volume holds, symlinks a
// container could make included) and outside/ next to it.
func tree(t *testing.T) (top string, root *os.File) {
	t.Helper()
	top = t.TempDir()
	r := filepath.Join(top, "root")
	for _, d := range []string{"root/dir/sub", "outside"} {
		if err := os.MkdirAll(filepath.Join(top, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p, data := range map[string]string{"root/dir/file": "inside", "outside/marker": "outside"} {
		if err := os.WriteFile(filepath.Join(top, p), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		"abs":           "/",
		"abs-inside":    filepath.Join(r, "dir"), // absolute, even if it names a place inside
		"rel-up":        "../../../../../../../..",
		"up":            "..",
		"to-outside":    "../outside",
		"etc":           "/etc",
		"inside":        "dir/sub",
		"inside-file":   "dir/../dir/file",
		"dir/back":      "../dir/file",
		"dir/sub/chain": "../../inside",
		"loop":          "loop",
		"dangling":      "nowhere",
	} {
		if err := os.Symlink(target, filepath.Join(r, link)); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return top, f
}

func sameFile(t *testing.T, f *os.File, want string) {
	t.Helper()
	got, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	w, err := os.Stat(want)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(got, w) {
		t.Errorf("opened %v, want %s", got.Name(), want)
	}
}

// modes runs f with openat2 and with the walk older kernels get.
func modes(t *testing.T, f func(t *testing.T)) {
	t.Run("openat2", func(t *testing.T) {
		f(t)
		if noOpenat2.Load() {
			t.Log("this kernel has no openat2: the walk ran twice")
		}
	})
	t.Run("walk", func(t *testing.T) {
		old := noOpenat2.Load()
		noOpenat2.Store(true)
		defer noOpenat2.Store(old)
		f(t)
	})
}

func TestOpen(t *testing.T) {
	modes(t, func(t *testing.T) {
		top, root := tree(t)
		for _, tc := range []struct {
			rel  string
			want string // path opened, relative to top; "" for an error
			err  error
		}{
			{rel: "", want: "root"},
			{rel: "dir", want: "root/dir"},
			{rel: "dir/file", want: "root/dir/file"},
			{rel: "dir/./sub/", want: "root/dir/sub"},
			{rel: "inside", want: "root/dir/sub"},
			{rel: "inside/../file", want: "root/dir/file"},
			{rel: "inside-file", want: "root/dir/file"},
			{rel: "dir/back", want: "root/dir/file"},
			{rel: "dir/sub/chain", want: "root/dir/sub"},
			{rel: "dir/../dir/file", want: "root/dir/file"},
			{rel: "abs", err: ErrEscape},
			{rel: "abs/etc/hostname", err: ErrEscape},
			{rel: "abs-inside", err: ErrEscape},
			{rel: "rel-up", err: ErrEscape},
			{rel: "rel-up/etc", err: ErrEscape},
			{rel: "up", err: ErrEscape},
			{rel: "to-outside/marker", err: ErrEscape},
			{rel: "etc/hostname", err: ErrEscape},
			{rel: "..", err: ErrEscape},
			{rel: "dir/../../outside/marker", err: ErrEscape},
			{rel: "/etc", err: ErrEscape},
			{rel: "loop", err: syscall.ELOOP},
			{rel: "dangling", err: fs.ErrNotExist},
			{rel: "nope/x", err: fs.ErrNotExist},
			{rel: "dir/file/x", err: syscall.ENOTDIR},
		} {
			f, err := Open(root, tc.rel)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Errorf("Open(%q) = %v, want %v", tc.rel, err, tc.err)
				}
				if f != nil {
					t.Errorf("Open(%q) returned a file with an error", tc.rel)
				}
				continue
			}
			if err != nil {
				t.Errorf("Open(%q): %v", tc.rel, err)
				continue
			}
			sameFile(t, f, filepath.Join(top, tc.want))
			f.Close()
		}
	})
}

func TestMkdirAll(t *testing.T) {
	modes(t, func(t *testing.T) {
		top, root := tree(t)
		f, err := MkdirAll(root, "new/deeper/leaf", 0o777)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		sameFile(t, f, filepath.Join(top, "root/new/deeper/leaf"))
		for _, d := range []string{"new", "new/deeper", "new/deeper/leaf"} {
			st, err := os.Stat(filepath.Join(top, "root", d))
			if err != nil || st.Mode().Perm() != 0o777 {
				t.Errorf("%s: %v %v, want a directory with mode 0777 whatever the umask", d, st.Mode(), err)
			}
		}
		// Through a symlink that stays inside: created inside.
		g, err := MkdirAll(root, "inside/made", 0o750)
		if err != nil {
			t.Fatal(err)
		}
		g.Close()
		if _, err := os.Stat(filepath.Join(top, "root/dir/sub/made")); err != nil {
			t.Error(err)
		}
		// Through one that leads out: refused, nothing created outside.
		for _, rel := range []string{"to-outside/made", "abs" + top + "/outside/made2", "rel-up" + top + "/outside/made3", "../outside/made4"} {
			if _, err := MkdirAll(root, rel, 0o777); !errors.Is(err, ErrEscape) {
				t.Errorf("MkdirAll(%q) = %v, want ErrEscape", rel, err)
			}
		}
		ents, _ := os.ReadDir(filepath.Join(top, "outside"))
		if len(ents) != 1 {
			t.Errorf("outside holds %d entries, want only the marker", len(ents))
		}
		// An existing file is returned as it is.
		h, err := MkdirAll(root, "dir/file", 0o777)
		if err != nil {
			t.Fatal(err)
		}
		sameFile(t, h, filepath.Join(top, "root/dir/file"))
		h.Close()
	})
}

// TestOpenRace swaps a directory and a symlink to outside at the path
// while it is opened: whatever is opened is inside, never the marker
// outside.
func TestOpenRace(t *testing.T) {
	modes(t, func(t *testing.T) {
		top, root := tree(t)
		swap := filepath.Join(top, "root", "swap")
		if err := os.Mkdir(filepath.Join(top, "root", "real"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(top, "root", "real", "marker"), []byte("inside"), 0o644); err != nil {
			t.Fatal(err)
		}
		outside, err := os.Stat(filepath.Join(top, "outside", "marker"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("real", swap); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				tmp := swap + ".tmp"
				_ = os.Remove(tmp)
				target := "real"
				if i%2 == 1 {
					target = filepath.Join(top, "outside")
					if i%4 == 3 {
						target = "../outside"
					}
				}
				_ = os.Symlink(target, tmp)
				_ = os.Rename(tmp, swap)
			}
		}()
		opened, escaped := 0, 0
		other := map[string]int{}
		for i := 0; i < 100000 && (i < 3000 || opened == 0 || escaped == 0); i++ {
			f, err := Open(root, "swap/marker")
			if err != nil {
				if errors.Is(err, ErrEscape) {
					escaped++
				} else {
					other[err.Error()]++
				}
				continue
			}
			st, err := f.Stat()
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			if os.SameFile(st, outside) {
				t.Fatal("opened the marker outside the root")
			}
			opened++
		}
		close(stop)
		wg.Wait()
		t.Logf("opened inside %d times, refused %d times, other errors %v", opened, escaped, other)
		if opened == 0 || escaped == 0 {
			t.Errorf("the race did not happen both ways (opened %d, refused %d)", opened, escaped)
		}
	})
}
