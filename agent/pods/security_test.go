package pods_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"outpost.dev/wire"
)

// TestSecurityContext runs real containers with the securityContext fields
// a restricted-profile chart sets and reads what the process got from
// inside it.
func TestSecurityContext(t *testing.T) {
	e := start(t)
	img := e.images[0].Ref
	if err := os.MkdirAll(filepath.Join(e.cfg.StateDir, "seccomp", "profiles"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.cfg.StateDir, "seccomp", "profiles", "no-mkdir.json"), []byte(`{"defaultAction":"SCMP_ACT_ALLOW",
		"syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	e.cfg.AllowedUnsafeSysctls = []string{"net.core.somaxconn"}
	e.run()

	// once runs script in a pod of its own (restartPolicy Never) and
	// returns its output once it printed "END".
	once := func(uid string, p wire.Pod, script string) string {
		e.t.Helper()
		p.RestartPolicy = "Never"
		p.Containers[0].Name, p.Containers[0].Image = "app", img
		p.Containers[0].Command = []string{"sh", "-c", script + "; echo END"}
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj(uid, uid, "1", p)}})
		var out string
		e.waitFor(60*time.Second, uid+" printing END", func() bool {
			out = e.log("default", uid, "app", false)
			return strings.Contains(out, "END")
		})
		return out
	}
	has := func(out string, want ...string) {
		e.t.Helper()
		for _, w := range want {
			if !strings.Contains(out, w) {
				e.t.Errorf("output %q lacks %q", out, w)
			}
		}
	}
	waiting := func(uid, reason string, want ...string) {
		e.t.Helper()
		s := e.waitStatus(uid, 60*time.Second, reason, func(s wire.PodStatus) bool {
			return len(s.Containers) == 1 && s.Containers[0].State.Reason == reason
		})
		has(s.Containers[0].State.Message, want...)
	}
	one := func(c wire.Container) wire.Pod { return wire.Pod{Containers: []wire.Container{c}} }

	// unshare(CLONE_NEWUSER) needs no capability: only the default
	// profile stops it.
	const seccompProbe = "grep '^Seccomp:' /proc/self/status; if unshare -U true; then echo unshare=ok; else echo unshare=blocked; fi; " +
		"if mkdir /tmp/d; then echo mkdir=ok; else echo mkdir=blocked; fi"
	e.sub(t, "seccomp RuntimeDefault by default", func(t *testing.T) {
		has(once("sc-default", one(wire.Container{}), seccompProbe), "Seccomp:\t2\n", "unshare=blocked", "mkdir=ok")
	})
	e.sub(t, "seccomp Unconfined", func(t *testing.T) {
		out := once("sc-unconfined", one(wire.Container{Seccomp: &wire.SeccompProfile{Type: wire.SeccompUnconfined}}), seccompProbe)
		has(out, "Seccomp:\t0\n", "unshare=ok", "mkdir=ok")
	})
	e.sub(t, "seccomp Localhost", func(t *testing.T) {
		out := once("sc-local", one(wire.Container{Seccomp: &wire.SeccompProfile{Type: wire.SeccompLocalhost, LocalhostProfile: "profiles/no-mkdir.json"}}), seccompProbe)
		has(out, "Seccomp:\t2\n", "unshare=ok", "mkdir=blocked")
	})
	e.sub(t, "seccomp Localhost missing or outside", func(t *testing.T) {
		for uid, name := range map[string]string{"sc-missing": "profiles/missing.json", "sc-escape": "../seccomp/profiles/no-mkdir.json"} {
			p := one(wire.Container{Name: "app", Image: img, Command: []string{"true"},
				Seccomp: &wire.SeccompProfile{Type: wire.SeccompLocalhost, LocalhostProfile: name}})
			e.apply(&wire.Sync{Upserts: []wire.Object{podObj(uid, uid, "1", p)}})
			want := []string{"securityContext.seccompProfile.localhostProfile", name}
			if uid == "sc-missing" {
				want = append(want, "not found")
			}
			waiting(uid, "CreateContainerConfigError", want...)
			if ids := e.podContainers(uid); len(ids) != 0 {
				t.Errorf("%s: containers created without their profile: %v", uid, ids)
			}
		}
	})
	e.sub(t, "allowPrivilegeEscalation", func(t *testing.T) {
		const probe = "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status"
		has(once("ape-default", one(wire.Container{}), probe), "NoNewPrivs:\t0\n")
		has(once("ape-false", one(wire.Container{NoNewPrivileges: true}), probe), "NoNewPrivs:\t1\n", "Seccomp:\t2\n")
		// Without no_new_privs runc installs the filter before it drops
		// privileges: a non-root process is filtered too.
		uid := int64(1000)
		has(once("ape-nonroot", one(wire.Container{RunAsUser: &uid}), probe+"; id -u"), "NoNewPrivs:\t0\n", "Seccomp:\t2\n", "1000\n")
	})
	e.sub(t, "readOnlyRootFilesystem", func(t *testing.T) {
		const probe = "if touch /x; then echo touch=ok; else echo touch=failed; fi"
		has(once("ro-root", one(wire.Container{ReadOnlyRootFilesystem: true}), probe), "touch=failed", "Read-only file system")
		has(once("rw-root", one(wire.Container{}), probe), "touch=ok")
	})
	e.sub(t, "procMount", func(t *testing.T) {
		// /proc/timer_list is masked (a bind of /dev/null, empty) unless
		// Unmasked; /proc/sys is read-only unless Unmasked.
		const probe = "if [ -n \"$(head -c 1 /proc/timer_list)\" ]; then echo timer_list=visible; else echo timer_list=masked; fi; " +
			"if grep -q ' /proc/sys proc ro' /proc/self/mounts; then echo sys=ro; else echo sys=rw; fi"
		has(once("proc-default", one(wire.Container{}), probe), "timer_list=masked", "sys=ro")
		has(once("proc-unmasked", one(wire.Container{ProcUnmasked: true}), probe), "timer_list=visible", "sys=rw")
	})
	e.sub(t, "runAsNonRoot", func(t *testing.T) {
		// The test image sets no USER: it runs as root.
		p := one(wire.Container{Name: "app", Image: img, Command: []string{"true"}, RunAsNonRoot: true})
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("nonroot-image", "nonroot-image", "1", p)}})
		waiting("nonroot-image", "CreateContainerConfigError", "runAsNonRoot and image will run as root")
		uid := int64(1000)
		has(once("nonroot-user", one(wire.Container{RunAsNonRoot: true, RunAsUser: &uid}), "id -u"), "1000\n")
	})
	e.sub(t, "supplementalGroups and fsGroup", func(t *testing.T) {
		cm := wire.Object{Kind: wire.KindConfigMap, UID: "cm-fsg", Namespace: "default", Name: "fsg", Version: "1",
			ConfigMap: &wire.ConfigMap{Data: map[string]string{"k": "v"}}}
		e.apply(&wire.Sync{Upserts: []wire.Object{cm}})
		uid, fsg := int64(1000), int64(2000)
		p := wire.Pod{SupplementalGroups: []int64{3000}, FSGroup: &fsg,
			Volumes: []wire.Volume{{Name: "cfg", ConfigMap: &wire.FilesVolume{Name: "fsg", DefaultMode: 0o600}}, {Name: "scratch", EmptyDir: &wire.EmptyDir{}}},
			Containers: []wire.Container{{RunAsUser: &uid,
				Mounts: []wire.VolumeMount{{Name: "cfg", MountPath: "/cfg"}, {Name: "scratch", MountPath: "/scratch"}}}}}
		// Later passes (every second here) keep what the first gave.
		out := once("fsgroup", p, "id; stat -c 'cfg %g %a' /cfg/..data/k; cat /cfg/k && echo; sleep 2.5; stat -c 'scratch %g %a' /scratch; "+
			"touch /scratch/new && stat -c 'new %g' /scratch/new")
		// The user's own group (0: the image has none) stays primary.
		has(out, "uid=1000 gid=0", "groups=", "2000", "3000", "cfg 2000 640\n", "v\n", "scratch 2000 2777\n", "new 2000\n")
	})
	e.sub(t, "sysctls", func(t *testing.T) {
		p := one(wire.Container{})
		p.Sysctls = []wire.Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: "80"}, {Name: "net/ipv4/ping_group_range", Value: "0 1000"},
			{Name: "kernel.shm_rmid_forced", Value: "1"}, {Name: "net.core.somaxconn", Value: "777"}}
		out := once("sysctls", p, "cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/net/ipv4/ping_group_range "+
			"/proc/sys/kernel/shm_rmid_forced /proc/sys/net/core/somaxconn")
		has(out, "80\n", "0\t1000\n", "1\n", "777\n")
		for uid, pod := range map[string]wire.Pod{
			"sysctl-unsafe":   {Sysctls: []wire.Sysctl{{Name: "net.core.rmem_max", Value: "1"}}},
			"sysctl-hostnet":  {HostNetwork: true, Sysctls: []wire.Sysctl{{Name: "net.ipv4.tcp_syncookies", Value: "1"}}},
			"sysctl-nodewide": {Sysctls: []wire.Sysctl{{Name: "vm.swappiness", Value: "1"}}},
		} {
			pod.Containers = []wire.Container{{Name: "app", Image: img, Command: []string{"true"}}}
			e.apply(&wire.Sync{Upserts: []wire.Object{podObj(uid, uid, "1", pod)}})
			s := e.waitStatus(uid, 30*time.Second, "Failed", func(s wire.PodStatus) bool { return s.Phase == "Failed" })
			if s.Reason != "SysctlForbidden" || !strings.Contains(s.Message, "forbidden sysctl") {
				t.Errorf("%s: %s %q, want SysctlForbidden", uid, s.Reason, s.Message)
			}
			if ids := e.podContainers(uid); len(ids) != 0 {
				t.Errorf("%s: containers created: %v", uid, ids)
			}
		}
	})
}
