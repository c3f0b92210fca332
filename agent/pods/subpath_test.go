package pods

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"strconv"

	"outpost.dev/agent/mountinfo"
	"outpost.dev/test/harness"
	"outpost.dev/wire"
)

// subPathEnv is a worker with an emptyDir volume "data" holding what a
// container could have made: a directory, a file, and symlinks.
func subPathEnv(t *testing.T) (*worker, volSource, string) {
	t.Helper()
	harness.RequireRoot(t)
	state := t.TempDir()
	w := newWorker(New(Config{StateDir: state}), "uid-subpath")
	dir, err := w.podDir()
	if err != nil {
		t.Fatal(err)
	}
	vol := filepath.Join(dir, "volumes", "data")
	if err := emptyDir(vol, &wire.EmptyDir{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, m := range mountinfo.Under(dir) {
			_ = unmount(m)
		}
	})
	for _, d := range []string{"sub/deeper", "other"} {
		if err := os.MkdirAll(filepath.Join(vol, d), 0o777); err != nil {
			t.Fatal(err)
		}
	}
	for p, data := range map[string]string{"sub/deeper/in-volume": "volume", "app.conf": "conf", "other/in-other": "other"} {
		if err := os.WriteFile(filepath.Join(vol, p), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		"escape":     "/",
		"escape-etc": "/etc",
		"relative":   "../../../../../../../../..",
		"parent":     "/etc", // used as parent/hostname
		"inside":     "sub/deeper",
	} {
		if err := os.Symlink(target, filepath.Join(vol, link)); err != nil {
			t.Fatal(err)
		}
	}
	return w, volSource{path: vol}, vol
}

func TestSubPathMountSource(t *testing.T) {
	w, src, vol := subPathEnv(t)
	c := &wire.Container{Name: "app"}
	hostHostname, _ := os.ReadFile("/etc/hostname")
	for i, tc := range []struct {
		sub      string
		want     string // a file the mounted source must hold, or its content if a file
		wantErr  string
		fileMode bool
	}{
		{sub: "sub", want: "deeper/in-volume"},
		{sub: "sub/deeper/in-volume", want: "volume", fileMode: true},
		{sub: "app.conf", want: "conf", fileMode: true},
		{sub: "inside", want: "in-volume"},
		{sub: "made/by/kubelet/rules"},
		{sub: "escape", wantErr: `subPath "escape" of volume data leads out of the volume`},
		{sub: "escape-etc/hostname", wantErr: `subPath "escape-etc/hostname" of volume data leads out`},
		{sub: "relative", wantErr: `subPath "relative" of volume data leads out`},
		{sub: "relative/etc", wantErr: `subPath "relative/etc" of volume data leads out`},
		{sub: "parent/hostname", wantErr: `subPath "parent/hostname" of volume data leads out`},
		{sub: "sub/../../x", wantErr: `must not contain '..'`},
		{sub: "app.conf/x", wantErr: `subPath "app.conf/x" of volume data: not a directory`},
	} {
		m := &wire.VolumeMount{Name: "data", MountPath: "/mnt", SubPath: tc.sub}
		got, err := w.mountSource(src, c, i, m)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("subPath %q: err = %v, want one containing %q", tc.sub, err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), vol) {
				t.Errorf("subPath %q: the message shows the host path: %v", tc.sub, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("subPath %q: %v", tc.sub, err)
			continue
		}
		if !strings.HasSuffix(got, filepath.Join("uid-subpath", "volume-subpaths", "data", "app", strconv.Itoa(i))) {
			t.Errorf("subPath %q: source %s is not under volume-subpaths/data/app/%d", tc.sub, got, i)
		}
		if !isMountPoint(got) {
			t.Errorf("subPath %q: %s is not a mount point", tc.sub, got)
		}
		switch {
		case tc.fileMode:
			b, err := os.ReadFile(got)
			if err != nil || string(b) != tc.want {
				t.Errorf("subPath %q: file holds %q (%v), want %q", tc.sub, b, err, tc.want)
			}
		case tc.want != "":
			if _, err := os.Stat(filepath.Join(got, tc.want)); err != nil {
				t.Errorf("subPath %q: %v", tc.sub, err)
			}
		default: // created
			st, err := os.Stat(filepath.Join(vol, tc.sub))
			if err != nil || !st.IsDir() || st.Mode().Perm() != 0o777 {
				t.Errorf("subPath %q not created as the volume's mode: %v %v", tc.sub, st, err)
			}
		}
		if b, err := os.ReadFile(filepath.Join(got, "etc/hostname")); err == nil && string(b) == string(hostHostname) {
			t.Errorf("subPath %q shows the host's /etc/hostname", tc.sub)
		}
	}
}

// TestSubPathMountIdempotent checks a second pass keeps the bind, a
// changed subPath gets a new one in place of the old, and tearDown leaves
// nothing mounted, also after a reboot emptied the mount table.
func TestSubPathMountIdempotent(t *testing.T) {
	w, src, vol := subPathEnv(t)
	c := &wire.Container{Name: "app"}
	m := &wire.VolumeMount{Name: "data", MountPath: "/mnt", SubPath: "work"}
	dir, _ := w.podDir()
	mounts := func() []string { return mountinfo.Under(filepath.Join(dir, "volume-subpaths")) }
	first, err := w.mountSource(src, c, 0, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vol, "work", "a"), []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	again, err := w.mountSource(src, c, 0, m)
	if err != nil || again != first {
		t.Fatalf("second pass: %s, %v; want %s", again, err, first)
	}
	if n := len(mounts()); n != 1 {
		t.Fatalf("%d mounts after two passes, want 1", n)
	}
	// The container replaced the directory: the next start binds the new one.
	if err := os.Rename(filepath.Join(vol, "work"), filepath.Join(vol, "work-old")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(vol, "work"), 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := w.mountSource(src, c, 0, m); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(first, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the old directory is still what is mounted (%v)", err)
	}
	if n := len(mounts()); n != 1 {
		t.Errorf("%d mounts at the target, want 1: %v", n, mounts())
	}
	// A directory subPath that became a file: the target becomes a file.
	if err := os.RemoveAll(filepath.Join(vol, "work")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vol, "work"), []byte("now a file"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := w.mountSource(src, c, 0, m); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(first); err != nil || string(b) != "now a file" {
		t.Errorf("target holds %q, %v", b, err)
	}
	// A reboot: mounts gone, the pod directory kept.
	for _, p := range mounts() {
		if err := unmount(p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.mountSource(src, c, 0, m); err != nil {
		t.Fatalf("after a reboot: %v", err)
	}
	if n := len(mounts()); n != 1 {
		t.Errorf("%d mounts after the reboot's pass, want 1", n)
	}
	// An agent restarted since: a new reconciler's worker finds the bind
	// in the mount table.
	restarted := newWorker(New(Config{StateDir: w.r.cfg.StateDir}), w.uid)
	if again, err := restarted.mountSource(src, c, 0, m); err != nil || again != first || len(mounts()) != 1 {
		t.Errorf("after an agent restart: %s, %v, %d mounts; want the same bind kept", again, err, len(mounts()))
	}
	if err := restarted.tearDown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if left := mountinfo.Under(dir); len(left) > 0 {
		t.Errorf("mounted after tearDown: %v", left)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pod directory left: %v", err)
	}
	// tearDown after a reboot (nothing mounted, targets left as files).
	w2, src2, _ := subPathEnv(t)
	if _, err := w2.mountSource(src2, c, 0, &wire.VolumeMount{Name: "data", SubPath: "app.conf"}); err != nil {
		t.Fatal(err)
	}
	dir2, _ := w2.podDir()
	for _, p := range mountinfo.Under(dir2) {
		_ = unmount(p)
	}
	if err := w2.tearDown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir2); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pod directory left after a reboot's tearDown: %v", err)
	}
}

// TestSubPathMountRace swaps the subPath between a directory and a
// symlink to / while its bind is made over and over: the bind never
// shows the host's root.
func TestSubPathMountRace(t *testing.T) {
	w, src, vol := subPathEnv(t)
	marker, err := os.CreateTemp("/", "outpost-subpath-race-")
	if err != nil {
		t.Fatal(err)
	}
	marker.Close()
	t.Cleanup(func() { os.Remove(marker.Name()) })
	name := filepath.Base(marker.Name())
	if err := os.Mkdir(filepath.Join(vol, "real"), 0o777); err != nil {
		t.Fatal(err)
	}
	swap := filepath.Join(vol, "swap")
	if err := os.Symlink("real", swap); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		targets := []string{"real", "/", "real", "../../../../../../../../.."}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			tmp := swap + ".tmp"
			_ = os.Remove(tmp)
			_ = os.Symlink(targets[i%len(targets)], tmp)
			_ = os.Rename(tmp, swap)
		}
	}()
	c := &wire.Container{Name: "app"}
	m := &wire.VolumeMount{Name: "data", MountPath: "/mnt", SubPath: "swap"}
	bound, refused := 0, 0
	for i := 0; i < 20000 && (i < 500 || bound == 0 || refused == 0); i++ {
		got, err := w.mountSource(src, c, 0, m)
		if err != nil {
			if !strings.Contains(err.Error(), `subPath "swap" of volume data leads out of the volume`) {
				t.Fatalf("unexpected error: %v", err)
			}
			refused++
			continue
		}
		bound++
		if _, err := os.Lstat(filepath.Join(got, name)); err == nil {
			t.Fatalf("the bind of subPath swap shows the host's %s", marker.Name())
		}
		if err := unmount(got); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("bound %d times, refused %d times", bound, refused)
	if bound == 0 || refused == 0 {
		t.Errorf("the race did not go both ways (bound %d, refused %d)", bound, refused)
	}
}

func TestOpenHostPath(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := os.Symlink(dir, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, typ string
		wantErr   string
		wantDir   bool
	}{
		{path: dir, typ: "Directory", wantDir: true},
		{path: filepath.Join(dir, "link"), typ: "Directory", wantDir: true}, // the hostPath's own symlinks are followed
		{path: file, typ: "Directory", wantErr: "is not a Directory"},
		{path: dir, typ: "File", wantErr: "is not a File"},
		{path: file, typ: "File"},
		{path: sock, typ: "Socket"},
		{path: file, typ: "Socket", wantErr: "is not a Socket"},
		{path: file, typ: "CharDevice", wantErr: "is not a CharDevice"},
		{path: filepath.Join(dir, "missing"), typ: "Directory", wantErr: "does not exist"},
		{path: filepath.Join(dir, "made/dir"), typ: "DirectoryOrCreate", wantDir: true},
		{path: filepath.Join(dir, "made/file"), typ: "FileOrCreate"},
		{path: filepath.Join(dir, "made/dir"), typ: "FileOrCreate", wantErr: "is not a File"},
		{path: filepath.Join(dir, "untyped"), typ: "", wantDir: true},
		{path: dir, typ: "Pipe", wantErr: `type "Pipe" is not supported`},
	} {
		f, err := openHostPath(&wire.HostPath{Path: tc.path, Type: tc.typ})
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s (%s): err = %v, want %q", tc.path, tc.typ, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s (%s): %v", tc.path, tc.typ, err)
			continue
		}
		st, err := f.Stat()
		f.Close()
		if err != nil || st.IsDir() != tc.wantDir {
			t.Errorf("%s (%s): opened %v, %v", tc.path, tc.typ, st.Mode(), err)
		}
	}
}

