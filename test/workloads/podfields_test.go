package workloads

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/test/stack"
)

// logsOf waits until kubectl logs (with extra arguments) of pod ns/name
// prints want, and returns what it printed.
func logsOf(t *testing.T, ctx context.Context, ns, name, want string, extra ...string) string {
	t.Helper()
	var out string
	stack.WaitFor(t, ctx, 90*time.Second, "kubectl logs "+name+" "+strings.Join(extra, " ")+" printing "+want, func() (bool, string) {
		o, err := st.CP.Kubectl(ctx, append([]string{"-n", ns, "logs", name}, extra...)...)
		out = o
		return err == nil && strings.Contains(o, want), fmt.Sprint(o, err)
	})
	return out
}

func contains(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s: %q lacks %q", what, out, w)
		}
	}
}

// TestEnvFromAndDownwardAPI: envFrom (a ConfigMap with a prefix, a Secret,
// an optional one that is missing), the downward API's fields and
// resources in env and in a downwardAPI volume, as a kubelet gives them;
// a label change reaches the volume file.
func TestEnvFromAndDownwardAPI(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 4*time.Minute)
	const ns = "wl-downward"
	newNamespace(t, ctx, ns)
	st.Apply(t, ctx, `apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: `+ns+`}
data: {MODE: edge, LEVEL: "3", app.properties: "x=1"}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: `+ns+`}
stringData: {TOKEN: t0ken}
---
apiVersion: v1
kind: Pod
metadata:
  name: info
  namespace: `+ns+`
  labels: {app: web, tier: edge}
  annotations: {owner: team-a}
spec:
  nodeSelector: {kubernetes.io/hostname: `+node+`}
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: `+image1+`
    command: [sh, -c, 'tr "\\0" "\\n" </proc/1/environ | sort; echo END-ENV; while true; do echo "labels: $(tr "\\n" " " </etc/info/labels)"; sleep 1; done']
    resources:
      limits: {memory: 48Mi}
      requests: {memory: 32Mi, cpu: 50m}
    envFrom:
    - configMapRef: {name: settings}
      prefix: CFG_
    - secretRef: {name: creds}
    - configMapRef: {name: absent, optional: true}
    env:
    - {name: CFG_MODE, value: "overridden-$(CFG_LEVEL)"}
    - name: APP
      valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}
    - name: OWNER
      valueFrom: {fieldRef: {fieldPath: "metadata.annotations['owner']"}}
    - name: UID
      valueFrom: {fieldRef: {fieldPath: metadata.uid}}
    - name: NODE
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
    - name: SA
      valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}
    - name: HOST_IPS
      valueFrom: {fieldRef: {fieldPath: status.hostIPs}}
    - name: MEM_LIMIT_MI
      valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
    - name: MEM_REQUEST
      valueFrom: {resourceFieldRef: {resource: requests.memory}}
    - name: CPU_REQUEST_M
      valueFrom: {resourceFieldRef: {resource: requests.cpu, divisor: 1m}}
    - name: CPU_LIMIT_M
      valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1m}}
    volumeMounts:
    - {name: info, mountPath: /etc/info}
  volumes:
  - name: info
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: annotations, fieldRef: {fieldPath: metadata.annotations}}
      - {path: mem, resourceFieldRef: {containerName: app, resource: limits.memory, divisor: 1Mi}}
`)
	p := waitRunning(t, ctx, ns, "info", 2*time.Minute)
	n, err := st.CP.Client().CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	allocCPU := n.Status.Allocatable.Cpu().MilliValue()
	out := logsOf(t, ctx, ns, "info", "END-ENV")
	contains(t, "environment", out,
		"CFG_MODE=overridden-3\n", "CFG_LEVEL=3\n", "CFG_app.properties=x=1\n", "TOKEN=t0ken\n",
		"APP=web\n", "OWNER=team-a\n", "UID="+string(p.UID)+"\n", "NODE="+node+"\n", "SA=default\n",
		"HOST_IPS="+p.Status.HostIP+"\n", "MEM_LIMIT_MI=48\n", "MEM_REQUEST=33554432\n", "CPU_REQUEST_M=50\n",
		"CPU_LIMIT_M="+strconv.FormatInt(allocCPU, 10)+"\n") // no cpu limit: the node's allocatable
	id := strings.TrimPrefix(containerStatus(p).ContainerID, "containerd://")
	for file, want := range map[string]string{
		"labels": "app=\"web\"\ntier=\"edge\"", "annotations": `owner="team-a"`, "mem": "48",
	} {
		got, err := ctrExec(ctx, id, "cat", "/etc/info/"+file)
		if err != nil || !strings.Contains(got, want) {
			t.Errorf("/etc/info/%s: %q, %v; want %q", file, got, err, want)
		}
	}
	// As a kubelet: a label change reaches the file, not the environment.
	st.Kubectl(t, ctx, "-n", ns, "label", "pod", "info", "tier=cloud", "--overwrite")
	logsOf(t, ctx, ns, "info", `tier="cloud"`, "--tail=3")
}

