package pods_test

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"outpost.dev/agent/mountinfo"
	"outpost.dev/wire"
)

// TestSubPathEscapeContainers is the subPath attack with real containers:
// an init container plants symlinks in an emptyDir (to /, climbing out
// with .., and a symlinked parent directory), and containers of the same
// pod mount them back with subPath to read a file that exists only on the
// host. None of them may start; each waits with CreateContainerConfigError
// naming its subPath, and the host file is never seen. Benign subPaths
// (a subdirectory, a symlink that stays inside, one ConfigMap key) work.
func TestSubPathEscapeContainers(t *testing.T) {
	e := start(t)
	e.run()
	img := e.images[0].Ref

	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	secret := "HOST-ONLY-" + hex.EncodeToString(rnd[:])
	marker, err := os.CreateTemp("/", "outpost-subpath-marker-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(marker.Name()) })
	if _, err := marker.WriteString(secret); err != nil {
		t.Fatal(err)
	}
	marker.Close()
	name := filepath.Base(marker.Name())

	reader := func(cname, sub, mountPath, read string) wire.Container {
		return wire.Container{Name: cname, Image: img,
			Command: []string{"sh", "-c", "cat " + read + "; while true; do sleep 1; done"},
			Mounts:  []wire.VolumeMount{{Name: "data", MountPath: mountPath, SubPath: sub}}}
	}
	cm := wire.Object{Kind: wire.KindConfigMap, UID: "cm-subpath", Namespace: "default", Name: "conf", Version: "1",
		ConfigMap: &wire.ConfigMap{Data: map[string]string{"greeting": "hello-subpath", "other": "x"}}}
	p := wire.Pod{
		Volumes: []wire.Volume{{Name: "data", EmptyDir: &wire.EmptyDir{}}, {Name: "cfg", ConfigMap: &wire.FilesVolume{Name: "conf"}}},
		InitContainers: []wire.Container{{Name: "plant", Image: img, Mounts: []wire.VolumeMount{{Name: "data", MountPath: "/data"}},
			Command: []string{"sh", "-c", "set -e; ln -s / /data/escape; ln -s ../../../../../../../../../.. /data/up; " +
				"mkdir /data/parent-real; ln -s / /data/parent; mkdir /data/real; echo from-init > /data/real/note; ln -s real /data/inside"}}},
		Containers: []wire.Container{
			reader("abs", "escape", "/host", "/host/"+name),
			reader("rel", "up", "/host", "/host/"+name),
			reader("parent", "parent/"+name, "/m", "/m"),
			{Name: "ok", Image: img,
				Command: []string{"sh", "-c", "echo note=$(cat /work/note) inside=$(cat /inside/note) greeting=$(cat /etc/greeting); " +
					"echo written > /work/by-ok; while true; do sleep 1; done"},
				Mounts: []wire.VolumeMount{{Name: "data", MountPath: "/work", SubPath: "real"}, {Name: "data", MountPath: "/inside", SubPath: "inside"},
					{Name: "cfg", MountPath: "/etc/greeting", SubPath: "greeting", ReadOnly: true}}},
		},
	}
	e.apply(&wire.Sync{Upserts: []wire.Object{cm, podObj("uid-subpath", "subpath", "1", p)}})

	refused := map[string]string{"abs": `subPath "escape"`, "rel": `subPath "up"`, "parent": `subPath "parent/` + name + `"`}
	s := e.waitStatus("uid-subpath", 120*time.Second, "ok running, the others refused", func(s wire.PodStatus) bool {
		if len(s.Containers) != 4 {
			return false
		}
		for _, c := range s.Containers {
			if _, bad := refused[c.Name]; bad && c.ContainerID != "" {
				t.Fatalf("container %s was created with subPath %s: %+v", c.Name, refused[c.Name], c)
			}
			if c.Name == "ok" && c.State.Kind != wire.StateRunning {
				return false
			}
			if _, bad := refused[c.Name]; bad && c.State.Reason != "CreateContainerConfigError" {
				return false
			}
		}
		return true
	})
	for _, c := range s.Containers {
		want, bad := refused[c.Name]
		if !bad {
			continue
		}
		t.Logf("%s: %s: %s", c.Name, c.State.Reason, c.State.Message)
		if c.State.Kind != wire.StateWaiting || !strings.Contains(c.State.Message, want) || !strings.Contains(c.State.Message, "leads out of the volume") {
			t.Errorf("%s: state %+v, want waiting with a message naming %s", c.Name, c.State, want)
		}
		if c.ContainerID != "" {
			t.Errorf("%s was created (%s)", c.Name, c.ContainerID)
		}
	}
	for _, cd := range s.Conditions {
		if (cd.Type == "Ready" || cd.Type == "ContainersReady") && cd.Status != "False" {
			t.Errorf("condition %s is %s with containers refused", cd.Type, cd.Status)
		}
	}
	e.waitFor(20*time.Second, "the benign subPaths read in the ok container", func() bool {
		return strings.Contains(e.log("default", "subpath", "ok", false), "note=from-init inside=from-init greeting=hello-subpath")
	})
	// Containerd holds no container of the refused ones.
	cs, err := e.rt.ListLabeled(t.Context(), "dev.outpost.pod.uid", "uid-subpath")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if _, bad := refused[c.Labels["dev.outpost.container.name"]]; bad {
			t.Errorf("containerd holds %s of a refused container", c.ID)
		}
	}
	// Nothing mounted for the pod shows the host's file, and what the ok
	// container wrote landed in the volume.
	podDir := filepath.Join(e.cfg.StateDir, "pods", "uid-subpath")
	mounts := mountinfo.Under(podDir)
	for _, m := range mounts {
		if b, err := os.ReadFile(filepath.Join(m, name)); err == nil || strings.Contains(string(b), secret) {
			t.Errorf("%s shows the host file", m)
		}
		if b, _ := os.ReadFile(m); strings.Contains(string(b), secret) {
			t.Errorf("%s is the host file", m)
		}
	}
	for _, c := range []string{"plant", "ok", "abs", "rel", "parent"} {
		if strings.Contains(e.log("default", "subpath", c, false), secret) {
			t.Errorf("container %s read the host file", c)
		}
	}
	if b, err := os.ReadFile(filepath.Join(podDir, "volumes", "data", "real", "by-ok")); err != nil || string(b) != "written\n" {
		t.Errorf("the ok container's write through its subPath: %q, %v", b, err)
	}
	var subMounts int
	for _, m := range mounts {
		if strings.Contains(m, "/volume-subpaths/") {
			subMounts++
		}
	}
	if subMounts != 3 {
		t.Errorf("%d mounts under volume-subpaths, want the ok container's 3: %v", subMounts, mounts)
	}

	// The pod goes: its containers, its binds, its directory.
	e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-subpath"}}})
	e.waitFor(60*time.Second, "the pod's directory removed", func() bool {
		_, err := os.Stat(podDir)
		return os.IsNotExist(err)
	})
	if left := mountinfo.Under(podDir); len(left) > 0 {
		t.Errorf("still mounted after the pod went: %v", left)
	}
}

