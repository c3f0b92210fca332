package containerd

import (
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"outpost.dev/agent/mountinfo"
	"outpost.dev/agent/runtime/seccomp"
)

// Spec is what Outpost asks of one container. It is Outpost's own type,
// translated from a pod by the agent; nothing here is a Kubernetes type.
type Spec struct {
	// ID names the container in containerd; unique in the namespace.
	ID string
	// Image is a reference pulled with Pull.
	Image string
	// Command replaces the image's entrypoint; Args its cmd (as in a pod).
	Command, Args []string
	// Env is added to the image's environment, "NAME=value"; later wins.
	Env []string
	// WorkingDir overrides the image's working directory.
	WorkingDir string
	// Mounts are bind mounts from the host.
	Mounts []Mount
	// MemoryLimit in bytes; 0 is unlimited.
	MemoryLimit int64
	// CPUMillis limits CPU time (1000 is one core); 0 is unlimited.
	CPUMillis int64
	// HostNetwork shares the host's network namespace.
	HostNetwork bool
	// Privileged gives all capabilities and devices and drops the masked
	// and read-only paths.
	Privileged bool
	// NoNewPrivileges sets no_new_privs, so setuid binaries and file
	// capabilities grant nothing (allowPrivilegeEscalation: false).
	NoNewPrivileges bool
	// ReadOnlyRootfs mounts the image's root file system read-only.
	ReadOnlyRootfs bool
	// ProcUnmasked drops the masked and read-only paths of /proc and /sys
	// (procMount: Unmasked), as containerd's CRI plugin does.
	ProcUnmasked bool
	// LogPath receives the container's stdout and stderr (appended).
	LogPath string
	// LogBinary, if set, is a containerd binary logger: the shim starts
	// it with the container's stdout on fd 3, stderr on fd 4 and a ready
	// pipe on fd 5, as "LogBinary logger LogPath [key value]…" (the pairs
	// from LogArgs; containerd passes them in no fixed order). Without it
	// the shim appends raw output to LogPath.
	LogBinary string
	LogArgs   map[string]string
	// LogInAgent has this Runtime copy stdout and stderr into LogPath in
	// the CRI format itself, through FIFOs in Config.LogFIFODir, with
	// LogArgs' max-size and max-files, instead of a logger process
	// (LogBinary is then unused); see AttachLogs.
	LogInAgent bool
	// CapAdd and CapDrop change the default capability set; names with or
	// without the CAP_ prefix, "ALL" in CapDrop drops every default.
	CapAdd, CapDrop []string
	// User, if set, overrides the image's user (runAsUser/runAsGroup).
	User *User
	// Sysctls are set in the container's namespaces (the pod's sysctls,
	// admitted by the caller).
	Sysctls map[string]string
	// AdditionalGIDs are the process's extra groups (a pod's
	// supplementalGroups and fsGroup).
	AdditionalGIDs []uint32
	// RunAsNonRoot refuses (a ConfigError) to create the container if its
	// user, User or else the image's, is root or unknown.
	RunAsNonRoot bool
	// NetNS is the path of a network namespace to join (a pod's, shared by
	// its containers); empty gives the container a new one with only
	// loopback. Ignored with HostNetwork.
	NetNS string
	// Hostname is the UTS hostname; default ID.
	Hostname string
	// Labels are added to the container's labels (LabelManaged is set).
	Labels map[string]string
	// PIDNamespace is the container's PID namespace: "" a new one,
	// PIDHost the host's, else the path of one to join (a pod's shared
	// namespace, /proc/PID/ns/pid of the process holding it).
	PIDNamespace string
	// HostIPC shares the host's IPC namespace and /dev/shm.
	HostIPC bool
	// TTY gives the process a terminal (and TERM=xterm, as containerd's
	// CRI plugin does); its output goes to the log as stdout.
	TTY bool
	// Stdin, if set, is the path of a FIFO (created at Start if missing)
	// that is the process's standard input: the shim reads it once a
	// writer opens it. The path is kept in the LabelStdin label. With a
	// binary logger, containerd passes standard input only to a TTY.
	Stdin string
	// CgroupParent, if set, is the cgroup (relative to the hierarchies'
	// roots) the container's cgroup is made in: a pod's, which bounds all
	// its containers. Default: the runtime's namespace.
	CgroupParent string
	// Seccomp is the container's seccomp filter; nil is the RuntimeDefault
	// profile for the container's final capabilities (seccomp.Default,
	// what containerd's CRI plugin gives). Privileged containers run
	// without one whatever it says, as with containerd's CRI plugin.
	Seccomp *Seccomp
}

