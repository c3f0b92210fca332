package pods

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"outpost.dev/agent/mountinfo"
	"outpost.dev/wire"
)

// podSetup is what a pod's containers mount: volume sources by name, the
// pod's network namespace, hosts and resolv.conf files, and its hostname.
type podSetup struct {
	volumes  map[string]volSource
	netns    string
	hosts    string
	resolv   string
	hostname string
	// pidns is the pod's shared PID namespace (shareProcessNamespace).
	pidns string
	// cgroup is the pod's cgroup (pod-level resources), the parent of
	// its containers'.
	cgroup string
}

// podCgroupName names the cgroup of pod uid (with pod-level limits).
func podCgroupName(uid string) string { return "pod-" + strings.ToLower(uid) }

type volSource struct {
	path     string
	readOnly bool
	// host is set for a hostPath volume: every mount of it is bound from
	// a descriptor whose type was checked (see mountSource).
	host *wire.HostPath
}

// podDir is pods/<uid> in the state directory. The UID was checked when
// the object was decoded; it is checked again here, where it becomes a
// path that tearDown removes.
func (w *worker) podDir() (string, error) {
	if err := wire.CheckUID("pod uid", w.uid); err != nil {
		return "", err
	}
	return filepath.Join(w.r.cfg.StateDir, "pods", w.uid), nil
}

// setUp prepares the pod's volumes (creating emptyDirs, checking hostPaths,
// writing ConfigMap, Secret and projected files, updating them when they
// changed), its network namespace, attached to the pod network, and its
// hosts and resolv.conf files. It is idempotent: every pass calls it.
func (w *worker) setUp(ctx context.Context, o *wire.Object, rf *refs) (*podSetup, error) {
	s := &podSetup{volumes: map[string]volSource{}}
	dir, err := w.podDir()
	if err != nil {
		return s, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "volumes"), 0o750); err != nil {
		return s, err
	}
	var errs []error
	for i := range o.Pod.Volumes {
		v := &o.Pod.Volumes[i]
		if err := wire.CheckLabel("volume name", v.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		p := filepath.Join(dir, "volumes", v.Name)
		switch {
		case v.EmptyDir != nil:
			if err := emptyDir(p, v.EmptyDir); err != nil {
				errs = append(errs, fmt.Errorf("volume %s: %w", v.Name, err))
				continue
			}
			if err := w.fsGroup(o.Pod, v.Name, p, false); err != nil {
				errs = append(errs, fmt.Errorf("volume %s: %w", v.Name, err))
				continue
			}
			s.volumes[v.Name] = volSource{path: p}
		case v.HostPath != nil:
			// Checked here so the pod waits with the reason; checked
			// again on the descriptor that is mounted.
			f, err := openHostPath(v.HostPath)
			if err != nil {
				errs = append(errs, fmt.Errorf("volume %s: %w", v.Name, err))
				continue
			}
			f.Close()
			if v.FSGroupOwned && !v.ReadOnly {
				// A local PersistentVolume, owned as a kubelet owns it.
				if err := w.fsGroup(o.Pod, v.Name, v.HostPath.Path, false); err != nil {
					errs = append(errs, fmt.Errorf("volume %s: %w", v.Name, err))
					continue
				}
			}
			s.volumes[v.Name] = volSource{path: v.HostPath.Path, host: v.HostPath, readOnly: v.ReadOnly}
		default:
			files, err := w.volumeFiles(o, rf, v)
			if err != nil {
				errs = append(errs, fmt.Errorf("volume %s: %w", v.Name, err))
				continue
			}
			fsGroupFiles(o.Pod, files)
			if err := writeAtomic(p, files, w.r.now()); err != nil {
				errs = append(errs, fmt.Errorf("volume %s: %w", v.Name, err))
				continue
			}
			if err := w.fsGroup(o.Pod, v.Name, p, true); err != nil {
				errs = append(errs, fmt.Errorf("volume %s: %w", v.Name, err))
				continue
			}
			s.volumes[v.Name] = volSource{path: p, readOnly: true}
		}
	}
	if r := o.Pod.Resources; r != nil && (r.CPUMillis > 0 || r.MemoryBytes > 0) {
		if rt := w.r.runtime(); rt != nil {
			cg, err := rt.SetPodCgroup(podCgroupName(w.uid), r.CPUMillis, r.MemoryBytes)
			if err != nil {
				errs = append(errs, fmt.Errorf("spec.resources: %w", err))
			}
			s.cgroup = cg
		}
	}
	if o.Pod.PIDMode() == wire.PIDPod {
		ns, err := w.pidNamespace(dir)
		if err != nil {
			errs = append(errs, err)
		}
		s.pidns = ns
	}
	if o.Pod.HostNetwork && (o.Pod.DNSPolicy == "ClusterFirstWithHostNet" || o.Pod.DNSConfig != nil) {
		// The node's network, but the resolver the pod asked for.
		rc, err := w.r.podDNS(o)
		p := filepath.Join(dir, "resolv.conf")
		if err == nil {
			err = writeIfChanged(p, rc.String())
		}
		if err != nil {
			errs = append(errs, err)
		} else {
			s.resolv = p
		}
	}
	if !o.Pod.HostNetwork {
		ns := filepath.Join(dir, "netns")
		if made, err := ensureNetNS(ns); err != nil {
			errs = append(errs, fmt.Errorf("network namespace: %w", err))
		} else {
			s.netns = ns
			if err := w.attach(ctx, o, ns, made); err != nil {
				errs = append(errs, fmt.Errorf("pod network: %w", err))
			}
		}
		host, domain, err := w.r.podHostname(o)
		if err != nil {
			errs = append(errs, err)
		}
		s.hostname = host
		rc, err := w.r.podDNS(o)
		if err != nil {
			errs = append(errs, err)
		}
		for _, f := range []struct{ name, content string }{
			{"hosts", hostsFile(host, domain, w.ips, o.Pod.HostAliases)},
			{"resolv.conf", rc.String()},
		} {
			p := filepath.Join(dir, f.name)
			if err := writeIfChanged(p, f.content); err != nil {
				errs = append(errs, err)
				continue
			}
			if f.name == "hosts" {
				s.hosts = p
			} else {
				s.resolv = p
			}
		}
	}
	return s, errors.Join(errs...)
}

