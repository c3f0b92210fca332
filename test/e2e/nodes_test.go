package e2e

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/test/stack"
	"outpost.dev/test/wait"
)

var (
	agentsOnce sync.Once
	agentsErr  error
	agents     = map[string]*stack.Agent{}
)

// twoAgents joins and starts edge-a and edge-b once for the package, as
// two separate processes with their own state directories.
func twoAgents(t *testing.T) (a, b *stack.Agent) {
	t.Helper()
	needStack(t)
	agentsOnce.Do(func() {
		ctx := ctxFor(t, 2*time.Minute)
		for _, name := range []string{"edge-a", "edge-b"} {
			ag, err := st.Join(ctx, relay, name)
			if err != nil {
				agentsErr = err
				return
			}
			if err := ag.Start(); err != nil {
				agentsErr = err
				return
			}
			agents[name] = ag
		}
	})
	if agentsErr != nil {
		t.Fatal(agentsErr)
	}
	ctx := ctxFor(t, 2*time.Minute)
	for _, name := range []string{"edge-a", "edge-b"} {
		ag := agents[name]
		if ag.Proc.Exited() {
			if err := ag.Start(); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.WaitNodeReady(ctx, name, true, 90*time.Second); err != nil {
			t.Fatalf("%v\nagent log:\n%s", err, ag.Proc.LogTail(30))
		}
	}
	return agents["edge-a"], agents["edge-b"]
}

func TestAgentsJoinAndBecomeReady(t *testing.T) {
	twoAgents(t)
	ctx := ctxFor(t, time.Minute)
	for _, name := range []string{"edge-a", "edge-b"} {
		n, err := st.CP.Client().CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wantLabels := map[string]string{
			"node-role.kubernetes.io/edge": "",
			"kubernetes.io/arch":           runtime.GOARCH,
			"kubernetes.io/os":             "linux",
			"kubernetes.io/hostname":       name,
			"outpost.dev/board":            "sim",
		}
		for k, v := range wantLabels {
			if got, ok := n.Labels[k]; !ok || got != v {
				t.Errorf("%s: label %s = %q (present %v), want %q", name, k, got, ok, v)
			}
		}
		info := n.Status.NodeInfo
		if info.Architecture != runtime.GOARCH || info.OperatingSystem != "linux" {
			t.Errorf("%s: nodeInfo arch/os = %s/%s", name, info.Architecture, info.OperatingSystem)
		}
		if info.KubeletVersion != "v0.1.0-test" {
			t.Errorf("%s: version %q, want the agent's v0.1.0-test", name, info.KubeletVersion)
		}
		if info.OSImage == "" || info.KernelVersion == "" {
			t.Errorf("%s: OS image %q, kernel %q: want both", name, info.OSImage, info.KernelVersion)
		}
		cpu := n.Status.Capacity[corev1.ResourceCPU]
		if cpu.MilliValue() <= 0 || cpu.MilliValue() > int64(runtime.NumCPU())*1000 {
			t.Errorf("%s: cpu capacity %s, machine has %d CPUs", name, cpu.String(), runtime.NumCPU())
		}
		mem := n.Status.Capacity[corev1.ResourceMemory]
		if mem.Value() < 64<<20 {
			t.Errorf("%s: memory capacity %s", name, mem.String())
		}
		alloc := n.Status.Allocatable[corev1.ResourceMemory]
		if alloc.Value() <= 0 || alloc.Value() > mem.Value() {
			t.Errorf("%s: allocatable memory %s of capacity %s", name, alloc.String(), mem.String())
		}
		if pods := n.Status.Capacity[corev1.ResourcePods]; pods.Value() <= 0 {
			t.Errorf("%s: pods capacity %s", name, pods.String())
		}
		lease, err := st.CP.Client().CoordinationV1().Leases("kube-node-lease").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("%s: lease: %v", name, err)
		}
		if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != name {
			t.Errorf("%s: lease holder %v", name, lease.Spec.HolderIdentity)
		}
	}
	out, err := st.CP.Kubectl(ctx, "get", "nodes", "-o", "wide")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl get nodes -o wide:\n%s", out)
	for _, name := range []string{"edge-a", "edge-b"} {
		line := lineWith(out, name)
		for _, want := range []string{"Ready", "edge", "v0.1.0-test"} {
			if !strings.Contains(line, want) {
				t.Errorf("kubectl line for %s lacks %q: %q", name, want, line)
			}
		}
		if strings.Contains(line, "NotReady") {
			t.Errorf("%s is NotReady: %q", name, line)
		}
	}
}

func TestKilledAgentGoesUnknownThenBackWithoutRejoin(t *testing.T) {
	_, b := twoAgents(t)
	ctx := ctxFor(t, 3*time.Minute)
	if err := b.Kill(); err != nil {
		t.Fatal(err)
	}
	// The node lifecycle controller marks it once the grace period passes.
	if err := st.WaitNodeReady(ctx, "edge-b", false, gracePeriod+45*time.Second); err != nil {
		t.Fatal(err)
	}
	if s, _ := st.NodeReady(ctx, "edge-b"); s != corev1.ConditionUnknown {
		t.Errorf("killed agent's node Ready = %q, want Unknown", s)
	}
	if s, _ := st.NodeReady(ctx, "edge-a"); s != corev1.ConditionTrue {
		t.Errorf("the other node went %q while edge-b was down", s)
	}
	// Restart from the state directory alone: no token, no join.
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	if err := st.WaitNodeReady(ctx, "edge-b", true, 60*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, b.Proc.LogTail(30))
	}
}

