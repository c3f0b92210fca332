package pods_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"outpost.dev/wire"
)

// shared is an emptyDir "shared" mounted at /shared.
func shared(p wire.Pod) wire.Pod {
	p.Volumes = append(p.Volumes, wire.Volume{Name: "shared", EmptyDir: &wire.EmptyDir{}})
	for _, cs := range [][]wire.Container{p.InitContainers, p.Containers} {
		for i := range cs {
			cs[i].Mounts = append(cs[i].Mounts, wire.VolumeMount{Name: "shared", MountPath: "/shared"})
		}
	}
	return p
}

func sh(script string) []string { return []string{"sh", "-c", script} }

// loop is a process that runs until SIGTERM, then runs onTerm and exits 0.
func loop(onTerm string) []string {
	return sh("trap '" + onTerm + "; exit 0' TERM; while true; do sleep 0.1; done")
}

func (e *env) sharedFile(uid, name string) string {
	b, _ := os.ReadFile(filepath.Join(e.cfg.StateDir, "pods", uid, "volumes", "shared", name))
	return string(b)
}

func findStatus(cs []wire.ContainerStatus, name string) wire.ContainerStatus {
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	return wire.ContainerStatus{}
}

func condition(s wire.PodStatus, typ string) wire.Condition {
	for _, c := range s.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return wire.Condition{}
}