// Seccomp is a seccomp choice other than the default.
type Seccomp struct {
	// Unconfined runs the container without a filter.
	Unconfined bool
	// Profile, unless Unconfined, is the filter (a Localhost profile,
	// read with seccomp.Load).
	Profile *specs.LinuxSeccomp
}

// User is a numeric user and group.
type User struct {
	UID uint32
	// GID, if nil, is the image's group (or 0).
	GID *uint32
}

// Mount is a bind mount of a host path into the container.
type Mount struct {
	HostPath, ContainerPath string
	ReadOnly                bool
	// Propagation is PropagationHostToContainer (rslave: mounts made
	// on the host later appear inside), PropagationBidirectional
	// (rshared: both ways; privileged containers only) or empty
	// (rprivate). As containerd's CRI does, the source must already sit on
	// a shared mount (or a slave one, for HostToContainer), and the
	// container's root follows so the propagation reaches the mount.
	Propagation string
}

// Mount propagation modes, named as the Kubernetes API names them.
const (
	PropagationHostToContainer = "HostToContainer"
	PropagationBidirectional   = "Bidirectional"
)

// specOpt changes an OCI runtime spec; the spec is built by composing
// them, in the spirit of containerd's oci.SpecOpts (which this package
// does not import: pkg/oci alone adds 2.2 MB to the agent, see
// docs/containerd.md).
type specOpt func(*specs.Spec) error

// defaultCaps are the capabilities containers get unless privileged
// (containerd's and Docker's default set).
var defaultCaps = []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"}

// allCaps are the capabilities a privileged container may get, in the
// order of their numbers (see currentCaps).
var allCaps = []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
	"CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
	"CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
	"CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ"}