// TestActiveDeadlineSeconds: past its deadline the pod is Failed with
// reason DeadlineExceeded and its container is stopped, not restarted.
func TestActiveDeadlineSeconds(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 3*time.Minute)
	const ns = "wl-deadline"
	newNamespace(t, ctx, ns)
	st.Apply(t, ctx, pod(ns, "bounded", image1, "exec sleep 3600", "", "  activeDeadlineSeconds: 8\n"))
	waitRunning(t, ctx, ns, "bounded", 2*time.Minute)
	var p *corev1.Pod
	stack.WaitFor(t, ctx, 90*time.Second, "phase Failed, reason DeadlineExceeded", func() (bool, string) {
		var err error
		if p, err = getPod(ctx, ns, "bounded"); err != nil {
			return false, err.Error()
		}
		c := containerStatus(p)
		return p.Status.Phase == corev1.PodFailed && p.Status.Reason == "DeadlineExceeded" && c != nil && c.State.Terminated != nil, podState(p)
	})
	if c := containerStatus(p); c.RestartCount != 0 {
		t.Errorf("restarted after its deadline: %s", podState(p))
	}
	stack.WaitFor(t, ctx, 30*time.Second, "no task running in containerd", func() (bool, string) {
		cs, err := containersOf(ctx, ns)
		if err != nil {
			return false, err.Error()
		}
		return len(running(cs)) == 0, describeContainers(cs)
	})
	// The finished pod's output is still there.
	st.Kubectl(t, ctx, "-n", ns, "logs", "bounded")
}

// TestProcessNamespaces: shareProcessNamespace puts the pod's containers
// in one PID namespace (they see each other's processes); hostPID and
// hostIPC share the node's.
func TestProcessNamespaces(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 3*time.Minute)
	const ns = "wl-pidns"
	newNamespace(t, ctx, ns)
	st.Apply(t, ctx, `apiVersion: v1
kind: Pod
metadata: {name: shared, namespace: `+ns+`}
spec:
  nodeSelector: {kubernetes.io/hostname: `+node+`}
  terminationGracePeriodSeconds: 2
  shareProcessNamespace: true
  containers:
  - {name: worker, image: `+image1+`, command: [sleep, "3602"]}
  - name: app
    image: `+image1+`
    command: [sh, -c, 'while true; do ps | grep "[s]leep 3602" && echo SEEN; sleep 1; done']
---
`+pod(ns, "host", image1, `echo "pid=$(readlink /proc/self/ns/pid) ipc=$(readlink /proc/self/ns/ipc)"; exec sleep 3600`, "", "  hostPID: true\n  hostIPC: true\n"))
	waitRunning(t, ctx, ns, "shared", 2*time.Minute)
	logsOf(t, ctx, ns, "shared", "SEEN", "-c", "app")
	waitRunning(t, ctx, ns, "host", 2*time.Minute)
	// The node's namespaces are the agent's; the agent runs on this host.
	hostPID, _ := os.Readlink("/proc/self/ns/pid")
	hostIPC, _ := os.Readlink("/proc/self/ns/ipc")
	logsOf(t, ctx, ns, "host", "pid="+hostPID+" ipc="+hostIPC)
}

// TestTTYPod: a pod with stdin and tty (what kubectl run -it makes) starts
// a shell on a terminal that keeps running, waiting for input; one with
// stdin alone (kubectl run -i) keeps reading its open stdin, its output in
// kubectl logs.
func TestTTYPod(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 3*time.Minute)
	const ns = "wl-tty"
	newNamespace(t, ctx, ns)
	st.Apply(t, ctx, `apiVersion: v1
kind: Pod
metadata: {name: shell, namespace: `+ns+`}
spec:
  nodeSelector: {kubernetes.io/hostname: `+node+`}
  terminationGracePeriodSeconds: 2
  restartPolicy: Never
  containers:
  - {name: app, image: `+image1+`, command: [sh], stdin: true, stdinOnce: true, tty: true}
---
`+pod(ns, "reader", image1, "echo reading; exec cat", "    stdin: true\n", ""))
	p := waitRunning(t, ctx, ns, "shell", 2*time.Minute)
	id := strings.TrimPrefix(containerStatus(p).ContainerID, "containerd://")
	got, err := ctrExec(ctx, id, "readlink", "/proc/1/fd/0")
	if err != nil || !strings.HasPrefix(strings.TrimSpace(got), "/dev/pts/") {
		t.Errorf("the shell's stdin is %q (%v), want a terminal", got, err)
	}
	got, err = ctrExec(ctx, id, "cat", "/proc/1/cmdline")
	if err != nil || !strings.HasPrefix(got, "sh") {
		t.Errorf("PID 1 is %q (%v), want the shell still running", got, err)
	}
	p = waitRunning(t, ctx, ns, "reader", 2*time.Minute)
	logsOf(t, ctx, ns, "reader", "reading")
	id = strings.TrimPrefix(containerStatus(p).ContainerID, "containerd://")
	got, err = ctrExec(ctx, id, "cat", "/proc/1/cmdline")
	if err != nil || !strings.HasPrefix(got, "cat") {
		t.Errorf("PID 1 is %q (%v), want cat still reading its stdin", got, err)
	}
}

