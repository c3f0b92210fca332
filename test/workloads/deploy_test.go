package workloads

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"outpost.dev/test/stack"
)

// deployment is a Deployment of n busybox replicas pinned to the edge node.
func deployment(ns, name, image string, n int) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  replicas: %[4]d
  selector: {matchLabels: {app: %[2]s}}
  template:
    metadata: {labels: {app: %[2]s}}
    spec:
      nodeSelector: {kubernetes.io/hostname: %[5]s}
      terminationGracePeriodSeconds: 2
      containers:
      - name: app
        image: %[3]s
        command: [sh, -c, 'echo "started $OUTPOST_TEST_IMAGE"; exec sleep 3600']
`, ns, name, image, n, node)
}

// TestDeploymentLifecycle: a Deployment of 3 replicas runs as 3 tasks in
// containerd and 3 Running, Ready pods; scaled to 1, two tasks stop and
// their containers go; a new image rolls out; deleted, nothing of it is
// left in containerd.
func TestDeploymentLifecycle(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 4*time.Minute)
	const ns, name = "wl-deploy", "web"
	newNamespace(t, ctx, ns)
	seenIDs := map[string]bool{}
	seenUIDs := map[string]bool{}
	remember := func(cs []ctrContainer) {
		for _, c := range cs {
			seenIDs[c.ID] = true
			seenUIDs[c.Labels["dev.outpost.pod.uid"]] = true
		}
	}

	// 3 replicas.
	start := time.Now()
	st.Apply(t, ctx, deployment(ns, name, image1, 3))
	st.Kubectl(t, ctx, "-n", ns, "rollout", "status", "deployment/"+name, "--timeout=120s")
	t.Logf("3 replicas available after %v", time.Since(start).Round(time.Millisecond))
	pods, err := listPods(ctx, ns, "app="+name)
	if err != nil {
		t.Fatal(err)
	}
	uids := map[string]bool{}
	for i := range pods {
		p := &pods[i]
		if !runningReady(p) || p.Spec.NodeName != node {
			t.Errorf("pod %s on %q: %s", p.Name, p.Spec.NodeName, podState(p))
		}
		if pr := statusProblems(p); len(pr) > 0 {
			t.Errorf("pod %s status: %v", p.Name, pr)
		}
		if cs := p.Status.ContainerStatuses; len(cs) != 1 || cs[0].Image != image1 {
			t.Errorf("pod %s container status %+v", p.Name, p.Status.ContainerStatuses)
		}
		uids[string(p.UID)] = true
	}
	if len(uids) != 3 {
		t.Fatalf("want 3 pods, %s", podsState(pods))
	}
	// Through containerd: 3 running tasks, one per pod, nothing else.
	var cs []ctrContainer
	stack.WaitFor(t, ctx, 30*time.Second, "3 running tasks in containerd", func() (bool, string) {
		cs, err = containersOf(ctx, ns)
		if err != nil {
			return false, err.Error()
		}
		return len(running(cs)) == 3 && len(cs) == 3, describeContainers(cs)
	})
	remember(cs)
	// What the leftovers check below looks for is there while they run:
	// a snapshot and a rootfs mount per container, a directory per pod.
	{
		var ids, us []string
		for _, c := range cs {
			ids, us = append(ids, c.ID), append(us, c.Labels["dev.outpost.pod.uid"])
		}
		left, err := leftovers(ctx, ids, us)
		if err != nil {
			t.Fatal(err)
		}
		kinds := map[string]int{}
		for _, l := range left {
			kinds[strings.Fields(l)[0]]++
		}
		if kinds["snapshot"] != 3 || kinds["mount"] < 3 || kinds["directory"] != 3 || kinds["logs"] != 3 {
			t.Errorf("running pods hold %v, want 3 snapshots, 3 or more mounts, 3 pod and 3 log directories: %v", kinds, left)
		}
	}
	for _, c := range cs {
		if !uids[c.Labels["dev.outpost.pod.uid"]] {
			t.Errorf("container %s belongs to no pod of the deployment: %v", c.ID, c.Labels)
		}
		if c.Image != image1 {
			t.Errorf("container %s runs %s, want %s", c.ID, c.Image, image1)
		}
	}
	for i := range pods { // the API's containerID is containerd's
		id := strings.TrimPrefix(pods[i].Status.ContainerStatuses[0].ContainerID, "containerd://")
		if !seenIDs[id] {
			t.Errorf("pod %s reports container %s, which containerd does not run", pods[i].Name, id)
		}
	}

	// Scale to 1: two tasks stop, their containers are removed.
	st.Kubectl(t, ctx, "-n", ns, "scale", "deployment/"+name, "--replicas=1")
	stack.WaitFor(t, ctx, 90*time.Second, "one pod left in the API", func() (bool, string) {
		ps, err := listPods(ctx, ns, "app="+name)
		if err != nil {
			return false, err.Error()
		}
		return len(ps) == 1 && runningReady(&ps[0]), podsState(ps)
	})
	stack.WaitFor(t, ctx, 30*time.Second, "one container with a running task left in containerd", func() (bool, string) {
		cs, err = containersOf(ctx, ns)
		if err != nil {
			return false, err.Error()
		}
		return len(cs) == 1 && cs[0].Task == "RUNNING", describeContainers(cs)
	})
	tasks, err := ctrTasks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for id := range seenIDs {
		if id != cs[0].ID && tasks[id] != "" {
			t.Errorf("task %s of a scaled-away pod still exists (%s)", id, tasks[id])
		}
	}

	// Rolling update to :2.
	st.Kubectl(t, ctx, "-n", ns, "set", "image", "deployment/"+name, "app="+image2)
	st.Kubectl(t, ctx, "-n", ns, "rollout", "status", "deployment/"+name, "--timeout=120s")
	var pods2 []string
	stack.WaitFor(t, ctx, 90*time.Second, "one Running pod on "+image2, func() (bool, string) {
		ps, err := listPods(ctx, ns, "app="+name)
		if err != nil {
			return false, err.Error()
		}
		pods2 = nil
		for i := range ps {
			pods2 = append(pods2, ps[i].Name)
		}
		return len(ps) == 1 && runningReady(&ps[0]) && ps[0].Status.ContainerStatuses[0].Image == image2, podsState(ps)
	})
	stack.WaitFor(t, ctx, 30*time.Second, "containerd runs only "+image2, func() (bool, string) {
		cs, err = containersOf(ctx, ns)
		if err != nil {
			return false, err.Error()
		}
		return len(cs) == 1 && cs[0].Task == "RUNNING" && cs[0].Image == image2, describeContainers(cs)
	})
	remember(cs)
	// The new image's content, read inside the running container.
	if out, err := ctrExec(ctx, cs[0].ID, "cat", "/etc/outpost-test-image"); err != nil || strings.TrimSpace(out) != "2" {
		t.Errorf("/etc/outpost-test-image in the updated container: %q, %v", out, err)
	}
	if out := st.Kubectl(t, ctx, "-n", ns, "logs", pods2[0]); !strings.Contains(out, "started 2") {
		t.Errorf("kubectl logs of the updated pod: %q", out)
	}

	// Delete: nothing of it stays in containerd.
	st.Kubectl(t, ctx, "-n", ns, "delete", "deployment", name)
	stack.WaitFor(t, ctx, 90*time.Second, "no pods in the API", func() (bool, string) {
		ps, err := listPods(ctx, ns, "")
		if err != nil {
			return false, err.Error()
		}
		return len(ps) == 0, podsState(ps)
	})
	var ids, us []string
	for id := range seenIDs {
		ids = append(ids, id)
	}
	for u := range seenUIDs {
		us = append(us, u)
	}
	stack.WaitFor(t, ctx, 30*time.Second, "nothing left in containerd", func() (bool, string) {
		cs, err := containersOf(ctx, ns)
		if err != nil {
			return false, err.Error()
		}
		tasks, err := ctrTasks(ctx)
		if err != nil {
			return false, err.Error()
		}
		var taskLeft []string
		for _, id := range ids {
			if tasks[id] != "" {
				taskLeft = append(taskLeft, id)
			}
		}
		left, err := leftovers(ctx, ids, us)
		if err != nil {
			return false, err.Error()
		}
		return len(cs) == 0 && len(taskLeft) == 0 && len(left) == 0,
			fmt.Sprintf("%s; tasks %v; %v", describeContainers(cs), taskLeft, left)
	})
}
