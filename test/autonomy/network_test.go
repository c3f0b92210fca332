package autonomy

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/test/harness"
	"outpost.dev/test/podnet"
	"outpost.dev/test/stack"
)

// TestKill9DuringPodCreate kills the real agent with SIGKILL while it
// creates pods on the pod network (every pod publishes a hostPort, so
// portmap makes chains for it), again and again, with pods created and
// deleted between the kills, each kill after a random number (1 to 8) of
// the containerd events of that work. The agent that finally stays up runs each
// remaining pod once with an address, with exactly one veth, namespace,
// lease, cached CNI result and hostPort chain per pod; once the pods are
// deleted nothing is left of any of them, not even of the pods deleted
// while the agent was down.
func TestKill9DuringPodCreate(t *testing.T) {
	needStack(t)
	harness.RequireCNI(t)
	ctx := ctxFor(t, 6*time.Minute)
	e := newEdge(t, ctx, "auto-kill-net", false)
	kc := st.CP.Client()
	var cidr string
	stack.WaitFor(t, ctx, time.Minute, "the node's pod CIDR", func() (bool, string) {
		n, err := kc.CoreV1().Nodes().Get(ctx, e.name, metav1.GetOptions{})
		if err == nil {
			cidr = n.Spec.PodCIDR
		}
		return cidr != "", fmt.Sprint(err)
	})
	node := podnet.Node{StateDir: e.agent.StateDir, Bridge: e.agent.Bridge, CIDR: cidr}
	uids := map[string]string{} // every pod ever made → its UID
	live := map[string]bool{}
	mk := func(name string) {
		port, err := harness.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		p := podSpec(name, e.name, "sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait")
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 8080, HostPort: int32(port)}}
		uids[name] = string(createPod(t, ctx, p).UID)
		live[name] = true
	}
	pidFile := filepath.Join(e.agent.StateDir, "agent.pid")
	events := e.containerdEvents(t, ctx)
	const kills = 8
	for i := range kills {
		// Two new pods, and from the third kill on one older pod
		// deleted, then the agent killed while it works on them.
		events.drain()
		mk(fmt.Sprintf("knet-%d-a", i))
		mk(fmt.Sprintf("knet-%d-b", i))
		if i >= 2 {
			old := fmt.Sprintf("knet-%d-a", i-2)
			if err := kc.CoreV1().Pods(ns).Delete(ctx, old, *metav1.NewDeleteOptions(0)); err != nil {
				t.Fatal(err)
			}
			delete(live, old)
		}
		// The kill comes after a random number of containerd events of
		// that work: at least eight come (each new pod's snapshot,
		// container, task and start).
		got := events.await(t, 1+rand.IntN(8), time.Minute)
		t.Logf("kill %d after %d containerd events%s", i, len(got), lastEvent(got))
		if e.agent.Proc.Exited() {
			t.Fatalf("kill %d: the agent exited by itself:\n%s", i, e.agent.Proc.LogTail(20))
		}
		if err := e.agent.Kill(); err != nil {
			t.Fatal(err)
		}
		<-e.agent.Proc.Done()
		if err := e.agent.Start(); err != nil {
			t.Fatal(err)
		}
		want := strconv.Itoa(e.agent.Proc.Pid())
		stack.WaitFor(t, ctx, 30*time.Second, "the agent opening its store", func() (bool, string) {
			b, _ := os.ReadFile(pidFile)
			return strings.TrimSpace(string(b)) == want, "pid file: " + string(b)
		})
	}
	var names, all []string
	for n := range live {
		names = append(names, n)
	}
	for _, u := range uids {
		all = append(all, u)
	}
	stack.WaitFor(t, ctx, 3*time.Minute, "the remaining pods Running with an IP", func() (bool, string) {
		if ok, msg := runningInAPI(ctx, names...); !ok {
			return false, msg
		}
		for _, n := range names {
			if p, err := apiPod(ctx, n); err != nil || p.Status.PodIP == "" {
				return false, fmt.Sprintf("%s: no podIP (%v)", n, err)
			}
		}
		return true, ""
	})
	var left podnet.Left
	stack.WaitFor(t, ctx, time.Minute, "one veth, namespace, lease and cached result per pod", func() (bool, string) {
		var err error
		left, err = podnet.Check(node, all)
		return err == nil && left.Pods(len(names)) && left.Masq == 1, fmt.Sprintf("%d pods %v: %v (%v)", len(names), uids, left, err)
	})
	rules := strings.Join(left.Rules, "\n")
	for n, uid := range uids {
		if has := strings.Contains(rules, podnet.ChainName("DN-", uid)); has != live[n] {
			t.Errorf("%s (running: %v): its hostPort chain there: %v\n%s", n, live[n], has, rules)
		}
	}
	s, err := e.state(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if r := s.running[podHash(uids[n])]; len(r) != 1 {
			t.Errorf("%s: %d running tasks, want 1", n, len(r))
		}
	}
	t.Logf("after %d kills: %d pods running of %d made", kills, len(names), len(uids))

	for _, n := range names {
		if err := kc.CoreV1().Pods(ns).Delete(ctx, n, *metav1.NewDeleteOptions(0)); err != nil {
			t.Fatal(err)
		}
	}
	stack.WaitFor(t, ctx, 2*time.Minute, "nothing left on the pod network", func() (bool, string) {
		ts, err := e.tasks(ctx)
		if err != nil || len(ts) != 0 {
			return false, fmt.Sprintf("tasks %v (%v)", ts, err)
		}
		left, err = podnet.Check(node, all)
		return err == nil && left.Empty() && left.Masq == 1, fmt.Sprintf("pods %v: %v (%v)", uids, left, err)
	})
}