// writeIfChanged writes a file bind-mounted into the pod's containers in
// place (same inode, so they see the change) when its content changed.
func writeIfChanged(p, content string) error {
	if old, err := os.ReadFile(p); err == nil && string(old) == content {
		return nil
	}
	return os.WriteFile(p, []byte(content), 0o644)
}

// tearDown removes the pod's directory after unmounting what is mounted
// in it (memory emptyDirs, the network namespace, the bind mounts of
// subPaths and hostPaths under volume-subpaths/). It reads the mount
// table, not what this agent mounted, so mounts left by an earlier agent
// are found too; after a reboot there are none and the directory goes.
// The pod's network attachment goes first (CNI DEL), while its namespace
// is still there to take the interface out of.
func (w *worker) tearDown(ctx context.Context) error {
	dir, err := w.podDir()
	if err != nil {
		return err
	}
	if err := w.stopPIDNamespace(dir); err != nil {
		return err
	}
	if err := w.detach(ctx, filepath.Join(dir, "netns")); err != nil {
		return err
	}
	for _, m := range mountinfo.Under(dir) {
		if err := unmount(m); err != nil {
			return fmt.Errorf("unmount %s: %w", m, err)
		}
	}
	if left := mountinfo.Under(dir); len(left) > 0 {
		return fmt.Errorf("still mounted under %s: %v", dir, left)
	}
	if err := removeSubPaths(filepath.Join(dir, "volume-subpaths")); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// removeSubPaths removes the bind targets of mountSource one by one, each
// unmounted by the kernel's word (not the mount table's) and removed
// without recursing, so a bind of a hostPath that is somehow still there
// is never emptied by a recursive remove, as the kubelet cleans its
// volume-subpaths.
func removeSubPaths(root string) error {
	vols, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, v := range vols {
		cs, _ := os.ReadDir(filepath.Join(root, v.Name()))
		for _, c := range cs {
			cdir := filepath.Join(root, v.Name(), c.Name())
			targets, _ := os.ReadDir(cdir)
			for _, t := range targets {
				p := filepath.Join(cdir, t.Name())
				for range 16 {
					if unix.Unmount(p, unix.MNT_DETACH) != nil {
						break
					}
				}
				if err := os.Remove(p); err != nil {
					return fmt.Errorf("removing subPath mount point %s: %w", p, err)
				}
			}
			if err := os.Remove(cdir); err != nil {
				return err
			}
		}
		if err := os.Remove(filepath.Join(root, v.Name())); err != nil {
			return err
		}
	}
	return os.Remove(root)
}

func emptyDir(p string, e *wire.EmptyDir) error {
	if err := os.MkdirAll(p, 0o777); err != nil {
		return err
	}
	// 0777 whatever the umask, keeping the setgid bit an fsGroup adds.
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.Mode().Perm() != 0o777 {
		if err := os.Chmod(p, fi.Mode()&os.ModeSetgid|0o777); err != nil {
			return err
		}
	}
	if e.Memory && os.Geteuid() == 0 && !isTmpfs(p) {
		opts := "mode=0777"
		if e.SizeLimit > 0 {
			opts += fmt.Sprintf(",size=%d", e.SizeLimit)
		}
		return mountTmpfs(p, opts)
	}
	return nil
}

// openHostPath creates a hostPath volume's path if its type says so (or
// a directory when it has no type, as containerd's CRI does), opens it
// (O_PATH; symlinks in the hostPath itself are followed, as a kubelet
// does) and checks its type on the descriptor, so the check holds for
// what is mounted even if the path changes afterwards.
func openHostPath(h *wire.HostPath) (*os.File, error) {
	_, statErr := os.Stat(h.Path)
	switch h.Type {
	case "", "Unset", "DirectoryOrCreate":
		if errors.Is(statErr, fs.ErrNotExist) {
			if err := os.MkdirAll(h.Path, 0o755); err != nil {
				return nil, err
			}
		}
	case "FileOrCreate":
		if errors.Is(statErr, fs.ErrNotExist) {
			if err := os.MkdirAll(filepath.Dir(h.Path), 0o755); err != nil {
				return nil, err
			}
			f, err := os.OpenFile(h.Path, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return nil, err
			}
			f.Close()
		}
	case "Directory", "File", "Socket", "CharDevice", "BlockDevice":
	default:
		return nil, fmt.Errorf("hostPath type %q is not supported", h.Type)
	}
	fd, err := unix.Open(h.Path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("hostPath %s (type %s) does not exist", h.Path, h.Type)
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: h.Path, Err: err}
	}
	f := os.NewFile(uintptr(fd), h.Path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, &os.PathError{Op: "stat", Path: h.Path, Err: err}
	}
	want := map[string]uint32{"DirectoryOrCreate": unix.S_IFDIR, "Directory": unix.S_IFDIR,
		"FileOrCreate": unix.S_IFREG, "File": unix.S_IFREG, "Socket": unix.S_IFSOCK,
		"CharDevice": unix.S_IFCHR, "BlockDevice": unix.S_IFBLK}
	if t, ok := want[h.Type]; ok && st.Mode&unix.S_IFMT != t {
		f.Close()
		what := strings.TrimSuffix(h.Type, "OrCreate")
		return nil, fmt.Errorf("hostPath %s is not a %s", h.Path, what)
	}
	return f, nil
}