func TestRelayRestartKeepsNodesReady(t *testing.T) {
	twoAgents(t)
	ctx := ctxFor(t, 3*time.Minute)
	before := leaseRenewTimes(t, ctx)

	// Watch Ready throughout the restart and a while after.
	stop := make(chan struct{})
	bad := make(chan string, 16)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			for _, name := range []string{"edge-a", "edge-b"} {
				if s, err := st.NodeReady(ctx, name); err == nil && s != corev1.ConditionTrue {
					select {
					case bad <- name + " went " + string(s):
					default:
					}
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	failed := func(name string) int { return strings.Count(agents[name].Proc.LogTail(200), `msg="connect failed"`) }
	before0 := map[string]int{"edge-a": failed("edge-a"), "edge-b": failed("edge-b")}
	if err := relay.Stop(); err != nil {
		t.Logf("relay stop: %v", err)
	}
	// Each agent finds the relay gone: a connect attempt fails.
	wait.For(t, 30*time.Second, "both agents to fail a connect while the relay is down", func() bool {
		return failed("edge-a") > before0["edge-a"] && failed("edge-b") > before0["edge-b"]
	})
	if err := relay.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// The agents must reconnect by themselves: their leases move again.
	var after map[string]time.Time
	wait.State(t, ctx, 60*time.Second, "leases renewed after the relay restart", func() (bool, string) {
		after = leaseRenewTimes(t, ctx)
		return after["edge-a"].After(before["edge-a"].Add(3*time.Second)) &&
			after["edge-b"].After(before["edge-b"].Add(3*time.Second)) &&
			after["edge-a"].After(time.Now().Add(-2*leaseDuration)) &&
			after["edge-b"].After(time.Now().Add(-2*leaseDuration)), fmt.Sprint(before, " then ", after)
	})
	// The node lifecycle controller marks a node Unknown only when its
	// lease goes unrenewed for the grace period. The watcher saw Ready
	// through the outage; the gap between the last renewal seen before it
	// and the first after (an upper bound of the real gap) says no late
	// decision can come from it either.
	for _, name := range []string{"edge-a", "edge-b"} {
		if gap := after[name].Sub(before[name]); gap >= gracePeriod {
			t.Errorf("%s: lease unrenewed for up to %s across the relay restart, the grace period is %s", name, gap, gracePeriod)
		}
	}
	close(stop)
	wg.Wait()
	close(bad)
	for b := range bad {
		t.Errorf("during the relay restart: %s", b)
	}
}

func leaseRenewTimes(t *testing.T, ctx context.Context) map[string]time.Time {
	t.Helper()
	m := map[string]time.Time{}
	for _, name := range []string{"edge-a", "edge-b"} {
		l, err := st.CP.Client().CoordinationV1().Leases("kube-node-lease").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if l.Spec.RenewTime != nil {
			m[name] = l.Spec.RenewTime.Time
		}
	}
	return m
}

func lineWith(out, word string) string {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == word {
			return l
		}
	}
	return ""
}

// TestKilledRelayAgentsBackWithinSeconds kills the relay (SIGKILL: no
// close frames), lets the agents' back-off grow over five failed
// connects, and restarts the relay on the same address: both agents are
// connected again within about a second of it listening (their TCP
// probe), not after their back-off (drawn from up to 30 s by then).
func TestKilledRelayAgentsBackWithinSeconds(t *testing.T) {
	twoAgents(t)
	ctx := ctxFor(t, 4*time.Minute)
	count := func(name, msg string) int { return strings.Count(agents[name].Proc.LogTail(400), msg) }
	const failedMsg, connectedMsg = `msg="connect failed"`, "msg=connected "
	failed0 := map[string]int{"edge-a": count("edge-a", failedMsg), "edge-b": count("edge-b", failedMsg)}
	connected0 := map[string]int{"edge-a": count("edge-a", connectedMsg), "edge-b": count("edge-b", connectedMsg)}
	if err := relay.Proc.Kill(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if relay.Proc.Exited() {
			if err := relay.Start(context.Background()); err != nil {
				t.Errorf("restart the relay: %v", err)
			}
		}
	})
	wait.For(t, 2*time.Minute, "both agents to fail five connects while the relay is down", func() bool {
		return count("edge-a", failedMsg) >= failed0["edge-a"]+5 && count("edge-b", failedMsg) >= failed0["edge-b"]+5
	})
	// When the new relay process first accepts a connection, and when
	// both agents are connected again: each polled (at most 250 ms apart)
	// while the relay starts and answers /readyz.
	at := func(cond func() (bool, string)) <-chan time.Time {
		ch := make(chan time.Time, 1)
		go func() {
			defer close(ch)
			if wait.Until(ctx, 2*time.Minute, cond) == nil {
				ch <- time.Now()
			}
		}()
		return ch
	}
	listening := at(func() (bool, string) {
		c, err := net.DialTimeout("tcp", relay.Addr, time.Second)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
	connected := at(func() (bool, string) {
		return count("edge-a", connectedMsg) > connected0["edge-a"] && count("edge-b", connectedMsg) > connected0["edge-b"], ""
	})
	if err := relay.Start(ctx); err != nil {
		t.Fatal(err)
	}
	listenAt, ok1 := <-listening
	connectedAt, ok2 := <-connected
	if !ok1 || !ok2 {
		t.Fatalf("after the relay restart: seen listening %v, both agents connected %v", ok1, ok2)
	}
	// 3 s is the promise; the rest is slack for a loaded machine (the
	// polling, and an agent's TLS handshake and hello).
	const within = 3*time.Second + 3*time.Second
	took := connectedAt.Sub(listenAt)
	t.Logf("both agents connected %s after the restarted relay listened", took.Round(10*time.Millisecond))
	if took > within {
		t.Errorf("agents connected %s after the relay listened again; want within %s", took.Round(10*time.Millisecond), within)
	}
}
