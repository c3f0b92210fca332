package autonomy

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"outpost.dev/test/stack"
)

// TestReplicaKilledAgentsMove runs two relay replicas that share nothing
// but the API server behind one address (a round-robin TCP balancer), two
// real agents spread over them, each with a running pod, a Device
// reporting five times a second and pods that finish around the switch.
// One replica is killed with SIGKILL: its agent lands on the other
// (the time it took is logged), the other agent is left alone, and
// every report the agents made reaches the API server exactly once and
// in order — each finished pod is Succeeded, its status never goes back;
// each Device property's report time only moves forward — while the
// running pods keep their containerd tasks and PIDs, the Devices stay
// Connected and the nodes' Leases keep being renewed.
func TestReplicaKilledAgentsMove(t *testing.T) {
	needStack(t)
	ctx := ctxFor(t, 4*time.Minute)
	kc := st.CP.Client()

	// The package's relay and a second replica, behind one address.
	r2, err := st.StartRelay(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r2.Stop() })
	lb, err := stack.NewBalancer(relay.Addr, r2.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lb.Close)
	replicas := []*stack.Relay{relay, r2}
	// A Node names the replica that holds its agent by the kubelet port
	// that replica wrote into it.
	byPort := map[int32]*stack.Relay{}
	for _, r := range replicas {
		_, p, _ := net.SplitHostPort(r.KubeletAddr)
		n, _ := strconv.Atoi(p)
		byPort[int32(n)] = r
	}
	holder := func(node string) (*stack.Relay, string) {
		n, err := kc.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return nil, err.Error()
		}
		p := n.Status.DaemonEndpoints.KubeletEndpoint.Port
		return byPort[p], fmt.Sprintf("%s: kubelet port %d", node, p)
	}
	connectedTo := func(r *stack.Relay) (float64, error) {
		m, err := stack.Scrape(ctx, r.URL+"/metrics")
		return stack.Sum(m, "outpost_relay_connected_agents"), err
	}

	names := []string{"rep-a", "rep-b"}
	edges := map[string]*edge{}
	for _, n := range names {
		edges[n] = newEdgeVia(t, ctx, relay, n, false, "https://"+lb.Addr)
	}
	on := map[string]*stack.Relay{}
	stack.WaitFor(t, ctx, time.Minute, "the agents spread over both replicas", func() (bool, string) {
		var msgs []string
		seen := map[*stack.Relay]bool{}
		for _, n := range names {
			r, msg := holder(n)
			on[n], seen[r] = r, r != nil
			msgs = append(msgs, msg)
		}
		for _, r := range replicas {
			if c, err := connectedTo(r); err != nil || c != 1 {
				msgs = append(msgs, fmt.Sprintf("%s: %v agents connected (%v)", r.Addr, c, err))
				return false, strings.Join(msgs, "; ")
			}
		}
		return len(seen) == 2 && !seen[nil], strings.Join(msgs, "; ")
	})
	var victim, survivor string // the nodes on the killed and the surviving replica
	for _, n := range names {
		if on[n] == r2 {
			victim = n
		} else {
			survivor = n
		}
	}
	t.Logf("%s on %s (killed next), %s on %s", victim, r2.Addr, survivor, relay.Addr)

	// Per node: a pod that runs on, a Device, and three pods that finish
	// when told: one before the kill, one just before, one just after.
	var devs, running, finishing []string
	nodeOf := map[string]string{} // pod → its node
	for _, n := range names {
		e := edges[n]
		createPod(t, ctx, podSpec(n+"-app", e.name, "sleep", "3600"))
		running = append(running, n+"-app")
		nodeOf[n+"-app"] = n
		for i := range 3 {
			p := podSpec(fmt.Sprintf("%s-done-%d", n, i), e.name, "sh", "-c", "until [ -e /tmp/go ]; do sleep 0.1; done")
			p.Spec.RestartPolicy = corev1.RestartPolicyNever
			createPod(t, ctx, p)
			finishing = append(finishing, p.Name)
			nodeOf[p.Name] = n
		}
		devs = append(devs, n+"-climate")
	}
	// The two properties are reported at different rates, so most twin
	// reports carry the temperature alone: a relay that wrote a report
	// over a stale copy of the Device would put an older humidity back.
	var docs []string
	for _, n := range names {
		docs = append(docs, bme280YAML(n+"-climate", n, "200ms", "3s"))
	}
	applyDevices(t, ctx, docs)
	stack.WaitFor(t, ctx, 2*time.Minute, "every pod Running in the API", func() (bool, string) {
		return runningInAPI(ctx, append(slices.Clone(running), finishing...)...)
	})
	dyn, err := dynamic.NewForConfig(st.CP.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	devRec := recordDevices(t, dyn)
	stack.WaitFor(t, ctx, time.Minute, "both Devices reporting both properties", func() (bool, string) {
		for _, d := range devs {
			if r := devRec.last(d); r.at["humidity"].IsZero() || r.at["temperature"].IsZero() {
				return false, fmt.Sprintf("%s: %+v", d, r)
			}
		}
		return true, ""
	})
	recs := map[string]*recorder{}
	for _, n := range names {
		recs[n] = recordPods(t, n)
	}

	// What runs before the kill.
	tasks := map[string]task{} // pod → its task
	for _, p := range running {
		e := edges[nodeOf[p]]
		ap, err := apiPod(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := containerID(ap)
		s, err := e.state(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if tk, ok := s.tasks[id]; !ok || tk.Status != "RUNNING" {
			t.Fatalf("%s: container %s has task %+v", p, id, tk)
		} else {
			tasks[p] = tk
		}
	}
	leases := func() map[string]time.Time {
		m := map[string]time.Time{}
		for _, n := range names {
			if l, err := kc.CoordinationV1().Leases("kube-node-lease").Get(ctx, n, metav1.GetOptions{}); err == nil && l.Spec.RenewTime != nil {
				m[n] = l.Spec.RenewTime.Time
			}
		}
		return m
	}
	// EdgeLinkReady names the agent's connection (its relay session): a
	// reconnect writes another.
	session := func(n string) string {
		nd, err := kc.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range nd.Status.Conditions {
			if c.Type == "EdgeLinkReady" {
				return string(c.Status) + " " + c.Message
			}
		}
		return ""
	}
	survivorSession := session(survivor)
	finish := func(pod string) {
		t.Helper()
		e := edges[nodeOf[pod]]
		ap, err := apiPod(ctx, pod)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := containerID(ap)
		if out, err := st.Containerd.Ctr(ctx, "-n", e.ctrNS, "tasks", "exec", "--exec-id", "go-"+pod, id, "touch", "/tmp/go"); err != nil {
			t.Fatalf("%s: %v\n%s", pod, err, out)
		}
	}
	succeeded := func(pods ...string) func() (bool, string) {
		return func() (bool, string) {
			for _, p := range pods {
				ap, err := apiPod(ctx, p)
				if err != nil {
					return false, err.Error()
				}
				if ap.Status.Phase != corev1.PodSucceeded {
					return false, fmt.Sprintf("%s: %s", p, ap.Status.Phase)
				}
			}
			return true, ""
		}
	}

	// done-0 finishes and is in the API before the kill; done-1 the
	// moment before it; done-2 while the victim's agent is cut off.
	for _, n := range names {
		finish(n + "-done-0")
	}
	stack.WaitFor(t, ctx, time.Minute, "the first pods Succeeded", succeeded(names[0]+"-done-0", names[1]+"-done-0"))
	before := leases()
	for _, n := range names {
		finish(n + "-done-1")
	}
	if err := r2.Proc.Kill(); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	for _, n := range names {
		finish(n + "-done-2")
	}

	// The victim's agent lands on the survivor.
	stack.WaitFor(t, ctx, time.Minute, "the killed replica's agent on the other", func() (bool, string) {
		r, msg := holder(victim)
		if r != relay {
			return false, msg
		}
		c, err := connectedTo(relay)
		return err == nil && c == 2, fmt.Sprintf("%s; %v agents on %s (%v)", msg, c, relay.Addr, err)
	})
	moved := time.Now()
	t.Logf("%s moved to %s %s after its replica was killed", victim, relay.Addr, moved.Sub(killedAt).Round(10*time.Millisecond))

	stack.WaitFor(t, ctx, time.Minute, "every finished pod Succeeded", succeeded(finishing...))
	stack.WaitFor(t, ctx, time.Minute, "each Device reported through the survivor", func() (bool, string) {
		for _, d := range devs {
			if at := devRec.last(d).at["temperature"]; !at.After(moved) {
				return false, fmt.Sprintf("%s: last temperature at %s", d, at)
			}
		}
		return true, ""
	})
	stack.WaitFor(t, ctx, time.Minute, "both Leases renewed after the move", func() (bool, string) {
		now := leases()
		for _, n := range names {
			if !now[n].After(moved) {
				return false, fmt.Sprintf("%s renewed %s", n, now[n])
			}
		}
		return true, ""
	})
	after := leases()
	devRec.stop()
	for _, r := range recs {
		r.stop()
	}

	// Leases: no gap long enough for the node controller to notice (the
	// one seen is an upper bound of the real one), and the nodes Ready.
	for _, n := range names {
		gap := after[n].Sub(before[n])
		t.Logf("%s: lease renewals %s apart across the kill", n, gap.Round(100*time.Millisecond))
		if gap >= 40*time.Second {
			t.Errorf("%s: lease unrenewed for %s across the kill, the node controller's grace period is 40s", n, gap)
		}
		if s, err := st.NodeReady(ctx, n); err != nil || s != corev1.ConditionTrue {
			t.Errorf("%s: Ready %q (%v)", n, s, err)
		}
	}
	if s := session(survivor); s != survivorSession {
		t.Errorf("%s, on the surviving replica, reconnected during the move: EdgeLinkReady %q, was %q", survivor, s, survivorSession)
	}

	// The running pods: same task, same PID; no restart in the API.
	for p, tk := range tasks {
		e := edges[nodeOf[p]]
		s, err := e.state(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.tasks[tk.ID]; got != tk {
			t.Errorf("%s: task %+v after the move, was %+v", p, got, tk)
		}
		for _, u := range recs[e.name].of(p) {
			if u.Restarts != 0 || u.ID != "containerd://"+tk.ID {
				t.Errorf("%s: the API saw restartCount %d, container %s (runs %s)", p, u.Restarts, u.ID, tk.ID)
			}
		}
	}

	// Pod status, update by update: the phase never goes back, and once
	// the container is terminated the API never shows it otherwise.
	rank := map[corev1.PodPhase]int{corev1.PodPending: 0, corev1.PodRunning: 1, corev1.PodSucceeded: 2, corev1.PodFailed: 2}
	for _, p := range finishing {
		ups := recs[nodeOf[p]].of(p)
		var phases []corev1.PodPhase
		for i, u := range ups {
			phases = append(phases, u.Phase)
			if i > 0 && rank[u.Phase] < rank[ups[i-1].Phase] {
				t.Errorf("%s: phase went back in the API: %v", p, phases)
				break
			}
		}
		// Nothing changes on the edge once the pod has finished: a second
		// update as Succeeded is a report written again.
		if n := slices.Index(phases, corev1.PodSucceeded); n < 0 || n != len(phases)-1 {
			t.Errorf("%s: the watch saw it Succeeded in updates %v; want once, the last", p, phases)
		}
		t.Logf("%s: %d updates in the watch: %v", p, len(ups), phases)
	}

	// Devices, write by write: each property's report time only moves
	// forward (a report written again after a newer one, or over a stale
	// copy of the Device, would move one back), each write carries a
	// newer reading (the Devices stay Connected, so nothing else changes
	// their status), and the Device stays Connected.
	for _, d := range devs {
		ws := devRec.of(d)
		for i := 1; i < len(ws); i++ {
			for prop, at := range ws[i-1].at {
				if ws[i].at[prop].Before(at) {
					t.Errorf("%s: %s reported at %s in write %d, at %s in the write before (resourceVersion %s → %s)",
						d, prop, ws[i].at[prop].Format(time.RFC3339Nano), i, at.Format(time.RFC3339Nano), ws[i-1].rv, ws[i].rv)
				}
			}
			newer := false
			for prop, at := range ws[i].at {
				newer = newer || at.After(ws[i-1].at[prop])
			}
			if !newer {
				t.Errorf("%s: write %d (resourceVersion %s) carries no newer reading than the one before: a report written again", d, i, ws[i].rv)
			}
			if !ws[i].connected {
				t.Errorf("%s: not Connected in write %d (resourceVersion %s)", d, i, ws[i].rv)
			}
		}
		n := 0
		for _, w := range ws {
			if w.at["temperature"].After(killedAt) && w.at["temperature"].Before(moved) {
				n++
			}
		}
		t.Logf("%s: %d status writes watched, %d of readings taken between the kill and the move", d, len(ws), n)
	}
}

// deviceWrite is one Device status as a watch delivered it.
type deviceWrite struct {
	rv        string
	at        map[string]time.Time // property → its report time
	connected bool
}

// deviceRecorder records every update of the Devices in ns from a watch,
// re-watching from the last resourceVersion when the stream ends.
type deviceRecorder struct {
	mu     sync.Mutex
	writes map[string][]deviceWrite
	cancel context.CancelFunc
	done   chan struct{}
}

func recordDevices(t *testing.T, dyn dynamic.Interface) *deviceRecorder {
	t.Helper()
	gvr := schema.GroupVersionResource{Group: "outpost.dev", Version: "v1alpha1", Resource: "devices"}
	ctx, cancel := context.WithCancel(context.Background())
	r := &deviceRecorder{writes: map[string][]deviceWrite{}, cancel: cancel, done: make(chan struct{})}
	l, err := dyn.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range l.Items {
		r.add(&l.Items[i])
	}
	rv := l.GetResourceVersion()
	go func() {
		defer close(r.done)
		for ctx.Err() == nil {
			w, err := dyn.Resource(gvr).Namespace(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: rv})
			if err != nil {
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
				continue
			}
			for ev := range w.ResultChan() {
				if u, ok := ev.Object.(*unstructured.Unstructured); ok {
					rv = u.GetResourceVersion()
					r.add(u)
				}
			}
			w.Stop()
		}
	}()
	t.Cleanup(r.stop)
	return r
}

func (r *deviceRecorder) add(u *unstructured.Unstructured) {
	w := deviceWrite{rv: u.GetResourceVersion(), at: map[string]time.Time{}}
	rep, _, _ := unstructured.NestedMap(u.Object, "status", "reported")
	for k, v := range rep {
		if m, ok := v.(map[string]any); ok {
			if s, ok := m["at"].(string); ok {
				w.at[k], _ = time.Parse(time.RFC3339Nano, s)
			}
		}
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Connected" {
			w.connected = m["status"] == "True"
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	ws := r.writes[u.GetName()]
	if len(ws) > 0 && ws[len(ws)-1].rv == w.rv {
		return // the list and the watch's first event
	}
	r.writes[u.GetName()] = append(ws, w)
}

func (r *deviceRecorder) stop() {
	r.cancel()
	<-r.done
}

// of returns the writes of Device name, in order.
func (r *deviceRecorder) of(name string) []deviceWrite {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.writes[name])
}

// last returns the last write of Device name.
func (r *deviceRecorder) last(name string) deviceWrite {
	ws := r.of(name)
	if len(ws) == 0 {
		return deviceWrite{}
	}
	return ws[len(ws)-1]
}