// file is one file of a ConfigMap, Secret or projected volume.
type file struct {
	data []byte
	mode os.FileMode
}

func mode(m, def int32) os.FileMode {
	if m != 0 {
		return os.FileMode(m) & 0o777
	}
	if def != 0 {
		return os.FileMode(def) & 0o777
	}
	return 0o644
}

// volumeFiles computes the files of a ConfigMap, Secret or projected volume.
func (w *worker) volumeFiles(o *wire.Object, rf *refs, v *wire.Volume) (map[string]file, error) {
	files := map[string]file{}
	add := func(fv *wire.FilesVolume, secret bool, defMode int32) error {
		data := map[string][]byte{}
		if secret {
			s := rf.secrets[o.Namespace+"/"+fv.Name]
			if s == nil {
				if fv.Optional {
					return nil
				}
				return fmt.Errorf("secret %q not found", fv.Name)
			}
			for k, b := range s.Data {
				data[k] = b
			}
		} else {
			cm := rf.configMaps[o.Namespace+"/"+fv.Name]
			if cm == nil {
				if fv.Optional {
					return nil
				}
				return fmt.Errorf("configmap %q not found", fv.Name)
			}
			for k, s := range cm.Data {
				data[k] = []byte(s)
			}
			for k, b := range cm.Binary {
				data[k] = b
			}
		}
		dm := fv.DefaultMode
		if dm == 0 {
			dm = defMode
		}
		if len(fv.Items) == 0 {
			for k, b := range data {
				files[k] = file{data: b, mode: mode(0, dm)}
			}
			return nil
		}
		for _, it := range fv.Items {
			b, ok := data[it.Key]
			if !ok {
				if fv.Optional {
					continue
				}
				return fmt.Errorf("key %q not found in %s", it.Key, fv.Name)
			}
			files[it.Path] = file{data: b, mode: mode(it.Mode, dm)}
		}
		return nil
	}
	switch {
	case v.ConfigMap != nil:
		if err := add(v.ConfigMap, false, 0); err != nil {
			return nil, err
		}
	case v.Secret != nil:
		if err := add(v.Secret, true, 0); err != nil {
			return nil, err
		}
	case v.Projected != nil:
		for i := range v.Projected.Sources {
			src := &v.Projected.Sources[i]
			switch {
			case src.ConfigMap != nil:
				if err := add(src.ConfigMap, false, v.Projected.DefaultMode); err != nil {
					return nil, err
				}
			case src.Secret != nil:
				if err := add(src.Secret, true, v.Projected.DefaultMode); err != nil {
					return nil, err
				}
			case len(src.DownwardAPI) > 0:
				for _, f := range src.DownwardAPI {
					var val string
					var err error
					if f.Resource != nil {
						val, err = w.resource(o.Pod, nil, f.Resource)
					} else {
						val, err = w.field(o, f.Field)
					}
					if err != nil {
						return nil, err
					}
					files[f.Path] = file{data: []byte(val), mode: mode(f.Mode, v.Projected.DefaultMode)}
				}
			case src.ServiceAccountToken != nil:
				t := podToken(rf, o.UID, v.Name, src.ServiceAccountToken.Path)
				if t == nil {
					// As a kubelet that cannot get a token: the volume is
					// not set up and the containers wait. Once a token was
					// received it stays, expired or not, so a pod restarted
					// offline starts with the last one.
					return nil, fmt.Errorf("no service-account token for %s yet: the relay requests it while the node is connected", src.ServiceAccountToken.Path)
				}
				files[src.ServiceAccountToken.Path] = file{data: []byte(t.Token), mode: mode(0, v.Projected.DefaultMode)}
			}
		}
	}
	for p := range files {
		if err := wire.CheckItemPath("file path", p); err != nil {
			return nil, err
		}
		if p != filepath.Clean(p) {
			return nil, fmt.Errorf("file path %q is not clean (remove duplicate or trailing /, and ./)", p)
		}
	}
	return files, nil
}

