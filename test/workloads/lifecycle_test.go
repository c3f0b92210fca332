package workloads

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/test/stack"
	"outpost.dev/wire"
)

func initStatus(p *corev1.Pod, name string) *corev1.ContainerStatus {
	for i := range p.Status.InitContainerStatuses {
		if p.Status.InitContainerStatuses[i].Name == name {
			return &p.Status.InitContainerStatuses[i]
		}
	}
	return nil
}

// TestSidecarJob: a Job whose pod has a native sidecar (an init container
// with restartPolicy: Always) completes: the sidecar starts before the
// main container (which fails if it is not there), runs beside it, and is
// stopped once the main container completed; the pod is Succeeded and
// both containers' logs are readable with kubectl.
func TestSidecarJob(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 4*time.Minute)
	const ns = "wl-sidecar"
	newNamespace(t, ctx, ns)
	st.Apply(t, ctx, fmt.Sprintf(`apiVersion: batch/v1
kind: Job
metadata: {name: report, namespace: %s}
spec:
  backoffLimit: 0
  template:
    spec:
      nodeSelector: {kubernetes.io/hostname: %s}
      restartPolicy: Never
      terminationGracePeriodSeconds: 10
      volumes: [{name: shared, emptyDir: {}}]
      initContainers:
      - name: proxy
        image: %s
        restartPolicy: Always
        command: [sh, -c, "sleep 1; touch /shared/proxy-up; echo proxy serving; trap 'echo proxy stopping; exit 0' TERM; while true; do sleep 0.1; done"]
        volumeMounts: [{name: shared, mountPath: /shared}]
        startupProbe: {exec: {command: [test, -f, /shared/proxy-up]}, periodSeconds: 1, failureThreshold: 30}
      containers:
      - name: main
        image: %s
        command: [sh, -c, "test -f /shared/proxy-up || exit 9; echo report sent; sleep 2"]
        volumeMounts: [{name: shared, mountPath: /shared}]
`, ns, node, image1, image1))
	st.Kubectl(t, ctx, "-n", ns, "wait", "--for=condition=complete", "job/report", "--timeout=150s")
	ps, err := listPods(ctx, ns, "job-name=report")
	if err != nil || len(ps) != 1 {
		t.Fatalf("%s %v", podsState(ps), err)
	}
	name := ps[0].Name
	var p *corev1.Pod
	stack.WaitFor(t, ctx, 60*time.Second, "the pod Succeeded with its sidecar terminated", func() (bool, string) {
		if p, err = getPod(ctx, ns, name); err != nil {
			return false, err.Error()
		}
		px := initStatus(p, "proxy")
		return p.Status.Phase == corev1.PodSucceeded && px != nil && px.State.Terminated != nil, podState(p)
	})
	if px := initStatus(p, "proxy"); px.State.Terminated.ExitCode != 0 || px.Ready {
		t.Errorf("the stopped sidecar: %+v", *px)
	}
	if c := p.Status.ContainerStatuses; len(c) != 1 || c[0].State.Terminated == nil || c[0].State.Terminated.ExitCode != 0 {
		t.Errorf("main container: %s", podState(p))
	}
	cs, err := containersOf(ctx, ns)
	if err != nil {
		t.Fatal(err)
	}
	if len(running(cs)) != 0 {
		t.Errorf("containerd still runs the pod's containers: %s", describeContainers(cs))
	}
	if out := st.Kubectl(t, ctx, "-n", ns, "logs", name, "-c", "proxy"); !strings.Contains(out, "proxy serving") || !strings.Contains(out, "proxy stopping") {
		t.Errorf("kubectl logs -c proxy: %q", out)
	}
	if out := st.Kubectl(t, ctx, "-n", ns, "logs", name, "-c", "main"); !strings.Contains(out, "report sent") {
		t.Errorf("kubectl logs -c main: %q", out)
	}
}

// TestPostStartHook: a postStart exec hook writes a file the main process
// waits for and prints; the pod is Running and Ready once it returned.
func TestPostStartHook(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 3*time.Minute)
	const ns = "wl-poststart"
	newNamespace(t, ctx, ns)
	st.Apply(t, ctx, pod(ns, "hooked", image1,
		`while [ ! -f /tmp/greeting ]; do sleep 0.1; done; echo "main read: $(cat /tmp/greeting)"; exec sleep 3600`,
		"    lifecycle:\n      postStart:\n        exec:\n          command: [sh, -c, 'echo from-postStart > /tmp/greeting']\n", ""))
	waitRunning(t, ctx, ns, "hooked", 2*time.Minute)
	stack.WaitFor(t, ctx, 30*time.Second, "the main process's line in kubectl logs", func() (bool, string) {
		out, err := st.CP.Kubectl(ctx, "-n", ns, "logs", "hooked")
		return strings.Contains(out, "main read: from-postStart"), fmt.Sprint(out, err)
	})
}

