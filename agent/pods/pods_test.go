package pods_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"outpost.dev/agent/config"
	"outpost.dev/agent/crilog"
	"outpost.dev/agent/outbox"
	"outpost.dev/agent/pods"
	"outpost.dev/agent/runtime/containerd"
	"outpost.dev/agent/store"
	"outpost.dev/test/harness"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

// TestMain lets the test binary serve as the containers' binary logger,
// as outpost-agent does ("logger PATH max-size N …", fds 3–5 from the shim).
func TestMain(m *testing.M) {
	args := os.Args[1:]
	if pods.IsPauseCall(args) {
		pods.RunPause()
		os.Exit(0)
	}
	if os.Getenv("CONTAINER_ID") != "" && len(args)%2 == 0 {
		var path string
		for i := 0; i < len(args); i += 2 {
			if args[i] == "logger" {
				path = args[i+1]
			}
		}
		if path != "" {
			if err := crilog.Run(path, 1<<20, 2); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			os.Exit(0)
		}
	}
	os.Exit(m.Run())
}

// recorder forwards to the real outbox and keeps every status in order.
type recorder struct {
	ob *outbox.Outbox
	mu sync.Mutex
	ps []wire.PodStatus
	ns []wire.NodeStatus
	// onPod, if set, sees every pod status as it is appended, under mu.
	onPod func(wire.PodStatus)
}

func (r *recorder) Append(key string, t wire.Type, body wire.Body) (uint64, error) {
	r.mu.Lock()
	switch b := body.(type) {
	case *wire.PodStatus:
		r.ps = append(r.ps, *b)
		if r.onPod != nil {
			r.onPod(*b)
		}
	case *wire.NodeStatus:
		r.ns = append(r.ns, *b)
	}
	r.mu.Unlock()
	return r.ob.Append(key, t, body)
}

// latest is the last status of pod uid.
func (r *recorder) latest(uid string) (wire.PodStatus, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.ps) - 1; i >= 0; i-- {
		if r.ps[i].UID == uid {
			return r.ps[i], true
		}
	}
	return wire.PodStatus{}, false
}

func (r *recorder) history(uid string) []wire.PodStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []wire.PodStatus
	for _, s := range r.ps {
		if s.UID == uid {
			out = append(out, s)
		}
	}
	return out
}

type env struct {
	t       testing.TB
	ctrd    *harness.Containerd
	reg     *harness.Registry
	images  []harness.BusyboxImage
	st      *store.Store
	rec     *recorder
	dir     string
	rt      *containerd.Runtime
	cfg     pods.Config
	cancel  context.CancelFunc
	done    chan struct{}
	changes chan struct{}
	recon   *pods.Reconciler
}

func start(t testing.TB) *env {
	t.Helper()
	tr := harness.StartTestRuntime(t, "pods-", harness.RegistryOptions{})
	ctx := t.Context()
	reg, imgs, c, dir := tr.Registry, tr.Images, tr.Containerd, tr.Dir
	st, err := store.Open(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	ob, err := outbox.Open(st.Bolt(), outbox.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	rtc := containerd.Config{Address: c.Address, Registries: map[string]containerd.Registry{reg.Host: {PlainHTTP: true}}}
	rt, err := containerd.New(ctx, rtc)
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	if b := os.Getenv("OUTPOST_LOGGER_BIN"); b != "" {
		self = b // measure the real agent binary as the logger
	}
	e := &env{t: t, ctrd: c, reg: reg, images: imgs, st: st, rec: &recorder{ob: ob}, dir: dir, rt: rt}
	e.cfg = pods.Config{
		Source: st, Outbox: e.rec, Runtime: rtc, NodeName: "gw-1",
		NodeInfo: func() (wire.NodeInfo, error) {
			return wire.NodeInfo{Arch: "amd64", OS: "linux", Board: "sim",
				Addresses:   []wire.Address{{Type: "InternalIP", Address: "127.0.0.1"}},
				Capacity:    wire.Resources{CPUMillis: 2000, MemoryBytes: 1 << 30, Pods: 110},
				Allocatable: wire.Resources{CPUMillis: 2000, MemoryBytes: 1 << 30, Pods: 110}}, nil
		},
		StateDir: filepath.Join(dir, "state"), LogBinary: self, PauseBinary: self,
		// As the agent's default (logging: agent); TestContainerLogs runs
		// the logger process (LogBinary) too.
		LogInAgent:  config.DefaultLogging == config.LoggingAgent,
		BackoffBase: time.Second, BackoffMax: 4 * time.Second,
		Log: harnessLog(t),
	}
	t.Cleanup(func() {
		e.stop()
		rt.Close()
		if err := c.Stop(); err != nil {
			t.Errorf("containerd Stop: %v", err)
		}
		st.Close()
		// What the pods left mounted (network namespaces, memory emptyDirs).
		if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
					_ = syscall.Unmount(f[4], syscall.MNT_DETACH)
				}
			}
		}
		os.RemoveAll(dir)
	})
	return e
}

