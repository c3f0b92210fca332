package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

// agentPeer is a protocol-level agent that reports pod status and answers
// log streams: what it receives is sorted into channels by type.
type agentPeer struct {
	ws      *websocket.Conn
	syncs   chan wire.Sync
	acks    chan uint64
	opens   chan wire.StreamOpen
	sacks   chan wire.StreamAck
	cancel  context.CancelFunc
	nextSeq uint64
}

func connectAgentPeer(t *testing.T, ctx context.Context, p *peer) *agentPeer {
	t.Helper()
	ap := &agentPeer{syncs: make(chan wire.Sync, 64), acks: make(chan uint64, 64),
		opens: make(chan wire.StreamOpen, 16), sacks: make(chan wire.StreamAck, 64)}
	ap.ws, ap.cancel, _ = p.session(t, ctx, helloFor(p.name), func(_ context.Context, f wire.Frame) bool {
		switch f.Type {
		case wire.TypeSync:
			var s wire.Sync
			if f.DecodeBody(&s) == nil {
				select {
				case ap.syncs <- s:
				default: // not needed by every test
				}
			}
		case wire.TypeAck:
			ap.acks <- f.Ack
		case wire.TypeStreamOpen:
			var o wire.StreamOpen
			if f.DecodeBody(&o) == nil {
				ap.opens <- o
			}
		case wire.TypeStreamAck:
			var a wire.StreamAck
			if f.DecodeBody(&a) == nil {
				select {
				case ap.sacks <- a:
				default:
				}
			}
		}
		return true
	})
	return ap
}

// createPod creates a pod of one busybox container, app, running
// command (none: the image's) on node, in the default namespace; it is
// deleted when t ends.
func createPod(t *testing.T, ctx context.Context, name, node string, command ...string) *corev1.Pod {
	t.Helper()
	kc := st.CP.Client()
	pod, err := kc.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{
			{Name: "app", Image: "registry.local/busybox:test", Command: command}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kc.CoreV1().Pods("default").Delete(context.Background(), pod.Name, *metav1.NewDeleteOptions(0))
	})
	return pod
}

// report sends a pod status and waits for the relay's ack of it.
func (ap *agentPeer) report(t *testing.T, ctx context.Context, st *wire.PodStatus) {
	t.Helper()
	ap.nextSeq++
	seq := ap.nextSeq
	send(t, ctx, ap.ws, wire.TypePodStatus, seq, st)
	deadline := time.After(20 * time.Second)
	for {
		select {
		case a := <-ap.acks:
			if a >= seq {
				return
			}
		case <-deadline:
			t.Fatalf("pod status seq %d not acked", seq)
		}
	}
}

func (ap *agentPeer) open(t *testing.T) wire.StreamOpen {
	t.Helper()
	select {
	case o := <-ap.opens:
		return o
	case <-time.After(20 * time.Second):
		t.Fatal("no stream-open from the relay")
	}
	return wire.StreamOpen{}
}

func (ap *agentPeer) data(t *testing.T, ctx context.Context, id uint32, s string, eof bool, errText string) {
	t.Helper()
	send(t, ctx, ap.ws, wire.TypeStreamData, 0, &wire.StreamData{ID: id, Data: []byte(s), EOF: eof, Error: errText})
}

// kubectlAsync runs kubectl and delivers its combined output when it ends.
func kubectlAsync(ctx context.Context, args ...string) chan string {
	ch := make(chan string, 1)
	go func() {
		out, err := st.CP.Kubectl(ctx, args...)
		if err != nil {
			out = "ERROR: " + err.Error()
		}
		ch <- out
	}()
	return ch
}

func waitOut(t *testing.T, ch chan string) string {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(30 * time.Second):
		t.Fatal("kubectl did not finish")
	}
	return ""
}