// TestPreStopHook: on deletion, a preStop exec hook runs before the
// container's SIGTERM, and a preStop sleep hook delays it (both seen in a
// hostPath directory the test reads); a failing preStop hook does not
// hold the deletion up and is recorded as a FailedPreStopHook event.
func TestPreStopHook(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 3*time.Minute)
	const ns = "wl-prestop"
	newNamespace(t, ctx, ns)
	dir := nodeDir(t, ns, 0o777)
	st.Apply(t, ctx, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: draining, namespace: %s}
spec:
  nodeSelector: {kubernetes.io/hostname: %s}
  terminationGracePeriodSeconds: 30
  volumes: [{name: out, hostPath: {path: %s, type: Directory}}]
  containers:
  - name: exec
    image: %s
    command: [sh, -c, "trap 'echo term >> /out/exec; exit 0' TERM; while true; do sleep 0.1; done"]
    volumeMounts: [{name: out, mountPath: /out}]
    lifecycle: {preStop: {exec: {command: [sh, -c, "echo prestop >> /out/exec"]}}}
  - name: sleep
    image: %s
    command: [sh, -c, "trap 'date +%%s > /out/sleep; exit 0' TERM; while true; do sleep 0.1; done"]
    volumeMounts: [{name: out, mountPath: /out}]
    lifecycle: {preStop: {sleep: {seconds: 3}}}
  - name: failing
    image: %s
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 0.1; done"]
    lifecycle: {preStop: {exec: {command: [sh, -c, "exit 2"]}}}
`, ns, node, dir, image1, image1, image1))
	p := waitRunning(t, ctx, ns, "draining", 2*time.Minute)
	deleted := time.Now()
	st.Kubectl(t, ctx, "-n", ns, "delete", "pod", "draining", "--wait=false")
	stack.WaitFor(t, ctx, 90*time.Second, "the pod gone", func() (bool, string) {
		q, err := getPod(ctx, ns, "draining")
		if isNotFound(err) {
			return true, ""
		}
		if err != nil {
			return false, err.Error()
		}
		return q.UID != p.UID, podState(q)
	})
	if b, _ := os.ReadFile(filepath.Join(dir, "exec")); string(b) != "prestop\nterm\n" {
		t.Errorf("the exec container's file %q: want its preStop hook's line, then its SIGTERM handler's", b)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "sleep"))
	at, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("the sleep container's SIGTERM handler left %q", b)
	}
	if at < deleted.Unix()+3 {
		t.Errorf("SIGTERM at %d, %d s after kubectl delete: the 3 s preStop sleep did not delay it", at, at-deleted.Unix())
	}
	stack.WaitFor(t, ctx, 60*time.Second, "a FailedPreStopHook event for the failing container", func() (bool, string) {
		evs, err := st.CP.Client().CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=FailedPreStopHook"})
		if err != nil {
			return false, err.Error()
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.UID == p.UID && e.InvolvedObject.FieldPath == "spec.containers{failing}" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events", len(evs.Items))
	})
}

// TestFailedPostStartHook: a postStart hook that fails kills the
// container, which restarts (restartPolicy Always), with a
// FailedPostStartHook event, the waiting reason PostStartHookError or the
// crash back-off, and the hook's failure in the last state.
func TestFailedPostStartHook(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 3*time.Minute)
	const ns = "wl-poststart-fail"
	newNamespace(t, ctx, ns)
	st.Apply(t, ctx, pod(ns, "broken", image1, "trap 'exit 0' TERM; while true; do sleep 0.1; done",
		"    lifecycle:\n      postStart:\n        exec:\n          command: [sh, -c, 'echo no config; exit 3']\n", "  restartPolicy: Always\n"))
	var p *corev1.Pod
	stack.WaitFor(t, ctx, 90*time.Second, "restarted after the failed hook", func() (bool, string) {
		var err error
		if p, err = getPod(ctx, ns, "broken"); err != nil {
			return false, err.Error()
		}
		c := containerStatus(p)
		return c != nil && c.RestartCount >= 1 && c.LastTerminationState.Terminated != nil, podState(p)
	})
	c := containerStatus(p)
	if m := c.LastTerminationState.Terminated.Message; !strings.HasPrefix(m, wire.PostStartHookFailed) || !strings.Contains(m, "no config") {
		t.Errorf("last state's message %q: want the hook's failure", m)
	}
	if runningReady(p) {
		t.Errorf("a pod whose postStart hook fails is Ready: %s", podState(p))
	}
	stack.WaitFor(t, ctx, 60*time.Second, "a FailedPostStartHook event", func() (bool, string) {
		evs, err := st.CP.Client().CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=FailedPostStartHook"})
		if err != nil {
			return false, err.Error()
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == "broken" && e.Type == corev1.EventTypeWarning && e.InvolvedObject.FieldPath == "spec.containers{app}" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events", len(evs.Items))
	})
	stack.WaitFor(t, ctx, 60*time.Second, "waiting with PostStartHookError or CrashLoopBackOff", func() (bool, string) {
		q, err := getPod(ctx, ns, "broken")
		if err != nil {
			return false, err.Error()
		}
		w := waiting(q)
		return w == "PostStartHookError" || w == "CrashLoopBackOff", podState(q)
	})
}