// podToken returns the token the relay sent for the serviceAccountToken
// source at path of pod uid's volume, or nil.
func podToken(rf *refs, uid, volume, path string) *wire.Token {
	if rf == nil || rf.tokens[uid] == nil {
		return nil
	}
	for i, t := range rf.tokens[uid].Items {
		if t.Volume == volume && t.Path == path {
			return &rf.tokens[uid].Items[i]
		}
	}
	return nil
}

// writeAtomic writes files into dir the way a kubelet's AtomicWriter
// does: the payload goes into a fresh timestamped directory, a ..data
// symlink is swapped to it with one rename, and each top-level name is a
// symlink through ..data. A reader sees the old set or the new one, never
// a mix. Nothing is written when the payload is unchanged.
func writeAtomic(dir string, files map[string]file, now time.Time) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	dataLink := filepath.Join(dir, "..data")
	old, _ := os.Readlink(dataLink)
	if old != "" && sameFiles(filepath.Join(dir, old), files) {
		return nil
	}
	ts, err := os.MkdirTemp(dir, ".."+now.UTC().Format("2006_01_02_15_04_05.")) // kubelet's naming
	if err != nil {
		return err
	}
	for p, f := range files {
		full := filepath.Join(ts, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, f.data, f.mode); err != nil {
			return err
		}
		if err := os.Chmod(full, f.mode); err != nil {
			return err
		}
	}
	if err := os.Chmod(ts, 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, dataLink); err != nil {
		return err
	}
	// Top-level names: add the new, drop the gone.
	want := map[string]bool{}
	for p := range files {
		want[strings.SplitN(p, "/", 2)[0]] = true
	}
	for name := range want {
		link := filepath.Join(dir, name)
		if t, err := os.Readlink(link); err == nil && t == filepath.Join("..data", name) {
			continue
		}
		_ = os.RemoveAll(link)
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			return err
		}
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, "..") {
			if n != "..data" && n != filepath.Base(ts) {
				_ = os.RemoveAll(filepath.Join(dir, n))
			}
			continue
		}
		if !want[n] {
			_ = os.RemoveAll(filepath.Join(dir, n))
		}
	}
	return nil
}

// sameFiles reports whether dir holds exactly files.
func sameFiles(dir string, files map[string]file) bool {
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		f, ok := files[rel]
		if !ok {
			return errors.New("extra")
		}
		info, err := d.Info()
		if err != nil || info.Mode().Perm() != f.mode {
			return errors.New("mode")
		}
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(b, f.data) {
			return errors.New("data")
		}
		n++
		return nil
	})
	return err == nil && n == len(files)
}
