// Package workloads is the acceptance suite for pods on edge nodes: real
// kubectl against a real control plane, the real relay, a real
// agent joined to it, and real containerd + runc running the containers
// from a real registry. Outcomes are checked in the API and, independently
// of the code under test, in containerd itself (Debian's ctr).
package workloads

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
)

// node is the edge node every test schedules onto.
const node = "wl-edge"

var (
	st     *stack.Stack
	relay  *stack.Relay
	agent  *stack.Agent
	image1 string
	image2 string
)

func TestMain(m *testing.M) {
	os.Exit(stack.RunMain(m, stack.MainOptions{
		Name: "workloads",
		Stack: stack.Options{
			// OUTPOST_WORKLOADS_DIR keeps everything (logs, containerd) there.
			Dir:               os.Getenv("OUTPOST_WORKLOADS_DIR"),
			Containerd:        true,
			HeartbeatInterval: 2 * time.Second,
			LeaseDuration:     8 * time.Second,
			// kubectl top, through metrics-server and the relay.
			MetricsServer: true,
		},
		Ready: func(ctx context.Context, s *stack.Stack, r *stack.Relay) (err error) {
			st, relay = s, r
			image1, image2 = st.Images[0].Ref, st.Images[1].Ref
			if agent, err = st.Join(ctx, relay, node); err != nil {
				return err
			}
			if err := agent.Start(); err != nil {
				return fmt.Errorf("start the agent: %w", err)
			}
			return st.WaitNodeReady(ctx, node, true, 2*time.Minute)
		},
	}))
}

func need(t *testing.T) { t.Helper(); stack.Need(t) }

var ctxFor = stack.Context

// newNamespace creates namespace ns, waits for its default ServiceAccount
// (pods are refused without it) and deletes it when t ends.
func newNamespace(t *testing.T, ctx context.Context, ns string) {
	t.Helper()
	st.Kubectl(t, ctx, "create", "namespace", ns)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = st.CP.Kubectl(ctx, "delete", "namespace", ns, "--wait=false")
	})
	stack.WaitFor(t, ctx, time.Minute, "default ServiceAccount in "+ns, func() (bool, string) {
		_, err := st.CP.Client().CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})
}

// nodeDir is a directory on the node for the pods of namespace ns to
// use (a local PersistentVolume's or a hostPath's), made with mode. When
// t ends it deletes ns and waits for its pods to be gone before removing
// the directory, which would race with containers still writing into it.
func nodeDir(t *testing.T, ns string, mode os.FileMode) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "outpost-"+ns+"-")
	if err == nil {
		err = os.Chmod(dir, mode)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, _ = st.CP.Kubectl(ctx, "delete", "namespace", ns, "--wait=false")
		stack.WaitFor(t, ctx, 2*time.Minute, "the pods of "+ns+" gone before their directory is removed", func() (bool, string) {
			pods, err := listPods(ctx, ns, "")
			var left []string
			for _, p := range pods {
				left = append(left, fmt.Sprintf("%s (%s on %q, deleting %v)", p.Name, p.Status.Phase, p.Spec.NodeName, p.DeletionTimestamp != nil))
			}
			return err == nil && len(pods) == 0, fmt.Sprintf("pods %v, %v", left, err)
		})
		if err := os.RemoveAll(dir); err != nil {
			t.Error(err)
		}
	})
	return dir
}

// listPods lists the pods of ns, optionally by label selector.
func listPods(ctx context.Context, ns, selector string) ([]corev1.Pod, error) {
	l, err := st.CP.Client().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

func getPod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	return st.CP.Client().CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
}