// TestPodStatusAndLogs: pod status reports become the pod's status as a
// kubelet would write it (kubectl get), kubectl logs (-f, --tail,
// --previous) reach the agent through the relay's kubelet API and its
// link, and a graceful delete completes once the agent says the containers
// stopped.
func TestPodStatusAndLogs(t *testing.T) {
	needStack(t)
	ctx := ctxFor(t, 3*time.Minute)
	const ns = "default"
	node := "status-edge"
	kc := st.CP.Client()
	p := joinPeer(t, ctx, node)
	ap := connectAgentPeer(t, ctx, p)

	pod := createPod(t, ctx, "sl-web", node, "sleep", "3600")

	// (a) Running, with a restart: what kubectl shows.
	now := time.Now()
	running := &wire.PodStatus{
		UID: string(pod.UID), Namespace: ns, Name: pod.Name, Phase: "Running",
		PodIP: "10.42.0.7", HostIP: "192.0.2.99", StartTime: now.Add(-time.Minute).Unix(),
		Conditions: []wire.Condition{
			{Type: "PodScheduled", Status: "True"}, {Type: "Initialized", Status: "True"},
			{Type: "ContainersReady", Status: "True"}, {Type: "Ready", Status: "True"},
		},
		Containers: []wire.ContainerStatus{{
			Name: "app", Image: "registry.local/busybox:test", ImageID: "registry.local/busybox@sha256:0123",
			ContainerID: "containerd://c0ffee", Ready: true, Started: true, RestartCount: 1,
			State:     wire.ContainerState{Kind: wire.StateRunning, StartedAt: now.Add(-30 * time.Second).UnixMilli()},
			LastState: wire.ContainerState{Kind: wire.StateTerminated, ExitCode: 1, Reason: "Error", FinishedAt: now.Add(-31 * time.Second).UnixMilli()},
		}},
	}
	ap.report(t, ctx, running)
	out, err := st.CP.Kubectl(ctx, "get", "pod", pod.Name, "-n", ns, "--no-headers", "-o", "wide")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl get pod -o wide: %s", strings.TrimSpace(out))
	// NAME READY STATUS RESTARTS [(AGO ago)] AGE IP NODE ...
	if f := strings.Fields(out); len(f) < 7 || f[1] != "1/1" || f[2] != "Running" || f[3] != "1" ||
		!strings.Contains(out, " 10.42.0.7 ") || !strings.Contains(out, " "+node+" ") {
		t.Errorf("kubectl get pod: %q", out)
	}
	got, err := kc.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cs := got.Status.ContainerStatuses
	if len(cs) != 1 || cs[0].ContainerID != "containerd://c0ffee" || cs[0].ImageID != "registry.local/busybox@sha256:0123" ||
		cs[0].LastTerminationState.Terminated == nil || cs[0].LastTerminationState.Terminated.ExitCode != 1 ||
		got.Status.HostIP != "192.0.2.99" || got.Status.StartTime == nil || got.Status.QOSClass != corev1.PodQOSBestEffort {
		t.Errorf("status %+v", got.Status)
	}
	for _, c := range got.Status.Conditions {
		if c.Type == corev1.PodReady && (c.Status != corev1.ConditionTrue || c.LastTransitionTime.IsZero()) {
			t.Errorf("Ready %+v", c)
		}
	}

	// (b) kubectl logs --tail: the parameters reach the agent, its answer
	// reaches kubectl.
	ch := kubectlAsync(ctx, "logs", pod.Name, "-n", ns, "--tail=2", "--timestamps")
	o := ap.open(t)
	if o.Namespace != ns || o.Pod != pod.Name || o.Container != "app" || o.TailLines != 2 || !o.Timestamps || o.Follow || o.Previous {
		t.Errorf("stream-open %+v", o)
	}
	ap.data(t, ctx, o.ID, "line one\n", false, "")
	ap.data(t, ctx, o.ID, "line two\n", true, "")
	if out := waitOut(t, ch); out != "line one\nline two\n" {
		t.Errorf("kubectl logs --tail=2: %q", out)
	}

	// (c) --previous.
	ch = kubectlAsync(ctx, "logs", pod.Name, "-n", ns, "--previous")
	o = ap.open(t)
	if !o.Previous || o.TailLines != -1 {
		t.Errorf("stream-open %+v", o)
	}
	ap.data(t, ctx, o.ID, "before the crash\n", true, "")
	if out := waitOut(t, ch); out != "before the crash\n" {
		t.Errorf("kubectl logs --previous: %q", out)
	}

	// (d) The agent has no such log: kubectl says why.
	ch = kubectlAsync(ctx, "logs", pod.Name, "-n", ns, "--previous", "--since=1h")
	o = ap.open(t)
	if o.SinceSeconds != 3600 {
		t.Errorf("stream-open %+v", o)
	}
	ap.data(t, ctx, o.ID, "", true, "container app of pod default/sl-web has no previous terminated instance")
	out = waitOut(t, ch)
	if !strings.Contains(out, "has no previous terminated instance") {
		t.Errorf("kubectl logs of a missing log: %q", out)
	}
	t.Logf("kubectl logs of a missing log: %s", strings.TrimSpace(out))

	// (e) kubectl logs -f: lines arrive while the stream is open; it ends
	// when the agent sends EOF.
	cmd := exec.CommandContext(ctx, filepath.Join(st.CP.BinDir, "kubectl"), "--kubeconfig="+st.CP.Kubeconfig,
		"logs", "-f", pod.Name, "-n", ns)
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewReader(stdout)
	o = ap.open(t)
	if !o.Follow {
		t.Errorf("stream-open %+v", o)
	}
	ap.data(t, ctx, o.ID, "", false, "") // as the agent does: log found, nothing yet
	for i := range 3 {
		want := fmt.Sprintf("tick %d\n", i)
		ap.data(t, ctx, o.ID, want, false, "")
		got := make(chan string, 1)
		go func() { l, _ := lines.ReadString('\n'); got <- l }()
		select {
		case l := <-got:
			if l != want {
				t.Fatalf("kubectl logs -f printed %q, want %q (stderr %s)", l, want, stderr.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("kubectl logs -f did not print %q while following", want)
		}
	}
	ap.data(t, ctx, o.ID, "", true, "")
	rest, _ := io.ReadAll(lines)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil || len(rest) != 0 {
			t.Errorf("kubectl logs -f ended with %v, extra output %q, stderr %s", err, rest, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("kubectl logs -f did not end after the agent's EOF")
	}

	// (f) Ctrl-C on kubectl logs -f: the agent hears a cancel.
	// kubectl is interrupted once it printed the first line: the stream
	// is open end to end.
	fctx, stop := context.WithCancel(ctx)
	cmd = exec.CommandContext(fctx, filepath.Join(st.CP.BinDir, "kubectl"), "--kubeconfig="+st.CP.Kubeconfig,
		"logs", "-f", pod.Name, "-n", ns)
	stdout, _ = cmd.StdoutPipe()
	stderr.Reset()
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	o = ap.open(t)
	ap.data(t, ctx, o.ID, "first\n", false, "")
	first := make(chan string, 1)
	go func() { l, _ := bufio.NewReader(stdout).ReadString('\n'); first <- l }()
	select {
	case l := <-first:
		if l != "first\n" {
			t.Fatalf("kubectl logs -f printed %q, want %q (stderr %s)", l, "first\n", stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("kubectl logs -f did not print %q while following", "first\n")
	}
	stop()
	done = make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("kubectl did not finish")
	}
	deadline := time.After(20 * time.Second)
	for cancelled := false; !cancelled; {
		select {
		case a := <-ap.sacks:
			cancelled = a.ID == o.ID && a.Cancel
		case <-deadline:
			t.Fatal("no cancel reached the agent after kubectl went away")
		}
	}

	// (g) Graceful delete: the pod stays until the agent says its
	// containers stopped; then the relay deletes it.
	for len(ap.syncs) > 0 { // what the earlier steps left
		<-ap.syncs
	}
	if _, err := st.CP.Kubectl(ctx, "delete", "pod", pod.Name, "-n", ns, "--wait=false"); err != nil {
		t.Fatal(err)
	}
	// The relay has acted on the deletion once it tells the agent: the
	// pod must still be there then.
	told := time.After(20 * time.Second)
	for deleting := false; !deleting; {
		select {
		case s := <-ap.syncs:
			for _, u := range s.Upserts {
				deleting = deleting || (u.Kind == wire.KindPod && u.Name == pod.Name && u.Pod != nil && u.Pod.Deleting)
			}
		case <-told:
			t.Fatal("the agent was never told that the pod is being deleted")
		}
	}
	if _, err := kc.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{}); err != nil {
		t.Fatalf("pod gone before the agent said its containers stopped: %v", err)
	}
	stopped := *running
	stopped.Phase, stopped.Terminated = "Running", true
	stopped.Conditions = []wire.Condition{{Type: "PodScheduled", Status: "True"}, {Type: "Ready", Status: "False", Reason: "ContainersNotReady"}}
	stopped.Containers = []wire.ContainerStatus{{Name: "app", Image: "registry.local/busybox:test", ContainerID: "containerd://c0ffee", RestartCount: 1,
		State: wire.ContainerState{Kind: wire.StateTerminated, ExitCode: 143, Signal: 15, Reason: "Error",
			StartedAt: now.Add(-30 * time.Second).UnixMilli(), FinishedAt: time.Now().UnixMilli()}}}
	ap.report(t, ctx, &stopped)
	wait.State(t, ctx, 20*time.Second, "the pod deleted after the agent reported it terminated", func() (bool, string) {
		_, err := kc.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}

// TestPodStatusNotBoundIsDropped: a report about a pod of another node is
// acked (so it leaves the agent's outbox) and written nowhere.
func TestPodStatusNotBoundIsDropped(t *testing.T) {
	needStack(t)
	ctx := ctxFor(t, 2*time.Minute)
	const ns = "default"
	kc := st.CP.Client()
	p := joinPeer(t, ctx, "status-intruder")
	ap := connectAgentPeer(t, ctx, p)
	victim := createPod(t, ctx, "sl-victim", "status-elsewhere")
	ap.report(t, ctx, &wire.PodStatus{UID: string(victim.UID), Namespace: ns, Name: victim.Name, Phase: "Failed", Reason: "Evil", Terminated: true})
	got, err := kc.CoreV1().Pods(ns).Get(ctx, victim.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("another node's pod: %v", err)
	}
	if got.Status.Phase == corev1.PodFailed || got.Status.Reason == "Evil" {
		t.Errorf("another node's pod was written: %+v", got.Status)
	}
	// kubectl logs of a pod whose node's agent is gone says so.
	gone := joinPeer(t, ctx, "status-gone")
	gp := connectAgentPeer(t, ctx, gone)
	if err := st.WaitNodeReady(ctx, "status-gone", true, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	gp.cancel()
	gp.ws.Close(websocket.StatusNormalClosure, "going offline")
	orphan := createPod(t, ctx, "sl-orphan", "status-gone")
	out, err := st.CP.Kubectl(ctx, "logs", orphan.Name, "-n", ns)
	if err == nil || !strings.Contains(out, `pod default/sl-orphan is not bound to an edge node connected to this relay replica`) {
		t.Errorf("kubectl logs on an unconnected node: %v %q", err, out)
	}
	t.Logf("kubectl logs on an unconnected node: %s", strings.TrimSpace(out))
}
