package pods_test

import (
	"strings"
	"testing"
	"time"

	"outpost.dev/wire"
)

// TestEphemeralContainers adds kubectl debug's containers to a running
// pod: one with a target sees the target's processes, one without has a
// PID namespace of its own; each runs once, and the pod's container is
// neither restarted nor replaced.
func TestEphemeralContainers(t *testing.T) {
	e := start(t)
	img := e.images[0].Ref
	e.run()

	p := wire.Pod{Containers: []wire.Container{{Name: "app", Image: img, Command: []string{"sh", "-c", "exec sleep 12345"}}},
		InitContainers: []wire.Container{{Name: "setup", Image: img, Command: []string{"true"}}}}
	e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-dbg", "dbg", "1", p)}})
	before := e.waitStatus("uid-dbg", 90*time.Second, "running", running)
	appID := before.Containers[0].ContainerID

	debug := func(name, target string) wire.EphemeralContainer {
		return wire.EphemeralContainer{Target: target, Container: wire.Container{Name: name, Image: img,
			Command: []string{"sh", "-c", "ps; echo END"}, Stdin: true, TTY: name == "dbg-tty"}}
	}
	finished := func(name string) func(s wire.PodStatus) bool {
		return func(s wire.PodStatus) bool {
			for _, c := range s.EphemeralContainers {
				if c.Name == name {
					return c.State.Kind == wire.StateTerminated
				}
			}
			return false
		}
	}
	p.EphemeralContainers = []wire.EphemeralContainer{debug("dbg-target", "app")}
	e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-dbg", "dbg", "2", p)}})
	s := e.waitStatus("uid-dbg", 90*time.Second, "dbg-target finished", finished("dbg-target"))
	if out := e.log("default", "dbg", "dbg-target", false); !strings.Contains(out, "sleep 12345") || !strings.Contains(out, "END") {
		t.Errorf("the debug container with target app printed %q; want the target's sleep 12345", out)
	}
	if st := s.EphemeralContainers[0].State; st.ExitCode != 0 || st.Reason != "Completed" || s.EphemeralContainers[0].Ready {
		t.Errorf("dbg-target status %+v, want Completed, not ready", s.EphemeralContainers[0])
	}
	if s.Phase != "Running" || s.Containers[0].ContainerID != appID || s.Containers[0].RestartCount != 0 || !s.Containers[0].Ready {
		t.Errorf("app after debugging: phase %s, %+v; want %s running, never restarted", s.Phase, s.Containers[0], appID)
	}

	// Without a target: a PID namespace of its own; with a terminal.
	p.EphemeralContainers = append(p.EphemeralContainers, debug("dbg-tty", ""))
	e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-dbg", "dbg", "3", p)}})
	s = e.waitStatus("uid-dbg", 90*time.Second, "dbg-tty finished", finished("dbg-tty"))
	if out := e.log("default", "dbg", "dbg-tty", false); strings.Contains(out, "sleep 12345") || !strings.Contains(out, "END") {
		t.Errorf("the debug container without target printed %q; want its own processes only", out)
	}
	if len(s.EphemeralContainers) != 2 || s.EphemeralContainers[0].Name != "dbg-target" || s.EphemeralContainers[0].State.Kind != wire.StateTerminated {
		t.Errorf("ephemeral statuses %+v", s.EphemeralContainers)
	}
	// The exited dbg-target was not started again: setup, app, and one of
	// each.
	if ids := e.podContainers("uid-dbg"); len(ids) != 4 {
		t.Errorf("pod containers %v, want setup, app and one attempt of each debug container", ids)
	}
	if s.Containers[0].ContainerID != appID || s.Containers[0].RestartCount != 0 {
		t.Errorf("app %+v, want %s never restarted", s.Containers[0], appID)
	}

	// A target that does not run (an init container that finished): it
	// waits, saying why.
	p.EphemeralContainers = append(p.EphemeralContainers, debug("dbg-wait", "setup"))
	e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-dbg", "dbg", "4", p)}})
	s = e.waitStatus("uid-dbg", 60*time.Second, "dbg-wait waiting", func(s wire.PodStatus) bool {
		return len(s.EphemeralContainers) == 3 && s.EphemeralContainers[2].State.Kind == wire.StateWaiting &&
			strings.Contains(s.EphemeralContainers[2].State.Message, `target container "setup" is not running`)
	})
	if s.EphemeralContainers[2].State.Reason != "CreateContainerError" {
		t.Errorf("dbg-wait %+v, want CreateContainerError", s.EphemeralContainers[2])
	}

	e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-dbg"}}})
	e.waitFor(60*time.Second, "the pod's containers removed", func() bool { return len(e.podContainers("uid-dbg")) == 0 })
}