// runningReady says whether p is Running with every container ready.
func runningReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// statusProblems lists how a Running, Ready pod's status differs from a
// kubelet's: its conditions, hostIP, startTime and container statuses.
func statusProblems(p *corev1.Pod) []string {
	var out []string
	conds := map[corev1.PodConditionType]corev1.ConditionStatus{}
	for _, c := range p.Status.Conditions {
		conds[c.Type] = c.Status
	}
	for _, typ := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		if conds[typ] != corev1.ConditionTrue {
			out = append(out, fmt.Sprintf("condition %s is %q", typ, conds[typ]))
		}
	}
	if p.Status.HostIP == "" {
		out = append(out, "no hostIP")
	}
	if p.Status.StartTime == nil {
		out = append(out, "no startTime")
	}
	for _, c := range p.Status.ContainerStatuses {
		switch {
		case c.State.Running == nil || c.State.Running.StartedAt.IsZero():
			out = append(out, c.Name+": not running with a start time")
		case !c.Ready || c.Started == nil || !*c.Started:
			out = append(out, c.Name+": not ready and started")
		case !strings.HasPrefix(c.ContainerID, "containerd://") || c.ImageID == "" || c.Image == "":
			out = append(out, fmt.Sprintf("%s: containerID %q image %q imageID %q", c.Name, c.ContainerID, c.Image, c.ImageID))
		}
	}
	if len(p.Status.ContainerStatuses) != len(p.Spec.Containers) {
		out = append(out, fmt.Sprintf("%d container statuses for %d containers", len(p.Status.ContainerStatuses), len(p.Spec.Containers)))
	}
	return out
}

// podState is a one-line description of p for failure messages.
func podState(p *corev1.Pod) string {
	s := fmt.Sprintf("%s phase=%s", p.Name, p.Status.Phase)
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			s += fmt.Sprintf(" %s=%s(%s: %s)", c.Type, c.Status, c.Reason, c.Message)
		}
	}
	for _, c := range append(slices.Clone(p.Status.InitContainerStatuses), p.Status.ContainerStatuses...) {
		s += fmt.Sprintf(" [%s restarts=%d", c.Name, c.RestartCount)
		switch {
		case c.State.Waiting != nil:
			s += " waiting " + c.State.Waiting.Reason + ": " + c.State.Waiting.Message
		case c.State.Running != nil:
			s += " running"
		case c.State.Terminated != nil:
			s += fmt.Sprintf(" terminated %d", c.State.Terminated.ExitCode)
		}
		s += "]"
	}
	return s
}

func podsState(ps []corev1.Pod) string {
	var s []string
	for i := range ps {
		s = append(s, podState(&ps[i]))
	}
	return fmt.Sprintf("%d pods: %s", len(ps), strings.Join(s, "; "))
}

// waitRunning waits until pod ns/name is Running and Ready and returns it.
func waitRunning(t *testing.T, ctx context.Context, ns, name string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	var got *corev1.Pod
	stack.WaitFor(t, ctx, timeout, "pod "+ns+"/"+name+" Running and Ready", func() (bool, string) {
		p, err := getPod(ctx, ns, name)
		if err != nil {
			return false, err.Error()
		}
		got = p
		return runningReady(p), podState(p)
	})
	return got
}

// ctrContainer is a container as containerd reports it (ctr containers
// info), with its task's state from ctr tasks ls.
type ctrContainer struct {
	ID     string            `json:"ID"`
	Labels map[string]string `json:"Labels"`
	Image  string            `json:"Image"`
	Task   string            // RUNNING, STOPPED, ... or "" without a task
}

// ctrNamespace is the agent's containerd namespace.
func ctrNamespace() string { return "outpost-" + node }

// containersOf lists, through ctr, the containers the agent created for
// pods of Kubernetes namespace ns, with their tasks.
func containersOf(ctx context.Context, ns string) ([]ctrContainer, error) {
	c := st.Containerd
	out, err := c.Ctr(ctx, "-n", ctrNamespace(), "containers", "ls", "-q", `labels."dev.outpost.pod.namespace"==`+ns)
	if err != nil {
		return nil, err
	}
	tasks, err := ctrTasks(ctx)
	if err != nil {
		return nil, err
	}
	var cs []ctrContainer
	for _, id := range strings.Fields(out) {
		info, err := c.Ctr(ctx, "-n", ctrNamespace(), "containers", "info", id)
		if err != nil {
			if strings.Contains(err.Error(), "not found") {
				continue // removed meanwhile
			}
			return nil, err
		}
		var cc ctrContainer
		if err := json.Unmarshal([]byte(info), &cc); err != nil {
			return nil, fmt.Errorf("ctr containers info %s: %w", id, err)
		}
		cc.Task = tasks[id]
		cs = append(cs, cc)
	}
	return cs, nil
}