func harnessLog(t testing.TB) *slogLogger { return newTestLogger(t) }

// run starts a reconciler (a new instance each time, as an agent restart).
// sub runs f as t's subtest name; the env's helpers fail the subtest
// while it runs.
func (e *env) sub(t *testing.T, name string, f func(t *testing.T)) {
	t.Run(name, func(t *testing.T) {
		parent := e.t
		e.t = t
		defer func() { e.t = parent }()
		f(t)
	})
}

func (e *env) run() {
	e.stop()
	ctx, cancel := context.WithCancel(context.Background())
	changes := make(chan struct{}, 1)
	cfg := e.cfg
	cfg.Changes = changes
	e.changes = changes
	r := pods.New(cfg)
	e.cancel, e.done = cancel, make(chan struct{})
	e.recon = r
	go func() {
		defer close(e.done)
		if err := r.Run(ctx); err != nil {
			e.t.Errorf("Run: %v", err)
		}
	}()
}

func (e *env) stop() {
	if e.cancel != nil {
		e.cancel()
		<-e.done
		e.cancel = nil
	}
}

// apply writes to the store as agent/desired does, and signals.
func (e *env) apply(sy *wire.Sync) {
	e.t.Helper()
	if _, err := e.st.ApplySync(sy); err != nil {
		e.t.Fatal(err)
	}
	select {
	case e.changes <- struct{}{}:
	default:
	}
}

func podObj(uid, name, version string, p wire.Pod) wire.Object {
	if p.RestartPolicy == "" {
		p.RestartPolicy = "Always"
	}
	if p.TerminationGracePeriodSeconds == 0 {
		p.TerminationGracePeriodSeconds = 5
	}
	return wire.Object{Kind: wire.KindPod, UID: uid, Namespace: "default", Name: name, Version: version, Pod: &p}
}

func sleeper(image string) wire.Pod {
	return wire.Pod{Containers: []wire.Container{{Name: "app", Image: image,
		Command: []string{"sh", "-c", "trap 'echo got TERM; exit 0' TERM; echo started $POD; while true; do sleep 0.2; done"},
		Env:     []wire.EnvVar{{Name: "POD", From: &wire.EnvSource{Field: "metadata.name"}}}}}}
}

// waitStatus waits until pod uid's latest status satisfies ok.
func (e *env) waitStatus(uid string, d time.Duration, what string, ok func(wire.PodStatus) bool) wire.PodStatus {
	e.t.Helper()
	var s wire.PodStatus
	wait.State(e.t, context.Background(), d, "pod "+uid+": status "+what, func() (bool, string) {
		var has bool
		s, has = e.rec.latest(uid)
		return has && ok(s), fmt.Sprintf("%+v", s)
	})
	return s
}

func running(s wire.PodStatus) bool {
	if s.Phase != "Running" || len(s.Containers) == 0 {
		return false
	}
	for _, c := range s.Containers {
		if c.State.Kind != wire.StateRunning || !c.Ready {
			return false
		}
	}
	return true
}

