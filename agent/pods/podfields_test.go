package pods_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"outpost.dev/agent/runtime/containerd"
	"outpost.dev/wire"
)

// TestPodFields runs real containers with envFrom, the downward API, an
// active deadline, shared and host namespaces and a terminal, and reads
// what the processes got from inside them.
func TestPodFields(t *testing.T) {
	e := start(t)
	img := e.images[0].Ref
	e.run()

	// output waits for container name of pod uid to print END.
	output := func(uid, name string) string {
		e.t.Helper()
		var out string
		e.waitFor(60*time.Second, uid+"/"+name+" printing END", func() bool {
			out = e.log("default", uid, name, false)
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
	sh := func(name, script string) wire.Container {
		return wire.Container{Name: name, Image: img, Command: []string{"sh", "-c", script}}
	}

	e.sub(t, "envFrom and the downward API", func(t *testing.T) {
		cm := wire.Object{Kind: wire.KindConfigMap, UID: "cm-ef", Namespace: "default", Name: "ef", Version: "1",
			ConfigMap: &wire.ConfigMap{Data: map[string]string{"GREETING": "hello", "dotted.key": "relaxed names pass", "OVERRIDE": "from-cm"}}}
		sec := wire.Object{Kind: wire.KindSecret, UID: "sec-ef", Namespace: "default", Name: "ef", Version: "1",
			Secret: &wire.Secret{Data: map[string][]byte{"PW": []byte("s3cret")}}}
		c := sh("app", `tr '\0' '\n' </proc/1/environ | sort; for f in labels annotations cpu mem name; do echo "file $f: $(cat /etc/info/$f)"; done; echo END`)
		c.MemoryBytes = 64 << 20
		c.EnvFrom = []wire.EnvFromSource{{ConfigMap: "ef"}, {Prefix: "S_", Secret: "ef"}, {ConfigMap: "absent", Optional: true}}
		c.Env = []wire.EnvVar{
			{Name: "OVERRIDE", Value: "env-wins-$(GREETING)"},
			{Name: "APP", From: &wire.EnvSource{Field: "metadata.labels['app']"}},
			{Name: "NOTE", From: &wire.EnvSource{Field: "metadata.annotations['note']"}},
			{Name: "HOSTIPS", From: &wire.EnvSource{Field: "status.hostIPs"}},
			{Name: "MEM_MI", From: &wire.EnvSource{Resource: &wire.ResourceRef{Resource: "limits.memory", Divisor: 1 << 20}}},
			{Name: "CPU_M", From: &wire.EnvSource{Resource: &wire.ResourceRef{Resource: "limits.cpu", Divisor: 1}}},
		}
		c.Mounts = []wire.VolumeMount{{Name: "info", MountPath: "/etc/info"}}
		p := wire.Pod{RestartPolicy: "Never", Containers: []wire.Container{c},
			Labels: map[string]string{"app": "web", "tier": "edge"}, Annotations: map[string]string{"note": "n1"},
			Volumes: []wire.Volume{{Name: "info", Projected: &wire.Projected{Sources: []wire.ProjectedSource{{DownwardAPI: []wire.FieldFile{
				{Path: "labels", Field: "metadata.labels"},
				{Path: "annotations", Field: "metadata.annotations"},
				{Path: "name", Field: "metadata.name"},
				{Path: "cpu", Resource: &wire.ResourceRef{Container: "app", Resource: "limits.cpu", Divisor: 1}},
				{Path: "mem", Resource: &wire.ResourceRef{Container: "app", Resource: "limits.memory", Divisor: 1 << 20}},
			}}}}}}}
		e.apply(&wire.Sync{Upserts: []wire.Object{cm, sec, podObj("uid-ef", "ef", "1", p)}})
		out := output("ef", "app")
		has(out, "GREETING=hello\n", "dotted.key=relaxed names pass\n", "S_PW=s3cret\n", "OVERRIDE=env-wins-hello\n",
			"APP=web\n", "NOTE=n1\n", "HOSTIPS=127.0.0.1\n", "MEM_MI=64\n", "CPU_M=2000\n",
			"file labels: app=\"web\"\ntier=\"edge\"\n", `file annotations: note="n1"`, "file cpu: 2000\n", "file mem: 64\n", "file name: ef\n")
		// A missing, required envFrom source keeps the container waiting.
		bad := sh("app", "echo never")
		bad.EnvFrom = []wire.EnvFromSource{{Secret: "absent"}}
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-ef-missing", "ef-missing", "1", wire.Pod{Containers: []wire.Container{bad}})}})
		s := e.waitStatus("uid-ef-missing", 60*time.Second, "CreateContainerConfigError", func(s wire.PodStatus) bool {
			return len(s.Containers) == 1 && s.Containers[0].State.Reason == "CreateContainerConfigError"
		})
		has(s.Containers[0].State.Message, `secret "absent" not found`)
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-ef"}, {Kind: wire.KindPod, UID: "uid-ef-missing"}}})
	})

	e.sub(t, "a finished pod keeps its logs and runs nothing again", func(t *testing.T) {
		// OnFailure: the first attempt fails, the second succeeds.
		p := wire.Pod{RestartPolicy: "OnFailure", Containers: []wire.Container{
			sh("app", `if [ -e /tmp/x ]; then echo second; exit 0; fi; touch /tmp/x; echo first; exit 3`)}}
		p.Containers[0].Mounts = []wire.VolumeMount{{Name: "tmp", MountPath: "/tmp"}}
		p.Volumes = []wire.Volume{{Name: "tmp", EmptyDir: &wire.EmptyDir{}}}
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-done", "done", "1", p)}})
		e.waitStatus("uid-done", 90*time.Second, "Succeeded", func(s wire.PodStatus) bool { return s.Phase == "Succeeded" })
		// The relay now sends the pod with its final phase.
		p.Finished = "Succeeded"
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-done", "done", "2", p)}})
		e.waitFor(10*time.Second, "both attempts' logs", func() bool {
			return strings.Contains(e.log("default", "done", "app", false), "second") && strings.Contains(e.log("default", "done", "app", true), "first")
		})
		if n := len(e.podContainers("uid-done")); n != 2 {
			t.Errorf("a finished pod has %d containers, want its 2 attempts", n)
		}
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-done"}}})
		e.waitFor(60*time.Second, "its logs removed with it", func() bool { return e.log("default", "done", "app", false) == "" })
	})

	e.sub(t, "pod-level resources", func(t *testing.T) {
		// No container limit: the pod's bounds them all, and the downward
		// API reads it.
		hog := sh("hog", `echo "limit=$MEM_MI"; echo END; tail /dev/zero`)
		hog.Env = []wire.EnvVar{{Name: "MEM_MI", From: &wire.EnvSource{Resource: &wire.ResourceRef{Resource: "limits.memory", Divisor: 1 << 20}}}}
		p := wire.Pod{RestartPolicy: "Never", Resources: &wire.PodResources{MemoryBytes: 32 << 20, CPUMillis: 500},
			Containers: []wire.Container{hog}}
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-podres", "podres", "1", p)}})
		has(output("podres", "hog"), "limit=32\n")
		s := e.waitStatus("uid-podres", 60*time.Second, "OOMKilled", func(s wire.PodStatus) bool {
			return len(s.Containers) == 1 && s.Containers[0].State.Kind == wire.StateTerminated
		})
		if st := s.Containers[0].State; st.Reason != "OOMKilled" {
			t.Errorf("the hog ended %+v, want OOMKilled by the pod's memory limit", st)
		}
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-podres"}}})
		e.waitFor(60*time.Second, "the pod cgroup removed", func() bool {
			_, err1 := os.Stat("/sys/fs/cgroup/memory/outpost/pod-uid-podres")
			_, err2 := os.Stat("/sys/fs/cgroup/outpost/pod-uid-podres")
			return os.IsNotExist(err1) && os.IsNotExist(err2)
		})
	})

	e.sub(t, "activeDeadlineSeconds", func(t *testing.T) {
		p := wire.Pod{ActiveDeadlineSeconds: 3, Containers: []wire.Container{sh("app", "trap 'exit 0' TERM; while true; do sleep 0.2; done")}}
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-deadline", "deadline", "1", p)}})
		e.waitStatus("uid-deadline", 60*time.Second, "Running", running)
		s := e.waitStatus("uid-deadline", 60*time.Second, "Failed/DeadlineExceeded", func(s wire.PodStatus) bool {
			return s.Phase == "Failed" && s.Reason == "DeadlineExceeded" && len(s.Containers) == 1 && s.Containers[0].State.Kind == wire.StateTerminated
		})
		if s.Containers[0].RestartCount != 0 {
			t.Errorf("restarted after the deadline: %+v", s.Containers[0])
		}
		if n := runningTasks(e.tasks(), "app-"); n != 0 {
			t.Errorf("%d tasks still running after the deadline", n)
		}
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-deadline"}}})
	})

	e.sub(t, "shareProcessNamespace", func(t *testing.T) {
		p := wire.Pod{Namespaces: &wire.PodNamespaces{PID: wire.PIDPod}, RestartPolicy: "Never", Containers: []wire.Container{
			sh("sleeper", "exec sleep 3601"),
			sh("looker", `for i in $(seq 50); do ps | grep -q '[s]leep 3601' && break; sleep 0.2; done; ps; echo "pid1=$(tr '\0' ' ' </proc/1/cmdline)"; echo END`),
		}}
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-sharepid", "sharepid", "1", p)}})
		out := output("sharepid", "looker")
		has(out, "sleep 3601", "pid1=", "pod-pid-namespace uid-sharepid")
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-sharepid"}}})
		e.waitFor(60*time.Second, "the pod's containers removed", func() bool { return len(e.podContainers("uid-sharepid")) == 0 })
		e.waitFor(10*time.Second, "the PID namespace holder gone", func() bool {
			return !strings.Contains(psAll(t), "pod-pid-namespace uid-sharepid")
		})
	})

	e.sub(t, "hostPID and hostIPC", func(t *testing.T) {
		hostPID, _ := os.Readlink("/proc/self/ns/pid")
		hostIPC, _ := os.Readlink("/proc/self/ns/ipc")
		script := `echo "pid=$(readlink /proc/self/ns/pid) ipc=$(readlink /proc/self/ns/ipc)"; echo END`
		e.apply(&wire.Sync{Upserts: []wire.Object{
			podObj("uid-hostns", "hostns", "1", wire.Pod{Namespaces: &wire.PodNamespaces{PID: wire.PIDHost, HostIPC: true}, RestartPolicy: "Never", Containers: []wire.Container{sh("app", script)}}),
			podObj("uid-ownns", "ownns", "1", wire.Pod{RestartPolicy: "Never", Containers: []wire.Container{sh("app", script)}}),
		}})
		has(output("hostns", "app"), "pid="+hostPID+" ipc="+hostIPC)
		own := output("ownns", "app")
		if strings.Contains(own, hostPID) || strings.Contains(own, hostIPC) {
			t.Errorf("a pod without hostPID/hostIPC shares the host's namespaces: %q", own)
		}
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-hostns"}, {Kind: wire.KindPod, UID: "uid-ownns"}}})
	})

	e.sub(t, "stdin and tty", func(t *testing.T) {
		c := sh("app", `tty; test -t 0 && echo stdin-is-a-tty; echo TERM=$TERM; read line; echo "got $line"; echo END; exec sleep 3600`)
		c.Stdin, c.StdinOnce, c.TTY = true, true, true
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-tty", "tty", "1", wire.Pod{Containers: []wire.Container{c}})}})
		e.waitStatus("uid-tty", 60*time.Second, "Running", running)
		e.waitFor(20*time.Second, "the tty lines", func() bool { return strings.Contains(e.log("default", "tty", "app", false), "TERM=xterm") })
		// Still running, waiting on its terminal for input: write to the
		// container's stdin FIFO as an attach would.
		cs, err := e.rt.ListLabeled(context.Background(), "dev.outpost.pod.uid", "uid-tty")
		if err != nil || len(cs) != 1 {
			t.Fatalf("containers: %v %v", cs, err)
		}
		fifo := cs[0].Labels[containerd.LabelStdin]
		if fifo == "" || cs[0].Labels[containerd.LabelTTY] != "true" {
			t.Fatalf("labels %v: no stdin FIFO or tty", cs[0].Labels)
		}
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString("hello-stdin\n"); err != nil {
			t.Fatal(err)
		}
		out := output("tty", "app")
		f.Close()
		has(out, "/dev/pts/", "stdin-is-a-tty", "got hello-stdin")
		if s, _ := e.rec.latest("uid-tty"); !running(s) {
			t.Errorf("not running after its input: %+v", s)
		}
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-tty"}}})
		e.waitFor(60*time.Second, "the pod's containers removed", func() bool { return len(e.podContainers("uid-tty")) == 0 })
		if _, err := os.Stat(fifo); !os.IsNotExist(err) {
			t.Errorf("stdin FIFO %s left behind: %v", fifo, err)
		}
	})

	e.sub(t, "stdin without a tty", func(t *testing.T) {
		c := sh("app", `echo ready; echo to-stderr >&2; while read line; do echo "got $line"; done; echo "stdin closed"; echo END; exec sleep 3600`)
		c.Stdin = true
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-stdin", "stdin", "1", wire.Pod{Containers: []wire.Container{c}})}})
		e.waitStatus("uid-stdin", 60*time.Second, "Running", running)
		e.waitFor(20*time.Second, "ready and stderr in the log", func() bool {
			l := e.log("default", "stdin", "app", false)
			return strings.Contains(l, "ready") && strings.Contains(l, "to-stderr")
		})
		cs, err := e.rt.ListLabeled(context.Background(), "dev.outpost.pod.uid", "uid-stdin")
		if err != nil || len(cs) != 1 {
			t.Fatalf("containers: %v %v", cs, err)
		}
		fifo := cs[0].Labels[containerd.LabelStdin]
		// Two attaches, one after the other: stdin stays open between them.
		for _, word := range []string{"one", "two"} {
			f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString(word + "\n"); err != nil {
				t.Fatal(err)
			}
			f.Close()
			e.waitFor(20*time.Second, "got "+word, func() bool { return strings.Contains(e.log("default", "stdin", "app", false), "got "+word) })
		}
		if l := e.log("default", "stdin", "app", false); strings.Contains(l, "stdin closed") {
			t.Errorf("stdin closed after an attach ended: %q", l)
		}
		// The log is CRI-formatted by the logger the agent started.
		p, _, err := e.recon.LogPath(context.Background(), "default", "stdin", "app", false)
		if err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(p); err != nil || !strings.Contains(string(b), " stderr F to-stderr\n") {
			t.Errorf("log file %q, %v: no CRI stderr record", b, err)
		}
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-stdin"}}})
		e.waitFor(60*time.Second, "the pod's containers removed", func() bool { return len(e.podContainers("uid-stdin")) == 0 })
		e.waitFor(10*time.Second, "its logger gone", func() bool { return !strings.Contains(psAll(t), p) })
	})
}

// psAll lists every process's command line, one a line.
func psAll(t *testing.T) string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, en := range ents {
		if c, err := os.ReadFile("/proc/" + en.Name() + "/cmdline"); err == nil && len(c) > 0 {
			b.WriteString(strings.ReplaceAll(string(c), "\x00", " ") + "\n")
		}
	}
	return b.String()
}