// TestSubPathSwapContainers races the check: one container keeps swapping
// its emptyDir's "swap" between a symlink to a directory inside and one
// to /, while another, mounting "swap" with subPath, is restarted over
// and over (it exits at once unless it sees the host's file, in which
// case it stays up). Each start is refused or binds the directory inside;
// none sees the host.
func TestSubPathSwapContainers(t *testing.T) {
	e := start(t)
	e.run()
	img := e.images[0].Ref
	marker, err := os.CreateTemp("/", "outpost-subpath-swap-")
	if err != nil {
		t.Fatal(err)
	}
	marker.Close()
	t.Cleanup(func() { os.Remove(marker.Name()) })
	name := filepath.Base(marker.Name())
	p := wire.Pod{
		Volumes: []wire.Volume{{Name: "data", EmptyDir: &wire.EmptyDir{}}},
		InitContainers: []wire.Container{{Name: "prepare", Image: img, Mounts: []wire.VolumeMount{{Name: "data", MountPath: "/data"}},
			Command: []string{"sh", "-c", "mkdir -p /data/real && ln -s real /data/swap"}}},
		Containers: []wire.Container{
			{Name: "swapper", Image: img, Mounts: []wire.VolumeMount{{Name: "data", MountPath: "/data"}},
				Command: []string{"sh", "-c", "while true; do ln -s / /data/a; mv -fT /data/a /data/swap; ln -s real /data/b; mv -fT /data/b /data/swap; done"}},
			{Name: "victim", Image: img, Mounts: []wire.VolumeMount{{Name: "data", MountPath: "/s", SubPath: "swap"}},
				Command: []string{"sh", "-c", "if [ -e /s/" + name + " ]; then echo LEAK; while true; do sleep 1; done; fi; echo clean; exit 1"}},
		},
	}
	e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-swap", "swap", "1", p)}})
	refusals := 0
	var last wire.ContainerState
	e.waitStatus("uid-swap", 180*time.Second, "victim restarted 3 times and refused at least once", func(s wire.PodStatus) bool {
		for _, c := range s.Containers {
			if c.Name != "victim" {
				continue
			}
			if c.State.Kind == wire.StateRunning && strings.Contains(e.log("default", "swap", "victim", false), "LEAK") {
				t.Fatalf("the victim sees the host's %s", marker.Name())
			}
			if c.State.Reason == "CreateContainerConfigError" && c.State != last {
				if !strings.Contains(c.State.Message, `subPath "swap" of volume data leads out of the volume`) {
					t.Fatalf("refused for another reason: %s", c.State.Message)
				}
				refusals++
			}
			last = c.State
			return c.RestartCount >= 3 && refusals > 0
		}
		return false
	})
	for _, prev := range []bool{false, true} {
		if l := e.log("default", "swap", "victim", prev); strings.Contains(l, "LEAK") || !strings.Contains(l, "clean") {
			t.Errorf("victim's log (previous %v): %q", prev, l)
		}
	}
	t.Logf("refused %d times", refusals)
}