// tasks asks containerd itself, with ctr: task id → pid, status.
func (e *env) tasks() map[string]string {
	e.t.Helper()
	out, err := e.ctrd.Ctr(context.Background(), "-n", "outpost", "tasks", "ls")
	if err != nil {
		e.t.Fatal(err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n")[1:] {
		if f := strings.Fields(line); len(f) == 3 {
			m[f[0]] = f[1] + " " + f[2]
		}
	}
	return m
}

func (e *env) containers() []string {
	e.t.Helper()
	out, err := e.ctrd.Ctr(context.Background(), "-n", "outpost", "containers", "ls", "-q")
	if err != nil {
		e.t.Fatal(err)
	}
	return strings.Fields(out)
}

// podContainers lists the containers containerd holds for pod uid.
func (e *env) podContainers(uid string) []string {
	e.t.Helper()
	cs, err := e.rt.ListLabeled(context.Background(), "dev.outpost.pod.uid", uid)
	if err != nil {
		e.t.Fatal(err)
	}
	var ids []string
	for _, c := range cs {
		ids = append(ids, c.ID)
	}
	return ids
}

func (e *env) waitFor(d time.Duration, what string, ok func() bool) {
	e.t.Helper()
	wait.For(e.t, d, what, ok)
}

func (e *env) log(ns, pod, container string, previous bool) string {
	e.t.Helper()
	p, _, err := e.recon.LogPath(context.Background(), ns, pod, container, previous)
	if err != nil {
		return ""
	}
	var b bytes.Buffer
	_ = crilog.Stream(context.Background(), p, crilog.Options{Tail: -1}, &b)
	return b.String()
}

func runningTasks(m map[string]string, prefix string) int {
	n := 0
	for id, s := range m {
		if strings.HasPrefix(id, prefix) && strings.HasSuffix(s, "RUNNING") {
			n++
		}
	}
	return n
}

func TestReconciler(t *testing.T) {
	e := start(t)
	img1, img2 := e.images[0].Ref, e.images[1].Ref
	// A container Outpost did not create: never touched.
	if _, err := e.rt.Pull(t.Context(), img1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ctrd.Ctr(t.Context(), "-n", "outpost", "containers", "create", img1, "foreign", "true"); err != nil {
		t.Fatal(err)
	}
	e.run()

	uids := []string{"uid-a", "uid-b", "uid-c"}
	e.sub(t, "three pods run", func(t *testing.T) {
		var sy wire.Sync
		for i, uid := range uids {
			sy.Upserts = append(sy.Upserts, podObj(uid, fmt.Sprintf("web-%d", i), "1", sleeper(img1)))
		}
		e.apply(&sy)
		for _, uid := range uids {
			s := e.waitStatus(uid, 60*time.Second, "Running", running)
			c := s.Containers[0]
			if !strings.HasPrefix(c.ContainerID, "containerd://app-") || !strings.Contains(c.ImageID, "@sha256:") || s.HostIP != "127.0.0.1" || s.StartTime == 0 {
				t.Errorf("status %+v", s)
			}
			for _, want := range []string{"PodScheduled", "Initialized", "ContainersReady", "Ready"} {
				found := false
				for _, cd := range s.Conditions {
					found = found || (cd.Type == want && cd.Status == "True")
				}
				if !found {
					t.Errorf("%s: condition %s not True: %+v", uid, want, s.Conditions)
				}
			}
		}
		if n := runningTasks(e.tasks(), "app-"); n != 3 {
			t.Fatalf("containerd runs %d app tasks, want 3: %v", n, e.tasks())
		}
		e.waitFor(10*time.Second, "log line", func() bool { return strings.Contains(e.log("default", "web-0", "app", false), "started web-0") })
	})

	e.sub(t, "scale to one", func(t *testing.T) {
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-b"}, {Kind: wire.KindPod, UID: "uid-c"}}})
		e.waitFor(30*time.Second, "two pods removed", func() bool {
			return len(e.podContainers("uid-b"))+len(e.podContainers("uid-c")) == 0
		})
		if n := runningTasks(e.tasks(), "app-"); n != 1 {
			t.Errorf("%d app tasks running, want 1", n)
		}
		for _, uid := range []string{"uid-b", "uid-c"} {
			if _, err := os.Stat(filepath.Join(e.cfg.StateDir, "pods", uid)); !os.IsNotExist(err) {
				t.Errorf("pod dir of %s left: %v", uid, err)
			}
		}
		if !strings.Contains(strings.Join(e.containers(), " "), "foreign") {
			t.Error("the foreign container was removed")
		}
	})

	e.sub(t, "image change recreates", func(t *testing.T) {
		old, _ := e.rec.latest("uid-a")
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-a", "web-0", "2", sleeper(img2))}})
		s := e.waitStatus("uid-a", 60*time.Second, "Running with image 2", func(s wire.PodStatus) bool {
			return running(s) && s.Containers[0].Image == img2 && s.Containers[0].ContainerID != old.Containers[0].ContainerID
		})
		if s.Containers[0].ImageID == old.Containers[0].ImageID {
			t.Errorf("imageID unchanged: %s", s.Containers[0].ImageID)
		}
		out, _ := e.ctrd.Ctr(t.Context(), "-n", "outpost", "containers", "ls")
		if !strings.Contains(out, img2) {
			t.Errorf("ctr: no container with %s:\n%s", img2, out)
		}
		if n := runningTasks(e.tasks(), "app-"); n != 1 {
			t.Errorf("%d app tasks running after the update, want 1", n)
		}
	})

	e.sub(t, "configmap volume and secret env", func(t *testing.T) {
		cm := wire.Object{Kind: wire.KindConfigMap, UID: "cm-1", Namespace: "default", Name: "conf", Version: "1",
			ConfigMap: &wire.ConfigMap{Data: map[string]string{"greeting": "hello-from-configmap"}}}
		sec := wire.Object{Kind: wire.KindSecret, UID: "sec-1", Namespace: "default", Name: "creds", Version: "1",
			Secret: &wire.Secret{Data: map[string][]byte{"password": []byte("s3cret")}}}
		p := wire.Pod{
			Volumes: []wire.Volume{{Name: "cfg", ConfigMap: &wire.FilesVolume{Name: "conf"}}, {Name: "scratch", EmptyDir: &wire.EmptyDir{Memory: true}}},
			Containers: []wire.Container{{Name: "app", Image: img1,
				Command: []string{"sh", "-c", "echo pw=$PW; while true; do echo cfg=$(cat /etc/cfg/greeting); sleep 0.3; done"},
				Env:     []wire.EnvVar{{Name: "PW", From: &wire.EnvSource{Secret: &wire.KeyRef{Name: "creds", Key: "password"}}}},
				Mounts:  []wire.VolumeMount{{Name: "cfg", MountPath: "/etc/cfg"}, {Name: "scratch", MountPath: "/scratch"}}}}}
		e.apply(&wire.Sync{Upserts: []wire.Object{cm, sec, podObj("uid-cm", "cm-pod", "1", p)}})
		e.waitStatus("uid-cm", 60*time.Second, "Running", running)
		e.waitFor(10*time.Second, "configmap and secret in the log", func() bool {
			l := e.log("default", "cm-pod", "app", false)
			return strings.Contains(l, "pw=s3cret") && strings.Contains(l, "cfg=hello-from-configmap")
		})
		cm.Version, cm.ConfigMap = "2", &wire.ConfigMap{Data: map[string]string{"greeting": "updated"}}
		e.apply(&wire.Sync{Upserts: []wire.Object{cm}})
		e.waitFor(20*time.Second, "updated configmap visible inside", func() bool {
			return strings.Contains(e.log("default", "cm-pod", "app", false), "cfg=updated")
		})
		link, err := os.Readlink(filepath.Join(e.cfg.StateDir, "pods", "uid-cm", "volumes", "cfg", "..data"))
		if err != nil || !strings.HasPrefix(link, "..") {
			t.Errorf("..data symlink: %q %v", link, err)
		}
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-cm"}}})
	})

	e.sub(t, "crash loop back-off", func(t *testing.T) {
		p := wire.Pod{Containers: []wire.Container{{Name: "crash", Image: img1, Command: []string{"sh", "-c", "echo crashing; exit 1"}}}}
		begin := time.Now()
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-crash", "crasher", "1", p)}})
		s := e.waitStatus("uid-crash", 60*time.Second, "restartCount ≥ 3 in CrashLoopBackOff", func(s wire.PodStatus) bool {
			c := s.Containers[0]
			return c.RestartCount >= 3 && c.State.Reason == "CrashLoopBackOff"
		})
		// Restarts 1, 2 and 3 come after back-offs of 0, 1s and 2s here
		// (BackoffBase 1s): at least 3s.
		if d := time.Since(begin); d < 3*time.Second {
			t.Errorf("restartCount 3 after %s: no back-off", d)
		}
		c := s.Containers[0]
		if c.LastState.Kind != wire.StateTerminated || c.LastState.ExitCode != 1 || c.LastState.Reason != "Error" {
			t.Errorf("lastState %+v", c.LastState)
		}
		if !strings.Contains(c.State.Message, "back-off") {
			t.Errorf("waiting message %q", c.State.Message)
		}
		// Restarts spread out: back-off doubles (1s, 2s, 4s here).
		var starts []int64
		var last int32 = -1
		for _, h := range e.rec.history("uid-crash") {
			if cs := h.Containers[0]; cs.RestartCount != last && cs.LastState.Kind == wire.StateTerminated {
				last = cs.RestartCount
				starts = append(starts, cs.LastState.FinishedAt)
			}
		}
		t.Logf("exits at %v", starts)
		if cs := e.podContainers("uid-crash"); len(cs) > 2 {
			t.Errorf("old attempts not collected (want the current and the previous): %v", cs)
		}
		if l := e.log("default", "crasher", "crash", true); !strings.Contains(l, "crashing") {
			t.Errorf("previous log %q", l)
		}
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-crash"}}})
	})

	e.sub(t, "missing image", func(t *testing.T) {
		p := sleeper(e.reg.Ref("test/busybox:nope"))
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-img", "imgpod", "1", p)}})
		e.waitStatus("uid-img", 30*time.Second, "ErrImagePull", func(s wire.PodStatus) bool { return s.Containers[0].State.Reason == "ErrImagePull" })
		e.waitStatus("uid-img", 30*time.Second, "ImagePullBackOff", func(s wire.PodStatus) bool {
			return s.Containers[0].State.Reason == "ImagePullBackOff" && s.Phase == "Pending"
		})
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-img", "imgpod", "2", sleeper(img1))}})
		e.waitStatus("uid-img", 60*time.Second, "Running after the fix", running)
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-img"}}})
	})

	e.sub(t, "deleting stops gracefully", func(t *testing.T) {
		o := podObj("uid-del", "del", "1", sleeper(img1))
		e.apply(&wire.Sync{Upserts: []wire.Object{o}})
		e.waitStatus("uid-del", 60*time.Second, "Running", running)
		e.waitFor(10*time.Second, "started", func() bool { return strings.Contains(e.log("default", "del", "app", false), "started") })
		o.Version, o.Pod.Deleting, o.Pod.DeletionGracePeriodSeconds = "2", true, 10
		begin := time.Now()
		e.apply(&wire.Sync{Upserts: []wire.Object{o}})
		s := e.waitStatus("uid-del", 30*time.Second, "Terminated", func(s wire.PodStatus) bool { return s.Terminated })
		if d := time.Since(begin); d > 8*time.Second {
			t.Errorf("graceful stop took %s", d)
		}
		if c := s.Containers[0]; c.State.Kind != wire.StateTerminated || c.State.ExitCode != 0 {
			t.Errorf("state after SIGTERM: %+v", c.State)
		}
		if l := e.log("default", "del", "app", false); !strings.Contains(l, "got TERM") {
			t.Errorf("no SIGTERM seen: %q", l)
		}
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-del"}}})
		e.waitFor(30*time.Second, "deleted pod's containers gone", func() bool { return len(e.podContainers("uid-del")) == 0 })
		// The logs go last, after the containers and the pod's directory.
		e.waitFor(10*time.Second, "deleted pod's log dir removed", func() bool {
			_, err := os.Stat(filepath.Join(e.cfg.StateDir, "logs", "default_del_uid-del"))
			return os.IsNotExist(err)
		})
	})

	e.sub(t, "restart adopts running containers", func(t *testing.T) {
		e.waitFor(30*time.Second, "only uid-a left", func() bool {
			return len(e.podContainers("uid-crash"))+len(e.podContainers("uid-img"))+len(e.podContainers("uid-cm")) == 0
		})
		before := e.tasks()
		reports := len(e.rec.history("uid-a"))
		e.stop()
		e.run()
		// A new reconciler's worker reports its pod once, at the end of
		// its first pass: a container that pass would replace is replaced
		// by then.
		e.waitFor(30*time.Second, "the restarted reconciler's first report of uid-a", func() bool {
			return len(e.rec.history("uid-a")) > reports
		})
		e.waitStatus("uid-a", 10*time.Second, "Running", running)
		after := e.tasks()
		if fmt.Sprint(before) != fmt.Sprint(after) {
			t.Errorf("tasks changed across a reconciler restart:\nbefore %v\nafter  %v", before, after)
		}
	})

	e.sub(t, "simulated reboot", func(t *testing.T) {
		e.stop()
		for id := range e.tasks() {
			_, _ = e.ctrd.Ctr(t.Context(), "-n", "outpost", "tasks", "kill", "-a", "-s", "SIGKILL", id)
			_, _ = e.ctrd.Ctr(t.Context(), "-n", "outpost", "tasks", "delete", "-f", id)
		}
		if n := runningTasks(e.tasks(), ""); n != 0 {
			t.Fatalf("%d tasks still running", n)
		}
		e.run()
		e.waitFor(30*time.Second, "pod running again", func() bool { return runningTasks(e.tasks(), "app-") == 1 })
		s := e.waitStatus("uid-a", 30*time.Second, "Running", running)
		if s.Containers[0].LastState.Reason != "Unknown" && s.Containers[0].LastState.ExitCode != 137 {
			t.Logf("lastState after reboot: %+v", s.Containers[0].LastState)
		}
	})

	e.sub(t, "containerd restarted under it", func(t *testing.T) {
		if err := e.ctrd.StopDaemon(); err != nil {
			t.Fatal(err)
		}
		e.waitFor(30*time.Second, "ContainerRuntimeReady=False reported", func() bool {
			e.rec.mu.Lock()
			defer e.rec.mu.Unlock()
			return len(e.rec.ns) > 0 && e.rec.ns[len(e.rec.ns)-1].Conditions[0].Status == "False"
		})
		// A change while containerd is down is applied once it is back.
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-late", "late", "1", sleeper(img1))}})
		// The reconciler takes the change signal (and reads the store
		// next); its next retry of containerd after that is one with
		// uid-late wanted, and fails.
		e.waitFor(10*time.Second, "the reconciler to take the change", func() bool { return len(e.changes) == 0 })
		e.rec.mu.Lock()
		seen := len(e.rec.ns)
		e.rec.mu.Unlock()
		e.waitFor(30*time.Second, "a failed retry of containerd with uid-late wanted", func() bool {
			e.rec.mu.Lock()
			defer e.rec.mu.Unlock()
			for _, ns := range e.rec.ns[seen:] {
				if ns.Conditions[0].Status == "False" {
					return true
				}
			}
			return false
		})
		if err := e.ctrd.StartDaemon(t.Context()); err != nil {
			t.Fatal(err)
		}
		e.waitFor(60*time.Second, "ContainerRuntimeReady=True reported", func() bool {
			e.rec.mu.Lock()
			defer e.rec.mu.Unlock()
			return e.rec.ns[len(e.rec.ns)-1].Conditions[0].Status == "True"
		})
		e.waitStatus("uid-late", 60*time.Second, "Running", running)
		e.waitStatus("uid-a", 10*time.Second, "Running", running)
		if n := runningTasks(e.tasks(), "app-"); n != 2 {
			t.Errorf("%d tasks running, want 2: %v", n, e.tasks())
		}
	})
}
