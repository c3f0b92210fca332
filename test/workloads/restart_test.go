package workloads

import (
	"fmt"
	"testing"
	"time"

	"outpost.dev/test/stack"
)

// TestContainerdRestart stops containerd under the running agent: the node
// reports ContainerRuntimeReady=False (ContainerdUnreachable) while the
// agent retries; once containerd is back the condition clears, the running
// pods are still running (their shims survived) and a pod created while
// containerd was down starts.
//
// Not parallel: containerd is shared by every test, so this one runs
// alone, before the parallel ones.
func TestContainerdRestart(t *testing.T) {
	need(t)
	ctx := ctxFor(t, 4*time.Minute)
	const ns = "wl-restart"
	newNamespace(t, ctx, ns)
	st.Apply(t, ctx, deployment(ns, "steady", image1, 2))
	st.Kubectl(t, ctx, "-n", ns, "rollout", "status", "deployment/steady", "--timeout=120s")
	var before []ctrContainer
	stack.WaitFor(t, ctx, 30*time.Second, "2 running tasks", func() (bool, string) {
		cs, err := containersOf(ctx, ns)
		if err != nil {
			return false, err.Error()
		}
		before = running(cs)
		return len(before) == 2 && len(cs) == 2, describeContainers(cs)
	})
	if c, err := nodeCondition(ctx, "ContainerRuntimeReady"); err != nil || (c != nil && c.Status != "True") {
		t.Fatalf("ContainerRuntimeReady before the restart: %+v, %v", c, err)
	}

	if err := st.Containerd.StopDaemon(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted { // the other tests need it
			_ = st.Containerd.StartDaemon(ctx)
		}
	})
	stack.WaitFor(t, ctx, 60*time.Second, "ContainerRuntimeReady=False on the node", func() (bool, string) {
		c, err := nodeCondition(ctx, "ContainerRuntimeReady")
		if err != nil || c == nil {
			return false, fmt.Sprint(c, err)
		}
		return c.Status == "False" && c.Reason == "ContainerdUnreachable", fmt.Sprintf("%+v", *c)
	})
	// While containerd is down: a new pod is accepted and waits; a
	// deleted pod waits for its containers to be stopped.
	st.Apply(t, ctx, pod(ns, "latecomer", image1, "exec sleep 3600", "", ""))
	steady, err := listPods(ctx, ns, "app=steady")
	if err != nil || len(steady) != 2 {
		t.Fatalf("%v %v", podsState(steady), err)
	}
	doomed := steady[0]
	st.Kubectl(t, ctx, "-n", ns, "delete", "pod", doomed.Name, "--wait=false")
	// The link drops and comes back (here: the relay restarts) while
	// containerd is still down: the hello rewrites the Node, and the
	// condition must be there again afterwards, not lost with the link.
	if err := relay.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := relay.Start(ctx); err != nil {
		t.Fatal(err)
	}
	reconnected := time.Now().Truncate(time.Second)
	stack.WaitFor(t, ctx, 90*time.Second, "ContainerRuntimeReady=False written after the agent reconnected", func() (bool, string) {
		c, err := nodeCondition(ctx, "ContainerRuntimeReady")
		if err != nil || c == nil {
			return false, fmt.Sprint(c, err)
		}
		return c.Status == "False" && !c.LastHeartbeatTime.Time.Before(reconnected), fmt.Sprintf("%+v", *c)
	})
	if s, err := st.NodeReady(ctx, node); err != nil || s != "True" {
		t.Errorf("node Ready is %q (%v) while only containerd is down: the agent is still there", s, err)
	}

	if err := st.Containerd.StartDaemon(ctx); err != nil {
		t.Fatal(err)
	}
	restarted = true
	stack.WaitFor(t, ctx, 90*time.Second, "ContainerRuntimeReady=True again", func() (bool, string) {
		c, err := nodeCondition(ctx, "ContainerRuntimeReady")
		if err != nil {
			return false, err.Error()
		}
		return c == nil || c.Status == "True", fmt.Sprintf("%+v", c)
	})
	waitRunning(t, ctx, ns, "latecomer", 90*time.Second)
	stack.WaitFor(t, ctx, 60*time.Second, "every pod Running and Ready", func() (bool, string) {
		ps, err := listPods(ctx, ns, "")
		if err != nil {
			return false, err.Error()
		}
		ok := len(ps) == 3
		for i := range ps {
			ok = ok && runningReady(&ps[i])
		}
		return ok, podsState(ps)
	})
	var after []ctrContainer
	stack.WaitFor(t, ctx, 30*time.Second, "3 running tasks", func() (bool, string) {
		cs, err := containersOf(ctx, ns)
		if err != nil {
			return false, err.Error()
		}
		after = running(cs)
		return len(after) == 3 && len(cs) == 3, describeContainers(cs)
	})
	// The surviving pod kept its container: same container, no restart;
	// the deleted pod's container is gone.
	ids := map[string]bool{}
	for _, c := range after {
		ids[c.ID] = true
	}
	for _, c := range before {
		deleted := c.Labels["dev.outpost.pod.uid"] == string(doomed.UID)
		if ids[c.ID] == deleted {
			t.Errorf("container %s (of the deleted pod: %v) across the containerd restart: %s", c.ID, deleted, describeContainers(after))
		}
	}
	if _, err := getPod(ctx, ns, doomed.Name); !isNotFound(err) {
		t.Errorf("pod deleted while containerd was down still in the API: %v", err)
	}
	ps, err := listPods(ctx, ns, "app=steady")
	if err != nil {
		t.Fatal(err)
	}
	for i := range ps {
		if c := ps[i].Status.ContainerStatuses; len(c) != 1 || c[0].RestartCount != 0 {
			t.Errorf("pod %s restarted across the containerd restart: %s", ps[i].Name, podState(&ps[i]))
		}
	}
	st.Kubectl(t, ctx, "-n", ns, "delete", "deployment", "steady", "--wait=false")
}