func isMountPoint(p string) bool {
	for _, m := range mountinfo.Under(p) {
		if m == p {
			return true
		}
	}
	return false
}

// TestHostPathMountSource checks a hostPath volume is mounted from a bind
// of the descriptor whose type was checked, and that its subPath resolves
// beneath the hostPath.
func TestHostPathMountSource(t *testing.T) {
	w, _, _ := subPathEnv(t)
	host := t.TempDir()
	if err := os.Mkdir(filepath.Join(host, "ok"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/", filepath.Join(host, "esc")); err != nil {
		t.Fatal(err)
	}
	src := volSource{path: host, host: &wire.HostPath{Path: host, Type: "Directory"}}
	c := &wire.Container{Name: "app"}
	got, err := w.mountSource(src, c, 0, &wire.VolumeMount{Name: "host", MountPath: "/h"})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := os.Stat(got)
	b, _ := os.Stat(host)
	if !isMountPoint(got) || !os.SameFile(a, b) {
		t.Errorf("%s is not a bind of the hostPath", got)
	}
	if got, err = w.mountSource(src, c, 1, &wire.VolumeMount{Name: "host", MountPath: "/h", SubPath: "ok"}); err != nil {
		t.Fatal(err)
	}
	a, _ = os.Stat(got)
	b, _ = os.Stat(filepath.Join(host, "ok"))
	if !os.SameFile(a, b) {
		t.Errorf("%s is not a bind of the hostPath's ok/", got)
	}
	_, err = w.mountSource(src, c, 2, &wire.VolumeMount{Name: "host", MountPath: "/h", SubPath: "esc/etc"})
	if err == nil || !strings.Contains(err.Error(), `subPath "esc/etc" of volume host leads out of the volume`) {
		t.Errorf("escape from a hostPath: %v", err)
	}
	src.host.Type = "File"
	if _, err := w.mountSource(src, c, 0, &wire.VolumeMount{Name: "host", MountPath: "/h"}); err == nil || !strings.Contains(err.Error(), "is not a File") {
		t.Errorf("type checked on the descriptor: %v", err)
	}
}

// TestRemoveSubPathsKeepsHostFiles checks the subPath targets are removed
// by unmounting each and removing it without recursion: what a hostPath
// bind shows is never deleted, even when the mount table is not read.
func TestRemoveSubPathsKeepsHostFiles(t *testing.T) {
	w, _, _ := subPathEnv(t)
	host := t.TempDir()
	keep := filepath.Join(host, "keep")
	if err := os.WriteFile(keep, []byte("host data"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := volSource{path: host, host: &wire.HostPath{Path: host}}
	for i, c := range []string{"a", "b"} {
		if _, err := w.mountSource(src, &wire.Container{Name: c}, i, &wire.VolumeMount{Name: "host", MountPath: "/h"}); err != nil {
			t.Fatal(err)
		}
	}
	dir, _ := w.podDir()
	if err := removeSubPaths(filepath.Join(dir, "volume-subpaths")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(keep); err != nil || string(b) != "host data" {
		t.Fatalf("host file after removeSubPaths: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "volume-subpaths")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("volume-subpaths left: %v", err)
	}
	if left := mountinfo.Under(dir); len(left) > 0 {
		t.Errorf("still mounted: %v", left)
	}
}
