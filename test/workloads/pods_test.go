package workloads

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/cloud/pods"
	"outpost.dev/test/stack"
)

// pod is a bare Pod on the edge node; extra is more YAML for its one
// container (indented 4 spaces), spec is more YAML for the pod's spec
// (indented 2 spaces).
func pod(ns, name, image, script, extra, spec string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s}
spec:
  nodeSelector: {kubernetes.io/hostname: %s}
  terminationGracePeriodSeconds: 2
%s  containers:
  - name: app
    image: %s
    command: [sh, -c, %q]
%s`, name, ns, node, spec, image, script, extra)
}

// containerStatus returns p's status of container "app".
func containerStatus(p *corev1.Pod) *corev1.ContainerStatus {
	for i := range p.Status.ContainerStatuses {
		if p.Status.ContainerStatuses[i].Name == "app" {
			return &p.Status.ContainerStatuses[i]
		}
	}
	return nil
}

func waiting(p *corev1.Pod) string {
	if c := containerStatus(p); c != nil && c.State.Waiting != nil {
		return c.State.Waiting.Reason
	}
	return ""
}

// TestConfigMapAndSecret: a ConfigMap volume and a Secret env var are
// visible inside the container, in its output (kubectl logs) and by exec
// through containerd.
func TestConfigMapAndSecret(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 3*time.Minute)
	const ns = "wl-config"
	newNamespace(t, ctx, ns)
	st.Apply(t, ctx, `apiVersion: v1
kind: ConfigMap
metadata: {name: cfg, namespace: `+ns+`}
data: {greeting: hello-from-configmap}
---
apiVersion: v1
kind: Secret
metadata: {name: sec, namespace: `+ns+`}
stringData: {password: s3cret-from-secret}
`)
	st.Apply(t, ctx, pod(ns, "reader", image1,
		`echo "greeting=$(cat /etc/cfg/greeting)"; echo "password=$PASSWORD"; exec sleep 3600`,
		`    env:
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: sec, key: password}}
    volumeMounts:
    - {name: cfg, mountPath: /etc/cfg}
`, `  volumes:
  - name: cfg
    configMap: {name: cfg}
