package pods_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"outpost.dev/wire"
)

// TestInterruptedStartIsRetried: the agent died (kill -9, power cut) in
// the middle of starting a container, after containerd began creating its
// task: the container is there, never started, and containerd's state for
// its task (the bundle directory) is left behind. The next agent starts
// the same attempt under a new container ID, at once: no RunContainerError,
// no restart counted, nothing of the old record kept.
func TestInterruptedStartIsRetried(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	const uid = "uid-interrupted"
	e.run()
	e.apply(&wire.Sync{Upserts: []wire.Object{podObj(uid, "interrupted", "1", sleeper(e.images[0].Ref))}})
	s := e.waitStatus(uid, 60*time.Second, "Running", running)
	old := strings.TrimPrefix(s.Containers[0].ContainerID, "containerd://")
	e.stop()

	// Make it the record an interrupted start leaves: no task, no start
	// time, the task's bundle directory still there.
	if _, err := e.ctrd.Ctr(ctx, "-n", "outpost", "tasks", "kill", "-s", "SIGKILL", old); err != nil {
		t.Fatal(err)
	}
	e.waitFor(10*time.Second, "the task stopped", func() bool { return !strings.HasSuffix(e.tasks()[old], "RUNNING") })
	if _, err := e.ctrd.Ctr(ctx, "-n", "outpost", "tasks", "delete", old); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ctrd.Ctr(ctx, "-n", "outpost", "containers", "label", old, "dev.outpost.started-at="); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(e.ctrd.State, "io.containerd.runtime.v2.task", "outpost", old)
	if err := os.MkdirAll(bundle, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(bundle) })
	seen := len(e.rec.history(uid))

	e.run()
	s = e.waitStatus(uid, 60*time.Second, "Running in another container", func(s wire.PodStatus) bool {
		return running(s) && s.Containers[0].ContainerID != "containerd://"+old
	})
	c := s.Containers[0]
	if now := strings.TrimPrefix(c.ContainerID, "containerd://"); now == old || c.RestartCount != 0 {
		t.Errorf("running as %s restartCount %d; was %s: want a new ID for the same attempt", now, c.RestartCount, old)
	}
	for _, h := range e.rec.history(uid)[seen:] {
		for _, cs := range h.Containers {
			if cs.State.Reason == "RunContainerError" || cs.State.Reason == "CreateContainerError" {
				t.Errorf("status on the way: %s: %s", cs.State.Reason, cs.State.Message)
			}
		}
	}
	if ids := e.podContainers(uid); len(ids) != 1 {
		t.Errorf("containers of the pod: %v, want only the running one", ids)
	}
}