func TestLifecycleHooks(t *testing.T) {
	e := start(t)
	img := e.images[0].Ref
	e.run()

	e.sub(t, "postStart runs before the container counts as running", func(t *testing.T) {
		// The hook sleeps before it writes: a status reporting the
		// container running before the hook returned finds no file.
		p := shared(wire.Pod{Containers: []wire.Container{{Name: "app", Image: img,
			Command:   sh("while [ ! -f /shared/hook ]; do sleep 0.1; done; echo read $(cat /shared/hook); trap 'exit 0' TERM; while true; do sleep 0.1; done"),
			PostStart: &wire.Handler{Exec: sh("sleep 2; echo hooked > /shared/hook")},
		}}})
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-post", "post", "1", p)}})
		e.waitStatus("uid-post", 60*time.Second, "the container running", func(s wire.PodStatus) bool {
			return len(s.Containers) == 1 && s.Containers[0].State.Kind == wire.StateRunning
		})
		if got := e.sharedFile("uid-post", "hook"); got != "hooked\n" {
			t.Errorf("running reported with the hook's file %q: the hook had not returned", got)
		}
		for _, s := range e.rec.history("uid-post") {
			if c := findStatus(s.Containers, "app"); c.State.Kind == wire.StateRunning && !c.Started {
				t.Errorf("running but not started: %+v", c)
			}
		}
		e.waitFor(10*time.Second, "the main process read the hook's file", func() bool {
			return strings.Contains(e.log("default", "post", "app", false), "read hooked")
		})
	})

	e.sub(t, "a failed postStart kills the container, which restarts", func(t *testing.T) {
		p := wire.Pod{Containers: []wire.Container{{Name: "app", Image: img, Command: loop("true"),
			PostStart: &wire.Handler{Exec: sh("echo boom; exit 3")}}}}
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-postfail", "postfail", "1", p)}})
		s := e.waitStatus("uid-postfail", 60*time.Second, "restarted after the hook failed", func(s wire.PodStatus) bool {
			return len(s.Containers) == 1 && s.Containers[0].RestartCount >= 1 && s.Containers[0].LastState.Kind == wire.StateTerminated
		})
		last := s.Containers[0].LastState
		if !strings.HasPrefix(last.Message, wire.PostStartHookFailed) || !strings.Contains(last.Message, "exited with 3") || !strings.Contains(last.Message, "boom") {
			t.Errorf("last state's message %q: want the hook's failure", last.Message)
		}
		if s.Containers[0].Ready || condition(s, "Ready").Status == "True" {
			t.Errorf("a container whose postStart fails is ready: %+v", s)
		}
		seen := false
		for _, s := range e.rec.history("uid-postfail") {
			w := s.Containers[0].State
			seen = seen || (w.Kind == wire.StateWaiting && w.Reason == "PostStartHookError" && strings.Contains(w.Message, "boom"))
		}
		if !seen {
			t.Errorf("no status waiting with PostStartHookError: %+v", e.rec.history("uid-postfail"))
		}
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-postfail"}}})
	})

	e.sub(t, "preStop runs before SIGTERM, within the grace period", func(t *testing.T) {
		p := shared(wire.Pod{TerminationGracePeriodSeconds: 20, Containers: []wire.Container{
			{Name: "exec", Image: img, Command: loop(`echo "TERM after $(cat /shared/prestop)" > /shared/term`),
				PreStop: &wire.Handler{Exec: sh("echo ran > /shared/prestop")}},
			{Name: "sleep", Image: img, Command: loop("date +%s > /shared/sleep-term"),
				PreStop: &wire.Handler{SleepSeconds: 2}},
		}})
		o := podObj("uid-pre", "pre", "1", p)
		e.apply(&wire.Sync{Upserts: []wire.Object{o}})
		e.waitStatus("uid-pre", 60*time.Second, "Running", running)
		deleted := time.Now()
		o.Version, o.Pod.Deleting, o.Pod.DeletionGracePeriodSeconds = "2", true, 20
		e.apply(&wire.Sync{Upserts: []wire.Object{o}})
		e.waitStatus("uid-pre", 60*time.Second, "Terminated", func(s wire.PodStatus) bool { return s.Terminated })
		if got := e.sharedFile("uid-pre", "term"); got != "TERM after ran\n" {
			t.Errorf("the exec container's SIGTERM handler wrote %q: the preStop hook did not run before it", got)
		}
		at, err := strconv.ParseInt(strings.TrimSpace(e.sharedFile("uid-pre", "sleep-term")), 10, 64)
		if err != nil {
			t.Fatalf("the sleep container's SIGTERM handler left no time: %v", err)
		}
		if at < deleted.Unix()+2 {
			t.Errorf("SIGTERM at %d, %d s after the deletion at %d: the 2 s preStop sleep did not delay it", at, at-deleted.Unix(), deleted.Unix())
		}
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-pre"}}})
	})

	e.sub(t, "preStop time counts against the grace period", func(t *testing.T) {
		// sh as PID 1 without a trap ignores SIGTERM: only SIGKILL ends
		// it, 2 s (the minimum) after the 3 s hook in a 4 s grace period,
		// not 4 s after it.
		p := wire.Pod{TerminationGracePeriodSeconds: 4, Containers: []wire.Container{{Name: "app", Image: img,
			Command: sh("while true; do sleep 0.1; done"), PreStop: &wire.Handler{SleepSeconds: 3}}}}
		o := podObj("uid-grace", "grace", "1", p)
		e.apply(&wire.Sync{Upserts: []wire.Object{o}})
		e.waitStatus("uid-grace", 60*time.Second, "Running", running)
		deleted := time.Now()
		o.Version, o.Pod.Deleting, o.Pod.DeletionGracePeriodSeconds = "2", true, 4
		e.apply(&wire.Sync{Upserts: []wire.Object{o}})
		s := e.waitStatus("uid-grace", 60*time.Second, "Terminated", func(s wire.PodStatus) bool { return s.Terminated })
		st := s.Containers[0].State
		if st.Kind != wire.StateTerminated || st.ExitCode != 137 {
			t.Fatalf("state %+v: want killed (137)", st)
		}
		// The hook's 3 s plus the 2 s minimum: 5 s; the hook plus the
		// whole grace period would be 7 s.
		took := time.UnixMilli(st.FinishedAt).Sub(deleted)
		if took < 5*time.Second || took > 6700*time.Millisecond {
			t.Errorf("killed %s after the deletion: want the 3 s hook plus the 2 s minimum (5 s), not hook plus grace (7 s)", took)
		}
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-grace"}}})
	})

	e.sub(t, "a failed preStop is recorded and the stop goes on", func(t *testing.T) {
		p := wire.Pod{Containers: []wire.Container{{Name: "app", Image: img, Command: loop("true"),
			PreStop: &wire.Handler{Exec: sh("echo nope; exit 2")}}}}
		o := podObj("uid-prefail", "prefail", "1", p)
		e.apply(&wire.Sync{Upserts: []wire.Object{o}})
		e.waitStatus("uid-prefail", 60*time.Second, "Running", running)
		o.Version, o.Pod.Deleting, o.Pod.DeletionGracePeriodSeconds = "2", true, 10
		e.apply(&wire.Sync{Upserts: []wire.Object{o}})
		s := e.waitStatus("uid-prefail", 60*time.Second, "Terminated", func(s wire.PodStatus) bool { return s.Terminated })
		st := s.Containers[0].State
		if st.Kind != wire.StateTerminated || st.ExitCode != 0 || !strings.HasPrefix(st.Message, wire.PreStopHookFailed) || !strings.Contains(st.Message, "nope") {
			t.Errorf("state %+v: want stopped by its SIGTERM handler, with the hook's failure as message", st)
		}
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-prefail"}}})
	})

	e.sub(t, "a liveness failure runs preStop before the restart", func(t *testing.T) {
		p := shared(wire.Pod{Containers: []wire.Container{{Name: "app", Image: img, Command: loop("true"),
			LivenessProbe: &wire.Probe{Exec: sh("test ! -f /shared/sick"), PeriodSeconds: 1, FailureThreshold: 1},
			PreStop:       &wire.Handler{Exec: sh("echo stopping >> /shared/prestop")}}}})
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-live", "live", "1", p)}})
		e.waitStatus("uid-live", 60*time.Second, "Running", running)
		if err := os.WriteFile(filepath.Join(e.cfg.StateDir, "pods", "uid-live", "volumes", "shared", "sick"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		e.waitStatus("uid-live", 60*time.Second, "restarted", func(s wire.PodStatus) bool { return s.Containers[0].RestartCount >= 1 })
		if got := e.sharedFile("uid-live", "prestop"); !strings.HasPrefix(got, "stopping\n") {
			t.Errorf("preStop left %q: it did not run before the liveness restart", got)
		}
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-live"}}})
	})

	e.sub(t, "a preStop httpGet reaches the pod's own address", func(t *testing.T) {
		// busybox httpd runs a CGI script that keeps the request's
		// environment: path, user agent and headers.
		p := shared(wire.Pod{Containers: []wire.Container{{Name: "web", Image: img,
			Command: sh(`mkdir -p /www/cgi-bin; printf '#!/bin/sh\necho "Content-Type: text/plain"\necho\nenv > /shared/req\n' > /www/cgi-bin/hook; ` +
				`chmod +x /www/cgi-bin/hook; httpd -p 8080 -h /www; trap 'exit 0' TERM; while true; do sleep 0.1; done`),
			ReadinessProbe: &wire.Probe{TCPPort: 8080, PeriodSeconds: 1},
			PreStop:        &wire.Handler{HTTPGet: &wire.HTTPGet{Path: "/cgi-bin/hook", Port: 8080, Headers: [][2]string{{"X-Hook", "stop"}}}},
		}}})
		o := podObj("uid-http", "http", "1", p)
		e.apply(&wire.Sync{Upserts: []wire.Object{o}})
		e.waitStatus("uid-http", 60*time.Second, "Running and ready", running)
		o.Version, o.Pod.Deleting, o.Pod.DeletionGracePeriodSeconds = "2", true, 10
		e.apply(&wire.Sync{Upserts: []wire.Object{o}})
		e.waitStatus("uid-http", 60*time.Second, "Terminated", func(s wire.PodStatus) bool { return s.Terminated })
		req := e.sharedFile("uid-http", "req")
		for _, want := range []string{"REQUEST_URI=/cgi-bin/hook", "HTTP_X_HOOK=stop", "HTTP_USER_AGENT=kube-lifecycle/"} {
			if !strings.Contains(req, want) {
				t.Errorf("the hook's request lacks %s:\n%s", want, req)
			}
		}
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-http"}}})
	})
}

func TestSidecars(t *testing.T) {
	e := start(t)
	img := e.images[0].Ref
	e.run()

	e.sub(t, "a Job's sidecar starts first and stops once the main container completed", func(t *testing.T) {
		// The job fails (exit 9 or 8) if it starts before the sidecar's
		// startup probe passed or before the init container ran.
		p := shared(wire.Pod{RestartPolicy: "Never", TerminationGracePeriodSeconds: 10,
			InitContainers: []wire.Container{
				{Name: "setup", Image: img, Command: sh("echo setup > /shared/setup")},
				{Name: "proxy", Image: img, Sidecar: true,
					Command:        sh(`sleep 1; touch /shared/proxy-up; echo proxy running; trap 'echo proxy stopping; echo proxy >> /shared/order; exit 0' TERM; while true; do sleep 0.1; done`),
					StartupProbe:   &wire.Probe{Exec: sh("test -f /shared/proxy-up"), PeriodSeconds: 1, FailureThreshold: 30},
					ReadinessProbe: &wire.Probe{Exec: sh("test -f /shared/proxy-up"), PeriodSeconds: 1}},
			},
			Containers: []wire.Container{{Name: "job", Image: img,
				Command: sh("test -f /shared/proxy-up || exit 9; test -f /shared/setup || exit 8; echo job done; sleep 2; echo job >> /shared/order")}},
		})
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-job", "job", "1", p)}})
		s := e.waitStatus("uid-job", 90*time.Second, "Succeeded", func(s wire.PodStatus) bool { return s.Phase == "Succeeded" || s.Phase == "Failed" })
		if s.Phase != "Succeeded" {
			t.Fatalf("phase %s: %+v", s.Phase, s)
		}
		s = e.waitStatus("uid-job", 60*time.Second, "the sidecar terminated", func(s wire.PodStatus) bool {
			return findStatus(s.InitContainers, "proxy").State.Kind == wire.StateTerminated
		})
		if px := findStatus(s.InitContainers, "proxy"); px.Ready || px.State.ExitCode != 0 {
			t.Errorf("the stopped sidecar: %+v", px)
		}
		together := false
		for _, h := range e.rec.history("uid-job") {
			px, job := findStatus(h.InitContainers, "proxy"), findStatus(h.Containers, "job")
			if job.State.Kind == wire.StateRunning && px.State.Kind == wire.StateRunning {
				together = together || (h.Phase == "Running" && px.Started && px.Ready)
			}
			if job.State.Kind != 0 && job.State.Reason != "PodInitializing" && px.State.Kind == wire.StateWaiting {
				t.Errorf("the job went ahead of its sidecar: %+v", h)
			}
		}
		if !together {
			t.Errorf("no status shows the sidecar running, started and ready beside the job: %+v", e.rec.history("uid-job"))
		}
		if got := e.sharedFile("uid-job", "order"); got != "job\nproxy\n" {
			t.Errorf("order of ends %q, want the job then the sidecar", got)
		}
		for id, st := range e.tasks() {
			if strings.HasPrefix(id, "proxy-") && strings.HasSuffix(st, "RUNNING") {
				t.Errorf("containerd still runs the sidecar: %s %s", id, st)
			}
		}
		if l := e.log("default", "job", "proxy", false); !strings.Contains(l, "proxy running") || !strings.Contains(l, "proxy stopping") {
			t.Errorf("the sidecar's log: %q", l)
		}
		if l := e.log("default", "job", "job", false); !strings.Contains(l, "job done") {
			t.Errorf("the job's log: %q", l)
		}
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-job"}}})
	})

	e.sub(t, "a sidecar restarts under restartPolicy Never, counts in readiness and stops last", func(t *testing.T) {
		p := shared(wire.Pod{RestartPolicy: "Never", TerminationGracePeriodSeconds: 10,
			InitContainers: []wire.Container{{Name: "proxy", Image: img, Sidecar: true,
				Command:        sh(`if [ ! -f /shared/once ]; then touch /shared/once; exit 1; fi; trap 'echo proxy >> /shared/order; exit 0' TERM; while true; do sleep 0.1; done`),
				ReadinessProbe: &wire.Probe{Exec: sh("test -f /shared/ready"), PeriodSeconds: 1}}},
			Containers: []wire.Container{{Name: "app", Image: img, Command: loop("sleep 1; echo app >> /shared/order")}},
		})
		o := podObj("uid-side", "side", "1", p)
		e.apply(&wire.Sync{Upserts: []wire.Object{o}})
		s := e.waitStatus("uid-side", 60*time.Second, "the sidecar restarted and running", func(s wire.PodStatus) bool {
			px := findStatus(s.InitContainers, "proxy")
			return s.Phase == "Running" && px.RestartCount >= 1 && px.State.Kind == wire.StateRunning && px.Started &&
				findStatus(s.Containers, "app").State.Kind == wire.StateRunning
		})
		if r := condition(s, "Ready"); r.Status != "False" || !strings.Contains(r.Message, "proxy") {
			t.Errorf("Ready %+v while the sidecar is not ready", r)
		}
		if err := os.WriteFile(filepath.Join(e.cfg.StateDir, "pods", "uid-side", "volumes", "shared", "ready"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		e.waitStatus("uid-side", 30*time.Second, "Ready", func(s wire.PodStatus) bool {
			return condition(s, "Ready").Status == "True" && findStatus(s.InitContainers, "proxy").Ready
		})
		o.Version, o.Pod.Deleting, o.Pod.DeletionGracePeriodSeconds = "2", true, 10
		e.apply(&wire.Sync{Upserts: []wire.Object{o}})
		e.waitStatus("uid-side", 60*time.Second, "Terminated", func(s wire.PodStatus) bool { return s.Terminated })
		if got := e.sharedFile("uid-side", "order"); got != "app\nproxy\n" {
			t.Errorf("order of ends %q, want the main container, then the sidecar", got)
		}
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-side"}}})
	})

	e.sub(t, "a sidecar's postStart hook holds back the next container", func(t *testing.T) {
		// The main container writes whether the sidecar's hook had
		// returned when it started.
		p := shared(wire.Pod{RestartPolicy: "Never",
			InitContainers: []wire.Container{{Name: "proxy", Image: img, Sidecar: true, Command: loop("true"),
				PostStart: &wire.Handler{Exec: sh("sleep 1; touch /shared/hooked")}}},
			Containers: []wire.Container{{Name: "app", Image: img, Command: loop("true")}},
		})
		p.Containers[0].Command = sh("if [ -f /shared/hooked ]; then echo after > /shared/app; else echo before > /shared/app; fi; trap 'exit 0' TERM; while true; do sleep 0.1; done")
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-sidehook", "sidehook", "1", p)}})
		s := e.waitStatus("uid-sidehook", 60*time.Second, "Running", func(s wire.PodStatus) bool {
			return s.Phase == "Running" && findStatus(s.Containers, "app").State.Kind == wire.StateRunning
		})
		e.waitFor(10*time.Second, "the main container's note", func() bool { return e.sharedFile("uid-sidehook", "app") != "" })
		if got := e.sharedFile("uid-sidehook", "app"); got != "after\n" {
			t.Errorf("the main container started %s the sidecar's postStart hook returned", strings.TrimSpace(got))
		}
		if px := findStatus(s.InitContainers, "proxy"); !px.Started || !px.Ready || px.State.Kind != wire.StateRunning {
			t.Errorf("sidecar status %+v: want running, started and ready", px)
		}
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-sidehook"}}})
	})
}