// TestFinishedPodLogs: kubectl logs of a pod that completed (restartPolicy
// Never, a Job's pod) and --previous of one that restarted on failure
// read until the pod is deleted.
func TestFinishedPodLogs(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 4*time.Minute)
	const ns = "wl-finished"
	newNamespace(t, ctx, ns)
	st.Apply(t, ctx, pod(ns, "once", image1, "echo done-once", "", "  restartPolicy: Never\n"))
	st.Apply(t, ctx, pod(ns, "retry", image1, `if [ -e /data/x ]; then echo second-attempt; exit 0; fi; touch /data/x; echo first-attempt; exit 2`,
		"    volumeMounts: [{name: data, mountPath: /data}]\n", "  restartPolicy: OnFailure\n  volumes: [{name: data, emptyDir: {}}]\n"))
	st.Apply(t, ctx, `apiVersion: batch/v1
kind: Job
metadata: {name: batch, namespace: `+ns+`}
spec:
  backoffLimit: 0
  template:
    spec:
      nodeSelector: {kubernetes.io/hostname: `+node+`}
      restartPolicy: Never
      containers:
      - {name: app, image: `+image1+`, command: [sh, -c, "echo job-output"]}
`)
	for _, name := range []string{"once", "retry"} {
		stack.WaitFor(t, ctx, 2*time.Minute, name+" Succeeded", func() (bool, string) {
			p, err := getPod(ctx, ns, name)
			if err != nil {
				return false, err.Error()
			}
			return p.Status.Phase == corev1.PodSucceeded, podState(p)
		})
	}
	logsOf(t, ctx, ns, "once", "done-once")
	logsOf(t, ctx, ns, "retry", "second-attempt")
	logsOf(t, ctx, ns, "retry", "first-attempt", "--previous")
	stack.WaitFor(t, ctx, 2*time.Minute, "the Job complete", func() (bool, string) {
		out, err := st.CP.Kubectl(ctx, "-n", ns, "get", "job", "batch", "-o", "jsonpath={.status.succeeded}")
		return err == nil && out == "1", fmt.Sprint(out, err)
	})
	logsOf(t, ctx, ns, "job/batch", "job-output")
	// Deleting the pod removes what the agent kept of it.
	ps, err := listPods(ctx, ns, "")
	if err != nil {
		t.Fatal(err)
	}
	var uid string
	for _, p := range ps {
		if p.Name == "once" {
			uid = string(p.UID)
		}
	}
	st.Kubectl(t, ctx, "-n", ns, "delete", "pod", "once", "--wait=true")
	stack.WaitFor(t, ctx, 90*time.Second, "the finished pod's containers and logs removed", func() (bool, string) {
		left, err := leftovers(ctx, nil, []string{uid})
		if err != nil {
			return false, err.Error()
		}
		return len(left) == 0, fmt.Sprint(left)
	})
}

// TestPodLevelResources: spec.resources bounds the pod's containers
// together (one that sets no limit is OOM-killed at the pod's) and is
// what the downward API reads for a container without its own limit.
func TestPodLevelResources(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 3*time.Minute)
	const ns = "wl-podres"
	newNamespace(t, ctx, ns)
	st.Apply(t, ctx, pod(ns, "bounded", image1, `echo "limit=$MEM_MI"; tail /dev/zero`, `    env:
    - name: MEM_MI
      valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
`, "  restartPolicy: Never\n  resources: {limits: {memory: 32Mi, cpu: 500m}}\n"))
	logsOf(t, ctx, ns, "bounded", "limit=32\n")
	stack.WaitFor(t, ctx, 90*time.Second, "the container OOMKilled at the pod's limit", func() (bool, string) {
		p, err := getPod(ctx, ns, "bounded")
		if err != nil {
			return false, err.Error()
		}
		c := containerStatus(p)
		return c != nil && c.State.Terminated != nil && c.State.Terminated.Reason == "OOMKilled", podState(p)
	})
}
