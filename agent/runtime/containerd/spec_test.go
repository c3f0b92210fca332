package containerd

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"outpost.dev/agent/runtime/seccomp"
	"outpost.dev/test/harness"
)

// specFor builds the spec of sp over an image with a shell entrypoint.
func specFor(t *testing.T, sp Spec) *specs.Spec {
	t.Helper()
	if sp.ID == "" {
		sp.ID = "c1"
	}
	s, err := buildSpec("outpost", sp, ImageConfig{Entrypoint: []string{"sh"}})
	if err != nil {
		t.Fatalf("buildSpec(%+v): %v", sp, err)
	}
	return s
}

func js(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// allowed says whether the profile has an unconditional allow rule for name.
func allowed(p *specs.LinuxSeccomp, name string) bool {
	for _, r := range p.Syscalls {
		if r.Action == specs.ActAllow && len(r.Args) == 0 && slices.Contains(r.Names, name) {
			return true
		}
	}
	return false
}

func TestSpecSeccomp(t *testing.T) {
	local := &specs.LinuxSeccomp{DefaultAction: specs.ActAllow,
		Syscalls: []specs.LinuxSyscall{{Names: []string{"mkdir"}, Action: specs.ActErrno}}}
	for _, tc := range []struct {
		name  string
		sp    Spec
		check func(*testing.T, *specs.LinuxSeccomp)
	}{
		{"default is RuntimeDefault for the default capabilities", Spec{}, func(t *testing.T, p *specs.LinuxSeccomp) {
			if p == nil || js(t, p) != js(t, seccomp.Default(defaultCaps)) {
				t.Errorf("profile %s, want seccomp.Default(defaultCaps)", js(t, p))
			}
			if allowed(p, "unshare") || allowed(p, "mount") || !allowed(p, "read") || !allowed(p, "chroot") {
				t.Error("the default profile must allow read and chroot (CAP_SYS_CHROOT), not unshare or mount")
			}
		}},
		{"capabilities change the profile", Spec{CapAdd: []string{"SYS_ADMIN"}, CapDrop: []string{"SYS_CHROOT"}}, func(t *testing.T, p *specs.LinuxSeccomp) {
			if !allowed(p, "unshare") || !allowed(p, "mount") || allowed(p, "chroot") {
				t.Error("with CAP_SYS_ADMIN and without CAP_SYS_CHROOT: want unshare and mount, no chroot")
			}
		}},
		{"unconfined", Spec{Seccomp: &Seccomp{Unconfined: true}}, func(t *testing.T, p *specs.LinuxSeccomp) {
			if p != nil {
				t.Errorf("profile %s, want none", js(t, p))
			}
		}},
		{"localhost", Spec{Seccomp: &Seccomp{Profile: local}}, func(t *testing.T, p *specs.LinuxSeccomp) {
			if js(t, p) != js(t, local) {
				t.Errorf("profile %s, want %s", js(t, p), js(t, local))
			}
		}},
		{"privileged runs unconfined", Spec{Privileged: true, Seccomp: &Seccomp{Profile: local}}, func(t *testing.T, p *specs.LinuxSeccomp) {
			if p != nil {
				t.Errorf("privileged: profile %s, want none", js(t, p))
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.check(t, specFor(t, tc.sp).Linux.Seccomp) })
	}
	if _, err := buildSpec("outpost", Spec{ID: "x", Seccomp: &Seccomp{}}, ImageConfig{Entrypoint: []string{"sh"}}); err == nil {
		t.Error("an empty Seccomp choice was accepted")
	}
}

func TestSpecNoNewPrivileges(t *testing.T) {
	for _, tc := range []struct {
		sp   Spec
		want bool
	}{
		{Spec{}, false}, // setuid binaries work, as on a kubelet node
		{Spec{NoNewPrivileges: true}, true},
		{Spec{NoNewPrivileges: true, User: &User{UID: 1000}}, true},
		{Spec{Privileged: true}, false},
	} {
		if got := specFor(t, tc.sp).Process.NoNewPrivileges; got != tc.want {
			t.Errorf("%+v: NoNewPrivileges %v, want %v", tc.sp, got, tc.want)
		}
	}
}

func TestSpecRootfsAndProc(t *testing.T) {
	def := specFor(t, Spec{})
	if def.Root.Readonly || len(def.Linux.MaskedPaths) == 0 || len(def.Linux.ReadonlyPaths) == 0 {
		t.Fatalf("default: readonly %v, masked %v, read-only paths %v", def.Root.Readonly, def.Linux.MaskedPaths, def.Linux.ReadonlyPaths)
	}
	if s := specFor(t, Spec{ReadOnlyRootfs: true}); !s.Root.Readonly || len(s.Linux.MaskedPaths) == 0 {
		t.Errorf("readOnlyRootFilesystem: readonly %v, masked %v", s.Root.Readonly, s.Linux.MaskedPaths)
	}
	if s := specFor(t, Spec{ProcUnmasked: true}); s.Root.Readonly || s.Linux.MaskedPaths != nil || s.Linux.ReadonlyPaths != nil {
		t.Errorf("procMount Unmasked: readonly %v, masked %v, read-only paths %v", s.Root.Readonly, s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
}

func TestSpecRunAsNonRoot(t *testing.T) {
	for _, tc := range []struct {
		imageUser string
		user      *User
		nonRoot   bool
		errHas    string // "" when created
		uid       uint32
	}{
		{"", nil, false, "", 0},
		{"", nil, true, "image will run as root", 0},
		{"0:0", nil, true, "image will run as root", 0},
		{"1000", nil, true, "", 1000},
		{"1000:50", nil, true, "", 1000},
		{"app", nil, true, "non-numeric user (app)", 0},
		{"", &User{UID: 1001}, true, "", 1001},
		{"1000", &User{UID: 0}, true, "runAsUser breaks non-root policy", 0},
	} {
		s, err := buildSpec("outpost", Spec{ID: "c", User: tc.user, RunAsNonRoot: tc.nonRoot},
			ImageConfig{Entrypoint: []string{"sh"}, User: tc.imageUser})
		var ce *ConfigError
		switch {
		case tc.errHas == "" && err != nil:
			t.Errorf("image user %q, user %+v: %v", tc.imageUser, tc.user, err)
		case tc.errHas == "" && s.Process.User.UID != tc.uid:
			t.Errorf("image user %q, user %+v: uid %d, want %d", tc.imageUser, tc.user, s.Process.User.UID, tc.uid)
		case tc.errHas != "" && (!errors.As(err, &ce) || !strings.Contains(err.Error(), tc.errHas)):
			t.Errorf("image user %q, user %+v: %v; want a ConfigError with %q", tc.imageUser, tc.user, err, tc.errHas)
		}
	}
}

func TestSpecAdditionalGIDs(t *testing.T) {
	if g := specFor(t, Spec{}).Process.User.AdditionalGids; len(g) != 0 {
		t.Errorf("default additional groups %v, want none", g)
	}
	if g := specFor(t, Spec{AdditionalGIDs: []uint32{3000, 2000}, User: &User{UID: 1000}}).Process.User; !slices.Equal(g.AdditionalGids, []uint32{3000, 2000}) || g.UID != 1000 {
		t.Errorf("user %+v, want uid 1000 with groups 3000, 2000", g)
	}
}

func TestSpecSysctls(t *testing.T) {
	if m := specFor(t, Spec{}).Linux.Sysctl; m != nil {
		t.Errorf("default sysctls %v, want none", m)
	}
	in := map[string]string{"net.ipv4.ping_group_range": "0 65535"}
	s := specFor(t, Spec{Sysctls: in})
	in["net.ipv4.ping_group_range"] = "changed after"
	if s.Linux.Sysctl["net.ipv4.ping_group_range"] != "0 65535" || len(s.Linux.Sysctl) != 1 {
		t.Errorf("sysctls %v", s.Linux.Sysctl)
	}
}

func TestSpecNamespacesTTYAndCgroup(t *testing.T) {
	nsOf := func(s *specs.Spec) map[specs.LinuxNamespaceType]string {
		m := map[specs.LinuxNamespaceType]string{}
		for _, n := range s.Linux.Namespaces {
			m[n.Type] = "new"
			if n.Path != "" {
				m[n.Type] = n.Path
			}
		}
		return m
	}
	s := specFor(t, Spec{})
	if ns := nsOf(s); ns[specs.PIDNamespace] != "new" || ns[specs.IPCNamespace] != "new" {
		t.Errorf("default namespaces %v", ns)
	}
	if s.Process.Terminal || s.Linux.CgroupsPath != "/outpost/c1" {
		t.Errorf("default terminal %v cgroup %q", s.Process.Terminal, s.Linux.CgroupsPath)
	}
	s = specFor(t, Spec{PIDNamespace: PIDHost, HostIPC: true, TTY: true, CgroupParent: "/outpost/pod-x"})
	ns := nsOf(s)
	if _, ok := ns[specs.PIDNamespace]; ok {
		t.Errorf("hostPID keeps a PID namespace: %v", ns)
	}
	if _, ok := ns[specs.IPCNamespace]; ok {
		t.Errorf("hostIPC keeps an IPC namespace: %v", ns)
	}
	for _, m := range s.Mounts {
		if m.Destination == "/dev/shm" && (m.Type != "bind" || m.Source != "/dev/shm") {
			t.Errorf("hostIPC /dev/shm is %+v, want the host's", m)
		}
	}
	if !s.Process.Terminal || !slices.Contains(s.Process.Env, "TERM=xterm") {
		t.Errorf("tty: terminal %v env %v", s.Process.Terminal, s.Process.Env)
	}
	if s.Linux.CgroupsPath != "/outpost/pod-x/c1" {
		t.Errorf("cgroup %q, want under the pod's", s.Linux.CgroupsPath)
	}
	if ns := nsOf(specFor(t, Spec{PIDNamespace: "/proc/42/ns/pid"})); ns[specs.PIDNamespace] != "/proc/42/ns/pid" {
		t.Errorf("shared PID namespace %v", ns)
	}
	for _, bad := range []Spec{{PIDNamespace: "relative"}, {CgroupParent: "rel"}, {CgroupParent: "/a/../b"}} {
		bad.ID = "c1"
		if _, err := buildSpec("outpost", bad, ImageConfig{Entrypoint: []string{"sh"}}); err == nil {
			t.Errorf("%+v built", bad)
		}
	}
}

func TestPodCgroupName(t *testing.T) {
	r := &Runtime{cfg: Config{Namespace: "outpost"}}
	if p, err := r.podCgroup("pod-0f6c-11"); err != nil || p != "/outpost/pod-0f6c-11" {
		t.Errorf("podCgroup = %q, %v", p, err)
	}
	for _, bad := range []string{"", "../x", "a/b", "UPPER", strings.Repeat("a", 64)} {
		if _, err := r.podCgroup(bad); err == nil {
			t.Errorf("podCgroup(%q) accepted", bad)
		}
	}
}

// TestSpecMountPropagation mounts real directories: a private bind mount
// refuses HostToContainer and Bidirectional with what to do; once the
// mount is shared, they become rslave and rshared binds and the root
// follows.
func TestSpecMountPropagation(t *testing.T) {
	harness.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "src")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	mount := func(p string) Spec {
		return Spec{Mounts: []Mount{{HostPath: dir, ContainerPath: "/host", ReadOnly: true, Propagation: p}}}
	}
	for _, p := range []string{PropagationHostToContainer, PropagationBidirectional} {
		_, err := buildSpec("outpost", mount(p), ImageConfig{Entrypoint: []string{"sh"}})
		if err == nil || !strings.Contains(err.Error(), "--make-rshared "+dir) {
			t.Errorf("%s on a private mount: %v, want a refusal saying to make %s shared", p, err, dir)
		}
	}
	if _, err := buildSpec("outpost", mount("Sideways"), ImageConfig{Entrypoint: []string{"sh"}}); err == nil {
		t.Error("an unknown propagation mode was accepted")
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ mode, opt, root string }{
		{"", "rprivate", ""},
		{PropagationHostToContainer, "rslave", "rslave"},
		{PropagationBidirectional, "rshared", "rshared"},
	} {
		s := specFor(t, mount(tc.mode))
		i := slices.IndexFunc(s.Mounts, func(m specs.Mount) bool { return m.Destination == "/host" })
		if i < 0 {
			t.Fatalf("%q: no /host mount", tc.mode)
		}
		if got := s.Mounts[i].Options; !slices.Equal(got, []string{"rbind", tc.opt, "ro"}) {
			t.Errorf("%q: mount options %q, want rbind %s ro", tc.mode, got, tc.opt)
		}
		if s.Linux.RootfsPropagation != tc.root {
			t.Errorf("%q: rootfs propagation %q, want %q", tc.mode, s.Linux.RootfsPropagation, tc.root)
		}
	}
}
