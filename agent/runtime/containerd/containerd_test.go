package containerd_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"outpost.dev/agent/runtime/containerd"
	"outpost.dev/agent/runtime/seccomp"
	"outpost.dev/test/harness"
	"outpost.dev/test/wait"
)

// env is a real containerd (Debian's, with runc) and a loopback registry
// serving the busybox test images.
type env struct {
	ctrd   *harness.Containerd
	reg    *harness.Registry
	images []harness.BusyboxImage
	rt     *containerd.Runtime
	logs   string
	ns     string
	dir    string
}

func start(t *testing.T) *env {
	return startWith(t, harness.RegistryOptions{})
}

// startWith is start with a registry made as opts say; the Runtime is
// configured for plain HTTP only when the registry serves it.
func startWith(t *testing.T, opts harness.RegistryOptions) *env {
	t.Helper()
	tr := harness.StartTestRuntime(t, "rt-", opts)
	ctx := t.Context()
	reg, imgs, c, dir := tr.Registry, tr.Images, tr.Containerd, tr.Dir
	// A namespace of its own: runc keeps its state under
	// /run/containerd/runc/<namespace> for every containerd on the machine,
	// so concurrent runs with fixed container IDs would collide there.
	ns := "outpost-test-" + filepath.Base(dir)[3:]
	rt, err := containerd.New(ctx, containerd.Config{
		Address:    c.Address,
		Namespace:  ns,
		Registries: map[string]containerd.Registry{reg.Host: {PlainHTTP: reg.CACert == ""}},
		LogFIFODir: filepath.Join(dir, "logfifo"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return &env{ctrd: c, reg: reg, images: imgs, rt: rt, logs: filepath.Join(dir, "logs"), ns: ns, dir: dir}
}

func (e *env) run(t *testing.T, ctx context.Context, sp containerd.Spec) {
	t.Helper()
	if sp.LogPath == "" {
		sp.LogPath = filepath.Join(e.logs, sp.ID+".log")
	}
	if err := e.rt.Create(ctx, sp); err != nil {
		t.Fatal(err)
	}
	if err := e.rt.Start(ctx, sp.ID); err != nil {
		t.Fatalf("%v\n%s", err, e.ctrd.LogTail(20))
	}
}

func (e *env) waitExit(t *testing.T, ctx context.Context, id string) *containerd.Status {
	t.Helper()
	var st *containerd.Status
	wait.State(t, ctx, 30*time.Second, id+" exited", func() (bool, string) {
		var err error
		if st, err = e.rt.Status(ctx, id); err != nil {
			t.Fatal(err)
		}
		return st.State == containerd.StateExited, string(st.State)
	})
	return st
}

func (e *env) readLog(t *testing.T, id string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.logs, id+".log"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRuntime(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	var mu sync.Mutex
	var progress []containerd.Progress
	img, err := e.rt.Pull(ctx, e.images[0].Ref, func(p containerd.Progress) {
		mu.Lock()
		progress = append(progress, p)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest != e.images[0].Digest {
		t.Errorf("pulled digest %s, registry has %s", img.Digest, e.images[0].Digest)
	}
	kinds := map[string]bool{}
	for _, p := range progress {
		if p.Completed {
			kinds[p.Kind] = true
		}
	}
	for _, k := range []string{"layer", "config", "manifest", "unpack"} {
		if !kinds[k] {
			t.Errorf("no completed %q in progress reports %+v", k, progress)
		}
	}
	// A second pull finds everything present.
	if _, err := e.rt.Pull(ctx, e.images[0].Ref, nil); err != nil {
		t.Fatalf("second pull: %v", err)
	}
	if out, err := e.ctrd.Ctr(ctx, "-n", e.ns, "images", "ls", "-q"); err != nil || !strings.Contains(out, e.images[0].Ref) {
		t.Errorf("ctr images ls: %q, %v; want %s", out, err, e.images[0].Ref)
	}

	t.Run("echo", func(t *testing.T) {
		e.run(t, ctx, containerd.Spec{ID: "echo", Image: img.Name,
			Command: []string{"sh", "-c"}, Args: []string{"echo hello; echo image=$OUTPOST_TEST_IMAGE x=$X; pwd; echo oops >&2"},
			Env: []string{"X=42"}, WorkingDir: "/tmp"})
		st := e.waitExit(t, ctx, "echo")
		if st.ExitCode != 0 {
			t.Errorf("exit code %d, want 0", st.ExitCode)
		}
		if st.StartedAt.IsZero() || st.ExitedAt.Before(st.StartedAt) || st.CreatedAt.IsZero() {
			t.Errorf("timestamps: created %v started %v exited %v", st.CreatedAt, st.StartedAt, st.ExitedAt)
		}
		// The shim copies stdout and stderr on their own; the last bytes can
		// land just after the exit is reported.
		for _, want := range []string{"hello\n", "image=1 x=42\n", "/tmp\n", "oops\n"} {
			waitLog(t, e, "echo", want)
		}
	})

	t.Run("exit1", func(t *testing.T) {
		e.run(t, ctx, containerd.Spec{ID: "exit1", Image: img.Name, Command: []string{"sh", "-c", "exit 1"}})
		if st := e.waitExit(t, ctx, "exit1"); st.ExitCode != 1 {
			t.Errorf("exit code %d, want 1", st.ExitCode)
		}
	})

	t.Run("graceful stop", func(t *testing.T) {
		e.run(t, ctx, containerd.Spec{ID: "trapper", Image: img.Name, MemoryLimit: 64 << 20, CPUMillis: 500,
			Command: []string{"sh", "-c", "trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 0.1; done"}})
		waitLog(t, e, "trapper", "ready")
		tasks, err := e.rt.Tasks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if tk, ok := tasks["trapper"]; !ok || tk.State != containerd.StateRunning || tk.Pid == 0 {
			t.Errorf("Tasks()[trapper] = %+v, %v; all: %+v", tk, ok, tasks)
		}
		if b, err := os.ReadFile("/sys/fs/cgroup/memory/" + e.ns + "/trapper/memory.limit_in_bytes"); err == nil {
			if strings.TrimSpace(string(b)) != "67108864" {
				t.Errorf("memory limit %s, want 67108864", b)
			}
		}
		begin := time.Now()
		if err := e.rt.Stop(ctx, "trapper", 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(begin); d > 5*time.Second {
			t.Errorf("stop took %s: SIGTERM was not honoured", d)
		}
		st, _ := e.rt.Status(ctx, "trapper")
		if st.State != containerd.StateExited || st.ExitCode != 0 {
			t.Errorf("after stop: %+v, want exited 0", st)
		}
		if !strings.Contains(e.readLog(t, "trapper"), "got TERM") {
			t.Error("the container did not see SIGTERM")
		}
	})

	t.Run("exec, capabilities and reap", func(t *testing.T) {
		e.run(t, ctx, containerd.Spec{ID: "caps", Image: img.Name, Command: []string{"sleep", "600"},
			CapDrop: []string{"ALL"}, CapAdd: []string{"NET_ADMIN"}})
		// CAP_NET_ADMIN is bit 12: the effective set is exactly 0x1000.
		code, err := e.rt.Exec(ctx, "caps", []string{"sh", "-c", "grep -q 'CapEff:.0000000000001000' /proc/1/status"}, 5*time.Second)
		if err != nil || code != 0 {
			t.Errorf("exec capability check: code %d, %v", code, err)
		}
		if code, err := e.rt.Exec(ctx, "caps", []string{"sh", "-c", "exit 3"}, 5*time.Second); err != nil || code != 3 {
			t.Errorf("exec exit 3: code %d, %v", code, err)
		}
		if _, err := e.rt.Exec(ctx, "caps", []string{"sleep", "10"}, 200*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("exec past its timeout: %v, want DeadlineExceeded", err)
		}
		// Output, stdout and stderr together, bounded; the rest is drained.
		code, out, err := e.rt.ExecOutput(ctx, "caps", []string{"sh", "-c", "echo out; echo err >&2; exit 2"}, 5*time.Second, 1024)
		if err != nil || code != 2 || !strings.Contains(string(out), "out\n") || !strings.Contains(string(out), "err\n") {
			t.Errorf("exec output: code %d, %q, %v", code, out, err)
		}
		code, out, err = e.rt.ExecOutput(ctx, "caps", []string{"sh", "-c", "yes | head -c 1000000; echo done"}, 20*time.Second, 100)
		if err != nil || code != 0 || len(out) != 100 || strings.Trim(string(out), "y\n") != "" {
			t.Errorf("bounded exec output: code %d, %d bytes %q, %v", code, len(out), out, err)
		}
		if _, out, err := e.rt.ExecOutput(ctx, "caps", []string{"/no/such/binary"}, 5*time.Second, 1024); err == nil {
			t.Errorf("exec of a missing binary: no error (output %q)", out)
		}
		if e.rt.OOMKilled("caps") {
			t.Error("OOMKilled for a container that never ran out of memory")
		}
		if err := e.rt.Stop(ctx, "caps", 100*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		tasks, err := e.rt.Tasks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		tk := tasks["caps"]
		if tk.State != containerd.StateExited || tk.ExitCode != 137 || tk.ExitedAt.IsZero() {
			t.Fatalf("task after stop: %+v", tk)
		}
		if err := e.rt.Reap(ctx, "caps", tk); err != nil {
			t.Fatal(err)
		}
		if tasks, _ := e.rt.Tasks(ctx); tasks["caps"].ID != "" {
			t.Errorf("task still there after Reap: %+v", tasks["caps"])
		}
		cs, err := e.rt.ListLabeled(ctx, containerd.LabelManaged, "true")
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if c.ID == "caps" {
				if code, at, ok := c.Exit(); !ok || code != 137 || !at.Equal(tk.ExitedAt) || c.StartedAt().IsZero() {
					t.Errorf("recorded exit %d %v %v, started %v", code, at, ok, c.StartedAt())
				}
			}
		}
		if err := e.rt.Delete(ctx, "caps"); err != nil {
			t.Error(err)
		}
	})

	t.Run("seccomp", func(t *testing.T) {
		// unshare(CLONE_NEWUSER) needs no capability: only the default
		// profile (no CAP_SYS_ADMIN, so no unshare) stops it.
		probe := []string{"sh", "-c", "grep '^Seccomp:' /proc/self/status; if unshare -U true; then echo unshare=ok; else echo unshare=blocked; fi; " +
			"if mkdir /tmp/d; then echo mkdir=ok; else echo mkdir=blocked; fi"}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "no-mkdir.json"), []byte(`{"defaultAction":"SCMP_ACT_ALLOW",
			"syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}`), 0o644); err != nil {
			t.Fatal(err)
		}
		local, err := seccomp.Load(dir, "no-mkdir.json")
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			id   string
			sc   *containerd.Seccomp
			want []string
		}{
			{"sc-default", nil, []string{"Seccomp:\t2\n", "unshare=blocked", "mkdir=ok"}},
			{"sc-unconfined", &containerd.Seccomp{Unconfined: true}, []string{"Seccomp:\t0\n", "unshare=ok", "mkdir=ok"}},
			{"sc-localhost", &containerd.Seccomp{Profile: local}, []string{"Seccomp:\t2\n", "unshare=ok", "mkdir=blocked"}},
		} {
			e.run(t, ctx, containerd.Spec{ID: tc.id, Image: img.Name, Command: probe, Seccomp: tc.sc})
			if st := e.waitExit(t, ctx, tc.id); st.ExitCode != 0 {
				t.Errorf("%s: exit %d", tc.id, st.ExitCode)
			}
			for _, w := range tc.want {
				waitLog(t, e, tc.id, w)
			}
			if err := e.rt.Delete(ctx, tc.id); err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("oom killed", func(t *testing.T) {
		// 16 MiB of memory, and a shell that wants far more: the kernel's
		// OOM killer ends it (no swap accounting on every machine, so the
		// string also outgrows any swap allowance quickly).
		e.run(t, ctx, containerd.Spec{ID: "hog", Image: img.Name, MemoryLimit: 16 << 20,
			Command: []string{"sh", "-c", "x=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; while true; do x=$x$x; done"}})
		st := e.waitExit(t, ctx, "hog")
		tasks, err := e.rt.Tasks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.ExitCode != 137 || !e.rt.OOMKilled("hog") {
			t.Fatalf("exit %d, OOMKilled %v; want 137 and true", st.ExitCode, e.rt.OOMKilled("hog"))
		}
		if err := e.rt.Reap(ctx, "hog", tasks["hog"]); err != nil {
			t.Fatal(err)
		}
		cs, err := e.rt.ListLabeled(ctx, containerd.LabelManaged, "true")
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, c := range cs {
			if c.ID == "hog" {
				found = c.OOMKilled()
			} else if c.OOMKilled() {
				t.Errorf("%s recorded as OOM-killed", c.ID)
			}
		}
		if !found {
			t.Error("Reap did not record the OOM kill")
		}
		if err := e.rt.Delete(ctx, "hog"); err != nil {
			t.Error(err)
		}
	})

	t.Run("kill after grace", func(t *testing.T) {
		// sleep as PID 1 has no SIGTERM handler, so the kernel ignores TERM.
		e.run(t, ctx, containerd.Spec{ID: "sleeper", Image: img.Name, Command: []string{"sleep", "600"}})
		begin := time.Now()
		if err := e.rt.Stop(ctx, "sleeper", 500*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(begin); d < 500*time.Millisecond {
			t.Errorf("stopped after %s, before the grace period", d)
		}
		st, _ := e.rt.Status(ctx, "sleeper")
		if st.State != containerd.StateExited || st.ExitCode != 137 {
			t.Errorf("after SIGKILL: %+v, want exited 137", st)
		}
	})

	t.Run("list and delete", func(t *testing.T) {
		// A container Outpost did not create, in the same namespace.
		if _, err := e.ctrd.Ctr(ctx, "-n", e.ns, "containers", "create", img.Name, "foreign", "true"); err != nil {
			t.Fatal(err)
		}
		cs, err := e.rt.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		managed := map[string]bool{}
		for _, c := range cs {
			managed[c.ID] = c.Managed()
		}
		for _, id := range []string{"echo", "exit1", "trapper", "sleeper"} {
			if !managed[id] {
				t.Errorf("%s not listed as managed: %+v", id, cs)
			}
		}
		if m, ok := managed["foreign"]; !ok || m {
			t.Errorf("foreign container: listed %v, managed %v; want listed, not managed", ok, m)
		}
		e.run(t, ctx, containerd.Spec{ID: "running", Image: img.Name, Command: []string{"sleep", "600"}})
		if err := e.rt.Delete(ctx, "running"); err == nil {
			t.Error("Delete of a running container succeeded; want an error saying to stop it")
		}
		if err := e.rt.Stop(ctx, "running", 100*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if c.Managed() {
				if err := e.rt.Delete(ctx, c.ID); err != nil {
					t.Error(err)
				}
			}
		}
		if err := e.rt.Delete(ctx, "running"); err != nil {
			t.Error(err)
		}
		if _, err := e.rt.Status(ctx, "echo"); !errors.Is(err, containerd.ErrNotFound) {
			t.Errorf("Status after Delete: %v, want ErrNotFound", err)
		}
		// containerd itself, asked with ctr, has nothing of them left.
		out, _ := e.ctrd.Ctr(ctx, "-n", e.ns, "containers", "ls", "-q")
		if strings.TrimSpace(out) != "foreign" {
			t.Errorf("containers left: %q, want only foreign", out)
		}
		out, _ = e.ctrd.Ctr(ctx, "-n", e.ns, "tasks", "ls", "-q")
		if strings.TrimSpace(out) != "" {
			t.Errorf("tasks left: %q", out)
		}
		out, _ = e.ctrd.Ctr(ctx, "-n", e.ns, "snapshots", "ls")
		for _, id := range []string{"echo", "exit1", "trapper", "sleeper", "running"} {
			for _, line := range strings.Split(out, "\n") {
				if f := strings.Fields(line); len(f) > 0 && f[0] == id {
					t.Errorf("snapshot %s left: %s", id, line)
				}
			}
		}
		if s := e.ctrd.Shims(); len(s) > 0 {
			t.Errorf("shims still running after every task was deleted: %v", s)
		}
	})
}

func waitLog(t *testing.T, e *env, id, want string) {
	t.Helper()
	wait.For(t, 30*time.Second, fmt.Sprintf("%s to log %q", id, want), func() bool {
		b, _ := os.ReadFile(filepath.Join(e.logs, id+".log"))
		return strings.Contains(string(b), want)
	})
}