// ctrTasks maps task (container) IDs to their status in the agent's
// namespace, from ctr tasks ls.
func ctrTasks(ctx context.Context) (map[string]string, error) {
	out, err := st.Containerd.Ctr(ctx, "-n", ctrNamespace(), "tasks", "ls")
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for i, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if i == 0 || len(f) < 3 {
			continue // header
		}
		m[f[0]] = f[2]
	}
	return m, nil
}

// running returns the containers with a RUNNING task.
func running(cs []ctrContainer) []ctrContainer {
	var out []ctrContainer
	for _, c := range cs {
		if c.Task == "RUNNING" {
			out = append(out, c)
		}
	}
	return out
}

func describeContainers(cs []ctrContainer) string {
	var s []string
	for _, c := range cs {
		s = append(s, fmt.Sprintf("%s(pod %s, %s, task %q)", c.ID, c.Labels["dev.outpost.pod.name"], c.Image, c.Task))
	}
	return fmt.Sprintf("%d containers: %s", len(s), strings.Join(s, ", "))
}

// ctrExec runs argv in the container's task through containerd.
func ctrExec(ctx context.Context, id string, argv ...string) (string, error) {
	args := append([]string{"-n", ctrNamespace(), "tasks", "exec", "--exec-id", fmt.Sprintf("wl-%d", time.Now().UnixNano()), id}, argv...)
	return st.Containerd.Ctr(ctx, args...)
}

// leftovers lists what containerd or the host still holds of containers
// ids: snapshots named after them, mounts under containerd's directory or
// the agent's state directory naming them or the pods' uids.
func leftovers(ctx context.Context, ids, uids []string) ([]string, error) {
	snaps, err := st.Containerd.Ctr(ctx, "-n", ctrNamespace(), "snapshots", "ls")
	if err != nil {
		return nil, err
	}
	var left []string
	mounts := append(harness.MountsUnder(st.Containerd.Dir), harness.MountsUnder(agent.StateDir)...)
	for _, id := range ids {
		for _, l := range strings.Split(snaps, "\n") {
			if f := strings.Fields(l); len(f) > 0 && f[0] == id {
				left = append(left, "snapshot "+id)
			}
		}
		for _, m := range mounts {
			if strings.Contains(m, id) {
				left = append(left, "mount "+m)
			}
		}
	}
	for _, uid := range uids {
		for _, m := range mounts {
			if strings.Contains(m, uid) {
				left = append(left, "mount "+m)
			}
		}
		if _, err := os.Stat(filepath.Join(agent.StateDir, "pods", uid)); err == nil {
			left = append(left, "directory "+filepath.Join(agent.StateDir, "pods", uid))
		}
		// Container logs: <stateDir>/logs/<namespace>_<pod>_<uid>.
		logs, _ := filepath.Glob(filepath.Join(agent.StateDir, "logs", "*_"+uid))
		for _, l := range logs {
			left = append(left, "logs "+l)
		}
	}
	return left, nil
}

// kubectlStream starts kubectl with args and returns its stdout as it
// comes; stop ends it.
func kubectlStream(t *testing.T, ctx context.Context, args ...string) (lines <-chan string, stop func() string) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(ctx, filepath.Join(st.CP.BinDir, "kubectl"), append([]string{"--kubeconfig=" + st.CP.Kubeconfig}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 256)
	go func() {
		defer close(ch)
		buf := make([]byte, 4096)
		var pending string
		for {
			n, err := out.Read(buf)
			pending += string(buf[:n])
			for {
				i := strings.IndexByte(pending, '\n')
				if i < 0 {
					break
				}
				select {
				case ch <- pending[:i]:
				default:
				}
				pending = pending[i+1:]
			}
			if err != nil {
				return
			}
		}
	}()
	stopped := false
	stop = func() string {
		if !stopped {
			stopped = true
			cancel()
			_ = cmd.Wait()
		}
		return stderr.String()
	}
	t.Cleanup(func() { stop() })
	return ch, stop
}

// isNotFound reports an API NotFound error.
func isNotFound(err error) bool { return apierrors.IsNotFound(err) }