`))
	p := waitRunning(t, ctx, ns, "reader", 2*time.Minute)
	if pr := statusProblems(p); len(pr) > 0 {
		t.Errorf("status: %v", pr)
	}
	var out string
	stack.WaitFor(t, ctx, 30*time.Second, "the container's output in kubectl logs", func() (bool, string) {
		o, err := st.CP.Kubectl(ctx, "-n", ns, "logs", "reader")
		out = o
		return err == nil && strings.Contains(o, "password="), fmt.Sprint(o, err)
	})
	for _, want := range []string{"greeting=hello-from-configmap", "password=s3cret-from-secret"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl logs: %q does not contain %q", out, want)
		}
	}
	id := strings.TrimPrefix(containerStatus(p).ContainerID, "containerd://")
	got, err := ctrExec(ctx, id, "cat", "/etc/cfg/greeting")
	if err != nil || got != "hello-from-configmap" {
		t.Errorf("exec cat /etc/cfg/greeting: %q, %v", got, err)
	}
	got, err = ctrExec(ctx, id, "sh", "-c", "echo $PASSWORD")
	if err != nil || strings.TrimSpace(got) != "s3cret-from-secret" {
		t.Errorf("exec echo $PASSWORD: %q, %v", got, err)
	}
	// A ConfigMap update reaches the file (atomically swapped), as on a kubelet.
	st.Kubectl(t, ctx, "-n", ns, "patch", "configmap", "cfg", "-p", `{"data":{"greeting":"updated"}}`)
	stack.WaitFor(t, ctx, 90*time.Second, "the updated ConfigMap in the volume", func() (bool, string) {
		got, err := ctrExec(ctx, id, "cat", "/etc/cfg/greeting")
		return err == nil && got == "updated", fmt.Sprint(got, err)
	})
}

// TestCrashLoopBackOff: a container exiting 1 under restartPolicy Always
// restarts with a doubling back-off, and waits in CrashLoopBackOff;
// kubectl logs --previous shows the last attempt's output.
func TestCrashLoopBackOff(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 3*time.Minute)
	const ns = "wl-crash"
	newNamespace(t, ctx, ns)
	st.Apply(t, ctx, pod(ns, "crasher", image1, `echo "attempt at $(date +%s)"; exit 1`, "", "  restartPolicy: Always\n"))

	// When each restart count was first seen; restart 1 is immediate,
	// then 10 s, then 20 s (a kubelet's back-off).
	seen := map[int32]time.Time{}
	var last *corev1.Pod
	sawBackOff := false
	stack.WaitFor(t, ctx, 150*time.Second, "restartCount 3", func() (bool, string) {
		p, err := getPod(ctx, ns, "crasher")
		if err != nil {
			return false, err.Error()
		}
		last = p
		c := containerStatus(p)
		if c == nil {
			return false, podState(p)
		}
		if _, ok := seen[c.RestartCount]; !ok {
			seen[c.RestartCount] = time.Now()
		}
		if c.State.Waiting != nil && c.State.Waiting.Reason == "CrashLoopBackOff" {
			sawBackOff = true
			if !strings.Contains(c.State.Waiting.Message, "back-off") {
				t.Errorf("CrashLoopBackOff message %q", c.State.Waiting.Message)
			}
		}
		return c.RestartCount >= 3, podState(p)
	})
	if !sawBackOff {
		t.Errorf("never saw CrashLoopBackOff; last %s", podState(last))
	}
	c := containerStatus(last)
	if c.LastTerminationState.Terminated == nil || c.LastTerminationState.Terminated.ExitCode != 1 {
		t.Errorf("lastState %+v, want terminated with exit code 1", c.LastTerminationState)
	}
	if last.Status.Phase != corev1.PodRunning {
		t.Errorf("phase %s, want Running (restartPolicy Always)", last.Status.Phase)
	}
	for _, cond := range last.Status.Conditions {
		if (cond.Type == corev1.PodReady || cond.Type == corev1.ContainersReady) && cond.Status != corev1.ConditionFalse && c.State.Running == nil {
			t.Errorf("condition %s is %s while the container is not running", cond.Type, cond.Status)
		}
	}
	gap := func(a, b int32) time.Duration {
		ta, okA := seen[a]
		tb, okB := seen[b]
		if !okA || !okB {
			return -1
		}
		return tb.Sub(ta)
	}
	g2, g3 := gap(1, 2), gap(2, 3)
	t.Logf("restarts seen at %v; gaps 1→2 %v, 2→3 %v", seen, g2, g3)
	if g2 >= 0 && g2 < 8*time.Second {
		t.Errorf("restart 2 came %v after restart 1: want the 10 s back-off", g2)
	}
	if g3 >= 0 && g3 < 16*time.Second {
		t.Errorf("restart 3 came %v after restart 2: want the back-off doubled to 20 s", g3)
	}
	// Through containerd: at most the current and previous attempts are
	// kept, and none of their tasks is left running.
	cs, err := containersOf(ctx, ns)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) > 2 {
		t.Errorf("containerd keeps more than two attempts: %s", describeContainers(cs))
	}
	out := st.Kubectl(t, ctx, "-n", ns, "logs", "crasher", "--previous")
	if !strings.HasPrefix(out, "attempt at ") {
		t.Errorf("kubectl logs --previous: %q", out)
	}
}

// TestImagePullBackOff: a missing image gives ErrImagePull then
// ImagePullBackOff; once the image is fixed the pod runs.
func TestImagePullBackOff(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 3*time.Minute)
	const ns = "wl-pull"
	newNamespace(t, ctx, ns)
	missingRef := st.Registry.Ref("test/busybox:does-not-exist")
	// A watch, not polling: the agent reports ErrImagePull and, on its
	// next pass, ImagePullBackOff; every version of the pod is seen.
	w, err := st.CP.Client().CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=puller"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	st.Apply(t, ctx, pod(ns, "puller", missingRef, "exec sleep 3600", "", ""))
	reasons := map[string]string{}
	var order []string
	deadline := time.After(90 * time.Second)
	for reasons["ErrImagePull"] == "" || reasons["ImagePullBackOff"] == "" {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("watch ended; seen %v", order)
			}
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			if r := waiting(p); r != "" {
				if _, seen := reasons[r]; !seen {
					order = append(order, r)
				}
				reasons[r] = containerStatus(p).State.Waiting.Message
			}
		case <-deadline:
			t.Fatalf("no ErrImagePull and ImagePullBackOff in 90 s; seen %v", order)
		}
	}
	if slices.Index(order, "ErrImagePull") > slices.Index(order, "ImagePullBackOff") {
		t.Errorf("waiting reasons in order %v, want ErrImagePull before ImagePullBackOff", order)
	}
	if m := reasons["ErrImagePull"]; !strings.Contains(m, "does-not-exist") {
		t.Errorf("ErrImagePull message %q does not name the image", m)
	}
	if p, _ := getPod(ctx, ns, "puller"); p != nil && p.Status.Phase != corev1.PodPending {
		t.Errorf("phase %s while the image is missing, want Pending", p.Status.Phase)
	}
	cs, err := containersOf(ctx, ns)
	if err != nil || len(cs) != 0 {
		t.Errorf("containers without an image: %s, %v", describeContainers(cs), err)
	}

	st.Kubectl(t, ctx, "-n", ns, "set", "image", "pod/puller", "app="+image1)
	p := waitRunning(t, ctx, ns, "puller", 90*time.Second)
	if c := containerStatus(p); c.Image != image1 {
		t.Errorf("running image %s, want %s", c.Image, image1)
	}
	stack.WaitFor(t, ctx, 30*time.Second, "a running task in containerd", func() (bool, string) {
		cs, err := containersOf(ctx, ns)
		if err != nil {
			return false, err.Error()
		}
		return len(running(cs)) == 1 && running(cs)[0].Image == image1, describeContainers(cs)
	})
}

// TestUnsupportedField: a pod with a field the agent cannot honour reports
// a reason naming it and never reaches containerd; another pod on the node
// runs.
func TestUnsupportedField(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 3*time.Minute)
	const ns = "wl-unsupported"
	newNamespace(t, ctx, ns)
	st.Apply(t, ctx, pod(ns, "attached", image1, "exec sleep 3600", "    securityContext: {seLinuxOptions: {level: \"s0:c1,c2\"}}\n", ""))
	st.Apply(t, ctx, pod(ns, "fine", image1, "exec sleep 3600", "", ""))

	var cond corev1.PodCondition
	stack.WaitFor(t, ctx, 60*time.Second, "the UnsupportedField reason", func() (bool, string) {
		p, err := getPod(ctx, ns, "attached")
		if err != nil {
			return false, err.Error()
		}
		for _, c := range p.Status.Conditions {
			if c.Reason == pods.ReasonUnsupported {
				cond = c
				return true, ""
			}
		}
		return false, podState(p)
	})
	const field = "spec.containers[0].securityContext.seLinuxOptions"
	if !strings.Contains(cond.Message, field) || cond.Status != corev1.ConditionFalse {
		t.Errorf("condition %+v does not name %s", cond, field)
	}
	out := st.Kubectl(t, ctx, "-n", ns, "describe", "pod", "attached")
	if !strings.Contains(out, field) {
		t.Errorf("kubectl describe does not show the field:\n%s", out)
	}
	p := waitRunning(t, ctx, ns, "fine", 2*time.Minute)
	bad, err := getPod(ctx, ns, "attached")
	if err != nil {
		t.Fatal(err)
	}
	if bad.Status.Phase != corev1.PodPending {
		t.Errorf("unsupported pod phase %s, want Pending", bad.Status.Phase)
	}
	stack.WaitFor(t, ctx, 30*time.Second, "only the fine pod in containerd", func() (bool, string) {
		cs, err := containersOf(ctx, ns)
		if err != nil {
			return false, err.Error()
		}
		return len(cs) == 1 && cs[0].Task == "RUNNING" && cs[0].Labels["dev.outpost.pod.uid"] == string(p.UID), describeContainers(cs)
	})
	// A new pod still starts after the refused one.
	st.Apply(t, ctx, pod(ns, "after", image1, "exec sleep 3600", "", ""))
	waitRunning(t, ctx, ns, "after", 2*time.Minute)
}

// TestKubectlLogs: kubectl logs, --tail and -f return the container's
// output through the relay.
func TestKubectlLogs(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 3*time.Minute)
	const ns = "wl-logs"
	newNamespace(t, ctx, ns)
	st.Apply(t, ctx, pod(ns, "talker", image1, `i=0; while true; do i=$((i+1)); echo "line $i"; sleep 0.3; done`, "", ""))
	waitRunning(t, ctx, ns, "talker", 2*time.Minute)

	var out string
	stack.WaitFor(t, ctx, 30*time.Second, "five lines in kubectl logs", func() (bool, string) {
		o, err := st.CP.Kubectl(ctx, "-n", ns, "logs", "talker")
		out = o
		return err == nil && strings.Contains(o, "line 5\n"), fmt.Sprint(o, err)
	})
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i, l := range lines { // complete, in order, nothing else
		if l != "line "+strconv.Itoa(i+1) {
			t.Fatalf("kubectl logs line %d is %q:\n%s", i+1, l, out)
		}
	}
	tail := strings.Split(strings.TrimSpace(st.Kubectl(t, ctx, "-n", ns, "logs", "talker", "--tail=2")), "\n")
	if len(tail) != 2 || !strings.HasPrefix(tail[0], "line ") {
		t.Errorf("kubectl logs --tail=2: %q", tail)
	}

	// -f: the lines written after it started arrive while it runs.
	lc, stop := kubectlStream(t, ctx, "-n", ns, "logs", "-f", "talker", "--tail=1")
	var got []int
	deadline := time.After(30 * time.Second)
	for len(got) < 6 {
		select {
		case l, ok := <-lc:
			if !ok {
				t.Fatalf("kubectl logs -f ended after %v: %s", got, stop())
			}
			n, err := strconv.Atoi(strings.TrimPrefix(l, "line "))
			if err != nil {
				t.Fatalf("kubectl logs -f line %q", l)
			}
			got = append(got, n)
		case <-deadline:
			t.Fatalf("kubectl logs -f gave %v in 30 s: %s", got, stop())
		}
	}
	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]+1 {
			t.Errorf("kubectl logs -f lines not consecutive: %v", got)
		}
	}
	if got[len(got)-1] <= len(lines) {
		t.Errorf("kubectl logs -f gave no line written after it started: %v (had %d)", got, len(lines))
	}
	stop()
}

// nodeCondition returns the node's condition of type typ.
func nodeCondition(ctx context.Context, typ string) (*corev1.NodeCondition, error) {
	n, err := st.CP.Client().CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	for i := range n.Status.Conditions {
		if string(n.Status.Conditions[i].Type) == typ {
			return &n.Status.Conditions[i], nil
		}
	}
	return nil, nil
}
