package autonomy

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/test/stack"
)

// relayDown stops the relay and makes sure a failing test leaves it
// running for the next one.
func relayDown(t *testing.T) {
	t.Helper()
	if err := relay.Stop(); err != nil {
		t.Fatalf("stop the relay: %v", err)
	}
	t.Cleanup(func() {
		if relay.Proc.Exited() {
			if err := relay.Start(context.Background()); err != nil {
				t.Errorf("restart the relay: %v", err)
			}
		}
	})
}

// TestRebootWhileOffline stops the agent, kills and deletes its tasks and
// unmounts its pods' namespaces (a reboot), and starts it with the relay
// down: its pods run again from the store alone, ConfigMap volume
// included. When the relay returns, the API catches up with the new
// containers.
func TestRebootWhileOffline(t *testing.T) {
	needStack(t)
	ctx := ctxFor(t, 5*time.Minute)
	e := newEdge(t, ctx, "auto-boot", false)
	cm := createConfigMap(t, ctx, "boot-cfg", map[string]string{"greeting": "hello from the store"})
	plain := podSpec("boot-plain", e.name, "sleep", "3600")
	withCM := podSpec("boot-cm", e.name, "sleep", "3600")
	withCM.Spec.Volumes = []corev1.Volume{
		{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: cm.Name}}}},
		{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
	}
	withCM.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "cfg", MountPath: "/cfg"}, {Name: "scratch", MountPath: "/scratch"}}
	hostNet := podSpec("boot-hostnet", e.name, "sleep", "3600")
	hostNet.Spec.HostNetwork = true
	names := []string{plain.Name, withCM.Name, hostNet.Name}
	uids := map[string]string{}
	for _, p := range []*corev1.Pod{plain, withCM, hostNet} {
		uids[p.Name] = string(createPod(t, ctx, p).UID)
	}
	stack.WaitFor(t, ctx, 2*time.Minute, "pods Running in the API", func() (bool, string) { return runningInAPI(ctx, names...) })
	// The pod network: an address in the Node's pod CIDR before the reboot.
	var podCIDR *net.IPNet
	stack.WaitFor(t, ctx, time.Minute, "a pod IP in the Node's pod CIDR", func() (bool, string) {
		n, err := st.CP.Client().CoreV1().Nodes().Get(ctx, e.name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if _, podCIDR, err = net.ParseCIDR(n.Spec.PodCIDR); err != nil {
			return false, "node spec.podCIDR " + n.Spec.PodCIDR
		}
		p, err := apiPod(ctx, plain.Name)
		if err != nil {
			return false, err.Error()
		}
		ip := net.ParseIP(p.Status.PodIP)
		return ip != nil && podCIDR.Contains(ip), "podIP " + p.Status.PodIP
	})
	old := map[string]string{}
	for _, n := range names {
		p, err := apiPod(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		old[n], _ = containerID(p)
	}

	relayDown(t)
	if err := e.agent.Stop(); err != nil {
		t.Fatal(err)
	}
	e.reboot(t, ctx)
	start := time.Now()
	if err := e.agent.Start(); err != nil {
		t.Fatal(err)
	}
	now := map[string]string{}
	stack.WaitFor(t, ctx, 2*time.Minute, "every pod running again with the relay down", func() (bool, string) {
		s, err := e.state(ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, n := range names {
			c, ok := s.latest(uids[n], "app")
			if !ok || c.ID == old[n] || s.tasks[c.ID].Status != "RUNNING" {
				return false, fmt.Sprintf("%s: latest %+v, task %+v", n, c, s.tasks[c.ID])
			}
			now[n] = c.ID
		}
		return true, ""
	})
	t.Logf("3 pods running again %s after the agent started offline", time.Since(start).Round(100*time.Millisecond))
	if !relay.Proc.Exited() {
		t.Fatal("the relay is running: the test is not offline")
	}
	// The ConfigMap volume was rebuilt from the store.
	out, err := st.Containerd.Ctr(ctx, "-n", e.ctrNS, "tasks", "exec", "--exec-id", "check", now[withCM.Name], "cat", "/cfg/greeting")
	if err != nil || out != "hello from the store" {
		t.Errorf("/cfg/greeting in the restarted pod: %q, %v", out, err)
	}
	// The network came back from the store too: the pod has an address in
	// the CIDR the agent stored, with the link down.
	out, err = st.Containerd.Ctr(ctx, "-n", e.ctrNS, "tasks", "exec", "--exec-id", "ipcheck", now[plain.Name], "ip", "-4", "-o", "addr", "show", "eth0")
	var podIP string
	if f := strings.Fields(out); err == nil && len(f) > 3 {
		podIP, _, _ = strings.Cut(f[3], "/")
	}
	if ip := net.ParseIP(podIP); ip == nil || !podCIDR.Contains(ip) {
		t.Errorf("eth0 of the restarted pod: %q, %v; want an address in %s", out, err, podCIDR)
	}
	for n, id := range now {
		if c, _ := parseID(id); c.Attempt != 1 {
			t.Errorf("%s restarted as attempt %d, want 1 (a restart of attempt 0)", n, c.Attempt)
		}
	}

	if err := relay.Start(ctx); err != nil {
		t.Fatal(err)
	}
	stack.WaitFor(t, ctx, 2*time.Minute, "the API showing the restarted containers", func() (bool, string) {
		if ok, msg := runningInAPI(ctx, names...); !ok {
			return false, msg
		}
		for _, n := range names {
			p, err := apiPod(ctx, n)
			if err != nil {
				return false, err.Error()
			}
			id, rc := containerID(p)
			if id != now[n] || rc != 1 {
				return false, fmt.Sprintf("%s: API has %s restartCount %d, containerd runs %s", n, id, rc, now[n])
			}
			if n == plain.Name && p.Status.PodIP != podIP {
				return false, fmt.Sprintf("%s: API has podIP %s, the pod has %s", n, p.Status.PodIP, podIP)
			}
		}
		return true, ""
	})
}

// TestOfflineChangesConverge changes the cluster while the relay is down:
// a Deployment scaled from 4 to 1, a bare pod force-deleted, a new one
// created. After the relay returns, containerd runs exactly the desired
// pods, holds no container of the others, and the API has no pod stuck
// terminating.
func TestOfflineChangesConverge(t *testing.T) {
	needStack(t)
	ctx := ctxFor(t, 5*time.Minute)
	e := newEdge(t, ctx, "auto-conv", false)
	kc := st.CP.Client()
	replicas := int32(4)
	tmpl := podSpec("", e.name, "sleep", "3600")
	tmpl.Labels = map[string]string{"app": "conv-web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "conv-web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: tmpl.Labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec},
		},
	}
	if _, err := kc.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kc.AppsV1().Deployments(ns).Delete(context.Background(), dep.Name, metav1.DeleteOptions{}) })
	createPod(t, ctx, podSpec("conv-keep", e.name, "sleep", "3600"))
	doomed := createPod(t, ctx, podSpec("conv-doomed", e.name, "sleep", "3600"))

	// desired lists the node's pods not being deleted, by name → UID.
	desired := func() (map[string]string, []string, error) {
		l, err := kc.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + e.name})
		if err != nil {
			return nil, nil, err
		}
		want := map[string]string{}
		var terminating []string
		for _, p := range l.Items {
			if p.DeletionTimestamp != nil {
				terminating = append(terminating, p.Name)
				continue
			}
			want[p.Name] = string(p.UID)
		}
		return want, terminating, nil
	}
	// exact says whether containerd runs exactly want, one running task
	// each, and holds no container of any other pod.
	exact := func(want map[string]string) (bool, string) {
		s, err := e.state(ctx)
		if err != nil {
			return false, err.Error()
		}
		var wantH []string
		for _, uid := range want {
			wantH = append(wantH, podHash(uid))
		}
		slices.Sort(wantH)
		var extra []string
		for h := range s.byPod {
			if !slices.Contains(wantH, h) {
				extra = append(extra, h)
			}
		}
		got := s.runningPods()
		for _, h := range got {
			if len(s.running[h]) != 1 {
				return false, fmt.Sprintf("pod %s has %d running tasks", h, len(s.running[h]))
			}
		}
		if !slices.Equal(got, wantH) || len(extra) > 0 {
			return false, fmt.Sprintf("running %v, want %v; containers of other pods: %v", got, wantH, extra)
		}
		return true, ""
	}
	stack.WaitFor(t, ctx, 3*time.Minute, "6 pods running", func() (bool, string) {
		want, _, err := desired()
		if err != nil {
			return false, err.Error()
		}
		if len(want) != 6 {
			return false, fmt.Sprintf("%d pods in the API", len(want))
		}
		var names []string
		for n := range want {
			names = append(names, n)
		}
		if ok, msg := runningInAPI(ctx, names...); !ok {
			return false, msg
		}
		return exact(want)
	})

	relayDown(t)
	if _, err := kc.AppsV1().Deployments(ns).Patch(ctx, dep.Name, "application/merge-patch+json",
		[]byte(`{"spec":{"replicas":1}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := kc.CoreV1().Pods(ns).Delete(ctx, doomed.Name, *metav1.NewDeleteOptions(0)); err != nil {
		t.Fatal(err)
	}
	fresh := createPod(t, ctx, podSpec("conv-fresh", e.name, "sleep", "3600"))
	// The controller manager marks three of the Deployment's pods
	// deleting; with the node offline they stay in the API until the agent
	// says their containers stopped.
	stack.WaitFor(t, ctx, time.Minute, "three pods terminating in the API", func() (bool, string) {
		_, term, err := desired()
		return err == nil && len(term) == 3, fmt.Sprintf("terminating %v (%v)", term, err)
	})
	if s, err := e.state(ctx); err != nil || len(s.runningPods()) != 6 {
		t.Fatalf("the edge changed while offline: %v (%v)", s.runningPods(), err)
	}

	if err := relay.Start(ctx); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	stack.WaitFor(t, ctx, 3*time.Minute, "the edge running exactly the desired pods, nothing terminating", func() (bool, string) {
		want, term, err := desired()
		if err != nil {
			return false, err.Error()
		}
		if len(term) > 0 || len(want) != 3 {
			return false, fmt.Sprintf("API: desired %v, terminating %v", want, term)
		}
		return exact(want)
	})
	t.Logf("converged %s after the relay returned", time.Since(back).Round(100*time.Millisecond))
	if ok, msg := runningInAPI(ctx, fresh.Name, "conv-keep"); !ok {
		t.Error(msg)
	}
	if _, err := apiPod(ctx, doomed.Name); !apierrors.IsNotFound(err) {
		t.Errorf("%s: %v", doomed.Name, err)
	}
	// And it stays so: a pod created after converging reaches the edge
	// after everything before it, and runs beside exactly the desired pods.
	after := createPod(t, ctx, podSpec("conv-after", e.name, "sleep", "3600"))
	stack.WaitFor(t, ctx, 2*time.Minute, "a pod created after converging running beside exactly the desired pods", func() (bool, string) {
		want, _, err := desired()
		if err != nil {
			return false, err.Error()
		}
		if _, ok := want[after.Name]; !ok || len(want) != 4 {
			return false, fmt.Sprintf("API: desired %v", want)
		}
		return exact(want)
	})
	if log := e.agent.Proc.LogTail(400); strings.Contains(log, "level=ERROR") {
		t.Logf("agent errors:\n%s", grepLines(log, "level=ERROR"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