// withDefaults is the base spec: the namespaces, mounts and masked paths
// containerd's oci.WithDefaultSpec gives a Linux container.
func withDefaults(namespace, id string) specOpt {
	return func(s *specs.Spec) error {
		caps := append([]string(nil), defaultCaps...)
		*s = specs.Spec{
			Version:  specs.Version,
			Root:     &specs.Root{Path: "rootfs"},
			Hostname: id,
			Process: &specs.Process{
				Cwd:          "/",
				Env:          []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
				Capabilities: &specs.LinuxCapabilities{Bounding: caps, Permitted: caps, Effective: caps},
				Rlimits:      []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
			},
			Mounts: []specs.Mount{
				{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
				{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
				{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
				{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
				{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
				{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
				{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			},
			Linux: &specs.Linux{
				CgroupsPath: "/" + namespace + "/" + id,
				MaskedPaths: []string{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
					"/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"},
				ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
				Resources:     &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}},
				Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
					{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace}},
			},
		}
		return nil
	}
}

// PIDHost is Spec.PIDNamespace for the host's PID namespace.
const PIDHost = "host"

// withNamespaces applies the PID and IPC choices.
func withNamespaces(pid string, hostIPC bool) specOpt {
	return func(s *specs.Spec) error {
		if pid != "" && pid != PIDHost && !filepath.IsAbs(pid) {
			return fmt.Errorf("PID namespace %q is not %q or an absolute path", pid, PIDHost)
		}
		var ns []specs.LinuxNamespace
		for _, n := range s.Linux.Namespaces {
			switch {
			case n.Type == specs.PIDNamespace && pid == PIDHost, n.Type == specs.IPCNamespace && hostIPC:
				continue
			case n.Type == specs.PIDNamespace && pid != "":
				n.Path = pid
			}
			ns = append(ns, n)
		}
		s.Linux.Namespaces = ns
		if hostIPC {
			// The host's shared memory, not a private tmpfs, as with
			// containerd's CRI plugin.
			for i, m := range s.Mounts {
				if m.Destination == "/dev/shm" {
					s.Mounts[i] = specs.Mount{Destination: "/dev/shm", Type: "bind", Source: "/dev/shm", Options: []string{"rbind", "rprivate"}}
				}
			}
		}
		return nil
	}
}

// withTTY gives the process a terminal.
func withTTY(on bool) specOpt {
	return func(s *specs.Spec) error {
		if on {
			s.Process.Terminal = true
			s.Process.Env = mergeEnv(s.Process.Env, []string{"TERM=xterm"})
		}
		return nil
	}
}

// withCgroupParent makes the container's cgroup under parent.
func withCgroupParent(parent, id string) specOpt {
	return func(s *specs.Spec) error {
		if parent == "" {
			return nil
		}
		if !filepath.IsAbs(parent) || filepath.Clean(parent) != parent {
			return fmt.Errorf("cgroup parent %q is not a clean absolute path", parent)
		}
		s.Linux.CgroupsPath = parent + "/" + id
		return nil
	}
}

// withImageConfig applies the image's environment, working directory, user
// (numeric uid[:gid] only) and entrypoint+cmd.
func withImageConfig(c ImageConfig) specOpt {
	return func(s *specs.Spec) error {
		s.Process.Env = mergeEnv(s.Process.Env, c.Env)
		if c.WorkingDir != "" {
			s.Process.Cwd = c.WorkingDir
		}
		s.Process.Args = append(append([]string(nil), c.Entrypoint...), c.Cmd...)
		if c.User != "" {
			var uid, gid uint32
			if _, err := fmt.Sscanf(strings.Replace(c.User, ":", " ", 1)+" 0", "%d %d", &uid, &gid); err != nil {
				return fmt.Errorf("image user %q: only numeric uid[:gid] is supported", c.User)
			}
			s.Process.User = specs.User{UID: uid, GID: gid}
		}
		return nil
	}
}

// withCommand applies a pod-style command and args over the image's
// entrypoint and cmd: command replaces both, args replaces cmd.
func withCommand(c ImageConfig, command, args []string) specOpt {
	return func(s *specs.Spec) error {
		switch {
		case len(command) > 0:
			s.Process.Args = append(append([]string(nil), command...), args...)
		case len(args) > 0:
			s.Process.Args = append(append([]string(nil), c.Entrypoint...), args...)
		}
		if len(s.Process.Args) == 0 {
			return fmt.Errorf("no command: the image has no entrypoint or cmd and the container gives none")
		}
		return nil
	}
}

func withEnv(env []string) specOpt {
	return func(s *specs.Spec) error {
		s.Process.Env = mergeEnv(s.Process.Env, env)
		return nil
	}
}

func withWorkingDir(dir string) specOpt {
	return func(s *specs.Spec) error {
		if dir != "" {
			if !filepath.IsAbs(dir) {
				return fmt.Errorf("workingDir %q is not an absolute path", dir)
			}
			s.Process.Cwd = dir
		}
		return nil
	}
}

func withMounts(ms []Mount) specOpt {
	return func(s *specs.Spec) error {
		for _, m := range ms {
			if !filepath.IsAbs(m.HostPath) || !filepath.IsAbs(m.ContainerPath) {
				return fmt.Errorf("mount %s:%s: both paths must be absolute", m.HostPath, m.ContainerPath)
			}
			opts := []string{"rbind", "rprivate"}
			switch m.Propagation {
			case "":
			case PropagationHostToContainer, PropagationBidirectional:
				mp, shared, slave, err := mountinfo.Propagation(m.HostPath)
				if err != nil {
					return fmt.Errorf("mount %s: %w", m.ContainerPath, err)
				}
				if m.Propagation == PropagationBidirectional {
					if !shared {
						return fmt.Errorf("mount %s: Bidirectional propagation needs %s on a shared mount, but %s is not shared (make it so with mount --make-rshared %s)", m.ContainerPath, m.HostPath, mp, mp)
					}
					opts[1] = "rshared"
					s.Linux.RootfsPropagation = "rshared"
					break
				}
				if !shared && !slave {
					return fmt.Errorf("mount %s: HostToContainer propagation needs %s on a shared or slave mount, but %s is private (make it shared with mount --make-rshared %s)", m.ContainerPath, m.HostPath, mp, mp)
				}
				opts[1] = "rslave"
				if s.Linux.RootfsPropagation != "rshared" {
					s.Linux.RootfsPropagation = "rslave"
				}
			default:
				return fmt.Errorf("mount %s: unknown propagation %q", m.ContainerPath, m.Propagation)
			}
			if m.ReadOnly {
				opts = append(opts, "ro")
			}
			s.Mounts = append(s.Mounts, specs.Mount{Destination: m.ContainerPath, Type: "bind", Source: m.HostPath, Options: opts})
		}
		return nil
	}
}

func withMemoryLimit(bytes int64) specOpt {
	return func(s *specs.Spec) error {
		if bytes > 0 {
			s.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &bytes}
		}
		return nil
	}
}

// withCPULimit sets a CFS quota of millis/1000 cores per 100 ms period.
func withCPULimit(millis int64) specOpt {
	return func(s *specs.Spec) error {
		if millis > 0 {
			period := uint64(100000)
			quota := millis * 100
			s.Linux.Resources.CPU = &specs.LinuxCPU{Period: &period, Quota: &quota}
		}
		return nil
	}
}

func withHostNetwork(on bool) specOpt {
	return func(s *specs.Spec) error {
		if !on {
			return nil
		}
		var ns []specs.LinuxNamespace
		for _, n := range s.Linux.Namespaces {
			if n.Type != specs.NetworkNamespace {
				ns = append(ns, n)
			}
		}
		s.Linux.Namespaces = ns
	files:
		for _, f := range []string{"/etc/hosts", "/etc/resolv.conf"} {
			for _, m := range s.Mounts {
				if m.Destination == f {
					continue files // the pod's own (a resolv.conf of its dnsPolicy)
				}
			}
			s.Mounts = append(s.Mounts, specs.Mount{Destination: f, Type: "bind", Source: f, Options: []string{"rbind", "ro"}})
		}
		return nil
	}
}

func withPrivileged(on bool) specOpt {
	return func(s *specs.Spec) error {
		if !on {
			return nil
		}
		caps := append([]string(nil), currentCaps()...)
		s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: caps, Permitted: caps, Effective: caps}
		s.Linux.MaskedPaths, s.Linux.ReadonlyPaths = nil, nil
		s.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
		for i, m := range s.Mounts {
			if m.Destination == "/sys" {
				s.Mounts[i].Options = []string{"nosuid", "noexec", "nodev"}
			}
		}
		return nil
	}
}

// withCapabilities adds and drops capabilities from the default set, as a
// pod's securityContext.capabilities does.
func withCapabilities(add, drop []string) specOpt {
	norm := func(c string) string {
		c = strings.ToUpper(c)
		if c != "ALL" && !strings.HasPrefix(c, "CAP_") {
			c = "CAP_" + c
		}
		return c
	}
	return func(s *specs.Spec) error {
		if len(add) == 0 && len(drop) == 0 {
			return nil
		}
		caps := s.Process.Capabilities.Bounding
		for _, d := range drop {
			d = norm(d)
			if d == "ALL" {
				caps = nil
				continue
			}
			caps = slices.DeleteFunc(slices.Clone(caps), func(c string) bool { return c == d })
		}
		for _, a := range add {
			a = norm(a)
			if a == "ALL" {
				caps = append([]string(nil), currentCaps()...)
				continue
			}
			if !slices.Contains(allCaps, a) {
				return fmt.Errorf("unknown capability %q", a)
			}
			if !slices.Contains(caps, a) {
				caps = append(caps, a)
			}
		}
		caps = slices.Clip(caps)
		s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: caps, Permitted: caps, Effective: caps}
		return nil
	}
}

func withUser(u *User) specOpt {
	return func(s *specs.Spec) error {
		if u != nil {
			s.Process.User.UID = u.UID
			if u.GID != nil {
				s.Process.User.GID = *u.GID
			}
		}
		return nil
	}
}

func withSysctls(m map[string]string) specOpt {
	return func(s *specs.Spec) error {
		if len(m) > 0 {
			s.Linux.Sysctl = maps.Clone(m)
		}
		return nil
	}
}

func withAdditionalGIDs(gids []uint32) specOpt {
	return func(s *specs.Spec) error {
		s.Process.User.AdditionalGids = append([]uint32(nil), gids...)
		return nil
	}
}

func withNetNS(path string, hostNetwork bool) specOpt {
	return func(s *specs.Spec) error {
		if path == "" || hostNetwork {
			return nil
		}
		if !filepath.IsAbs(path) {
			return fmt.Errorf("network namespace %q is not an absolute path", path)
		}
		for i, n := range s.Linux.Namespaces {
			if n.Type == specs.NetworkNamespace {
				s.Linux.Namespaces[i].Path = path
			}
		}
		return nil
	}
}

func withHostname(h string) specOpt {
	return func(s *specs.Spec) error {
		if h != "" {
			s.Hostname = h
		}
		return nil
	}
}

// ConfigError is a container the pod asks for that cannot be created as
// asked (a kubelet's CreateContainerConfigError), such as runAsNonRoot with
// an image that runs as root.
type ConfigError struct{ Msg string }

func (e *ConfigError) Error() string { return e.Msg }

// withNonRoot checks runAsNonRoot as a kubelet does: runAsUser if set must
// not be 0; else the image's user must be a numeric non-zero uid (an
// image without a user runs as root).
func withNonRoot(on bool, u *User, imageUser string) specOpt {
	return func(s *specs.Spec) error {
		switch {
		case !on:
			return nil
		case u != nil && u.UID == 0:
			return &ConfigError{"container's runAsUser breaks non-root policy: set runAsUser to a non-zero uid"}
		case u != nil:
			return nil
		}
		name, _, _ := strings.Cut(imageUser, ":")
		uid, err := strconv.ParseUint(name, 10, 32)
		switch {
		case name != "" && err != nil:
			return &ConfigError{fmt.Sprintf("container has runAsNonRoot and image has non-numeric user (%s), cannot verify user is non-root: set runAsUser", name)}
		case uid == 0:
			return &ConfigError{"container has runAsNonRoot and image will run as root: set runAsUser to a non-zero uid or use an image whose USER is one"}
		}
		return nil
	}
}

// withNoNewPrivileges sets no_new_privs when asked, as the kubelet asks
// for allowPrivilegeEscalation: false (and only then: a kubelet node lets
// setuid binaries work by default).
func withNoNewPrivileges(on bool) specOpt {
	return func(s *specs.Spec) error {
		s.Process.NoNewPrivileges = on
		return nil
	}
}

func withReadOnlyRootfs(on bool) specOpt {
	return func(s *specs.Spec) error {
		s.Root.Readonly = on
		return nil
	}
}

func withProcUnmasked(on bool) specOpt {
	return func(s *specs.Spec) error {
		if on {
			s.Linux.MaskedPaths, s.Linux.ReadonlyPaths = nil, nil
		}
		return nil
	}
}

// withSeccomp sets the container's seccomp filter; it comes after the
// capabilities, on which the default profile depends.
func withSeccomp(sc *Seccomp, privileged bool) specOpt {
	return func(s *specs.Spec) error {
		switch {
		case privileged || sc != nil && sc.Unconfined:
			s.Linux.Seccomp = nil
		case sc != nil && sc.Profile != nil:
			s.Linux.Seccomp = sc.Profile
		case sc != nil:
			return errors.New("seccomp: neither unconfined nor a profile")
		default:
			var caps []string
			if s.Process.Capabilities != nil {
				caps = s.Process.Capabilities.Bounding
			}
			s.Linux.Seccomp = seccomp.Default(caps)
		}
		return nil
	}
}

// mergeEnv appends add to base; a later NAME= replaces an earlier one.
func mergeEnv(base, add []string) []string {
	out := append([]string(nil), base...)
	for _, kv := range add {
		name, _, _ := strings.Cut(kv, "=")
		replaced := false
		for i, o := range out {
			if n, _, _ := strings.Cut(o, "="); n == name {
				out[i], replaced = kv, true
				break
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return out
}

// buildSpec composes the OCI spec of a container.
func buildSpec(namespace string, sp Spec, img ImageConfig) (*specs.Spec, error) {
	var s specs.Spec
	for _, o := range []specOpt{
		withDefaults(namespace, sp.ID),
		withNonRoot(sp.RunAsNonRoot, sp.User, img.User),
		withImageConfig(img),
		withCommand(img, sp.Command, sp.Args),
		withTTY(sp.TTY),
		withEnv(sp.Env),
		withWorkingDir(sp.WorkingDir),
		withMounts(sp.Mounts),
		withMemoryLimit(sp.MemoryLimit),
		withCPULimit(sp.CPUMillis),
		withHostNetwork(sp.HostNetwork),
		withNamespaces(sp.PIDNamespace, sp.HostIPC),
		withCgroupParent(sp.CgroupParent, sp.ID),
		withCapabilities(sp.CapAdd, sp.CapDrop),
		withUser(sp.User),
		withAdditionalGIDs(sp.AdditionalGIDs),
		withSysctls(sp.Sysctls),
		withNetNS(sp.NetNS, sp.HostNetwork),
		withHostname(sp.Hostname),
		withPrivileged(sp.Privileged),
		withNoNewPrivileges(sp.NoNewPrivileges),
		withReadOnlyRootfs(sp.ReadOnlyRootfs),
		withProcUnmasked(sp.ProcUnmasked),
		withSeccomp(sp.Seccomp, sp.Privileged),
	} {
		if err := o(&s); err != nil {
			return nil, fmt.Errorf("container %s: %w", sp.ID, err)
		}
	}
	return &s, nil
}
