package eviction

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/cloud/nodes"
	"outpost.dev/cloud/tolerations"
	"outpost.dev/test/stack"
)

// TestOfflineNodeKeepsItsPods: two edge nodes lose their link for longer
// than the shortened eviction timeouts. On "ev-keep" a pod scheduled before
// and a pod bound during the outage stay bound, and the first keeps its
// container running throughout; a pod there with the opt-out annotation is
// evicted, as is every pod on "ev-evict", whose Node has the opt-out label.
// The node conditions and the agents' metrics say what happened.
func TestOfflineNodeKeepsItsPods(t *testing.T) {
	need(t)
	ctx := ctxFor(t, 10*time.Minute)
	client := st.CP.Client()

	// The uplink: a proxy between the agents and the relay, down at first.
	proxy, err := stack.NewProxy(relay.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	proxy.Refuse(true)
	keep, evict := startAgent(t, ctx, "ev-keep", proxy), startAgent(t, ctx, "ev-evict", proxy)
	// A third node stays connected throughout: with every node of a zone
	// down, the node lifecycle controller assumes a disruption on its own
	// side and evicts nothing (full disruption), which proves nothing here.
	up := startAgent(t, ctx, "ev-up", nil)
	if err := st.WaitNodeReady(ctx, up.Name, true, 2*time.Minute); err != nil {
		t.Fatalf("%v\n%s", err, up.Proc.LogTail(40))
	}

	// Metrics: not connected yet, and never heard from a relay.
	waitMetric(t, ctx, keep, "outpost_link_connected", func(v float64) bool { return v == 0 })
	waitMetric(t, ctx, keep, "outpost_last_sync_timestamp_seconds", func(v float64) bool { return v == 0 })
	proxy.Refuse(false)
	for _, a := range []*stack.Agent{keep, evict} {
		if err := st.WaitNodeReady(ctx, a.Name, true, 2*time.Minute); err != nil {
			t.Fatalf("%v\n%s", err, a.Proc.LogTail(40))
		}
		waitMetric(t, ctx, a, "outpost_link_connected", func(v float64) bool { return v == 1 })
	}
	if c := nodeCond(t, ctx, keep.Name, nodes.ConditionLinkReady); c.Status != corev1.ConditionTrue || c.Reason != nodes.ReasonConnected {
		t.Errorf("connected node: %s %+v", nodes.ConditionLinkReady, c)
	}
	// The node opts out by label, as an administrator would.
	st.Kubectl(t, ctx, "label", "node", evict.Name, tolerations.OptOut+"=true")

	ns := "eviction"
	st.Kubectl(t, ctx, "create", "namespace", ns)
	stack.WaitFor(t, ctx, time.Minute, "default ServiceAccount", func() (bool, string) {
		_, err := client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})
	st.Apply(t, ctx, podYAML(ns, "kept", keep.Name, false)+"---\n"+podYAML(ns, "optout", keep.Name, true)+"---\n"+podYAML(ns, "evicted", evict.Name, false))
	for _, name := range []string{"kept", "optout", "evicted"} {
		waitRunning(t, ctx, ns, name, 3*time.Minute)
	}
	waitMetric(t, ctx, keep, "outpost_pods_running", func(v float64) bool { return v == 2 })

	kept := getPod(t, ctx, ns, "kept")
	keptID := strings.TrimPrefix(kept.Status.ContainerStatuses[0].ContainerID, "containerd://")
	if !taskRunning(t, ctx, keep.Name, keptID) {
		t.Fatalf("container %s of kept is not running in containerd", keptID)
	}

	// The uplink goes.
	cutAt := time.Now()
	proxy.Refuse(true)
	proxy.Cut()
	for _, a := range []*stack.Agent{keep, evict} {
		waitMetric(t, ctx, a, "outpost_link_connected", func(v float64) bool { return v == 0 })
	}
	// The relay saw the connection end and says so.
	stack.WaitFor(t, ctx, time.Minute, "EdgeLinkReady=False on "+keep.Name, func() (bool, string) {
		c := nodeCond(t, ctx, keep.Name, nodes.ConditionLinkReady)
		return c.Status == corev1.ConditionFalse && c.Reason == nodes.ReasonDisconnected &&
			strings.HasPrefix(c.Message, "agent disconnected since "), fmt.Sprintf("%+v", c)
	})
	// With the node offline, the relay made "kept"'s offline tolerations
	// last forever and left the opted-out pods with the cluster's 5 s.
	stack.WaitFor(t, ctx, time.Minute, "kept tolerates forever", func() (bool, string) {
		p := getPod(t, ctx, ns, "kept")
		return offlineSeconds(p) == "forever,forever", offlineSeconds(p)
	})
	for _, name := range []string{"optout", "evicted"} {
		if got := offlineSeconds(getPod(t, ctx, ns, name)); got != "5,5" {
			t.Errorf("%s (opted out): offline toleration seconds %s, want 5,5", name, got)
		}
	}
	// The agent knows when it last heard from the relay.
	waitMetric(t, ctx, keep, "outpost_last_sync_timestamp_seconds", func(v float64) bool {
		return v > float64(cutAt.Add(-30*time.Second).Unix()) && v <= float64(time.Now().Unix()+1)
	})

	// The node lifecycle controller gives up on both nodes and taints them.
	for _, a := range []*stack.Agent{keep, evict} {
		if err := st.WaitNodeReady(ctx, a.Name, false, gracePeriod+time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	stack.WaitFor(t, ctx, time.Minute, "unreachable NoExecute taint on "+keep.Name, func() (bool, string) {
		n, err := client.CoreV1().Nodes().Get(ctx, keep.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, tn := range n.Spec.Taints {
			if tn.Key == corev1.TaintNodeUnreachable && tn.Effect == corev1.TaintEffectNoExecute {
				return true, ""
			}
		}
		return false, fmt.Sprint(n.Spec.Taints)
	})
	// A pod bound to the node while it is offline (as a controller binding
	// by name would) is looked after too.
	st.Apply(t, ctx, boundPodYAML(ns, "late", keep.Name))

	// The opted-out pods go, as on any node...
	for _, name := range []string{"optout", "evicted"} {
		stack.WaitFor(t, ctx, 2*time.Minute, name+" evicted", func() (bool, string) {
			p, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return true, ""
			}
			if err != nil {
				return false, err.Error()
			}
			return p.DeletionTimestamp != nil, "no deletionTimestamp"
		})
	}
	// ... and the others stay, for well past their would-be timeout: a
	// canary bound after them, opted out and tolerating the taints for
	// three times that timeout, is evicted by the same controller, which
	// by then would long have evicted them.
	st.Apply(t, ctx, canaryPodYAML(ns, "canary", keep.Name, 3*tolerationSeconds))
	stack.WaitFor(t, ctx, 2*time.Minute, "canary evicted", func() (bool, string) {
		p, err := client.CoreV1().Pods(ns).Get(ctx, "canary", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		if err != nil {
			return false, err.Error()
		}
		return p.DeletionTimestamp != nil, "no deletionTimestamp"
	})
	for _, name := range []string{"kept", "late"} {
		p := getPod(t, ctx, ns, name)
		if p.DeletionTimestamp != nil || p.Spec.NodeName != keep.Name {
			t.Fatalf("%s: deletionTimestamp %v, node %q: evicted from an offline edge node", name, p.DeletionTimestamp, p.Spec.NodeName)
		}
	}
	if got := offlineSeconds(getPod(t, ctx, ns, "late")); got != "forever,forever" {
		t.Errorf("late: offline toleration seconds %s", got)
	}
	if !taskRunning(t, ctx, keep.Name, keptID) {
		t.Fatalf("container %s of kept stopped while the node was offline", keptID)
	}
	if time.Since(cutAt) < gracePeriod+tolerationSeconds*time.Second {
		t.Fatalf("offline for only %s", time.Since(cutAt))
	}

	// The uplink comes back: the same container runs on, the late pod
	// starts, the opted-out pods are gone for good.
	proxy.Refuse(false)
	for _, a := range []*stack.Agent{keep, evict} {
		if err := st.WaitNodeReady(ctx, a.Name, true, 2*time.Minute); err != nil {
			t.Fatalf("%v\n%s", err, a.Proc.LogTail(40))
		}
		waitMetric(t, ctx, a, "outpost_link_connected", func(v float64) bool { return v == 1 })
	}
	waitRunning(t, ctx, ns, "late", 3*time.Minute)
	kept = waitRunning(t, ctx, ns, "kept", time.Minute)
	if cs := kept.Status.ContainerStatuses[0]; strings.TrimPrefix(cs.ContainerID, "containerd://") != keptID || cs.RestartCount != 0 {
		t.Errorf("kept: container %s restarts %d, want %s and 0", cs.ContainerID, cs.RestartCount, keptID)
	}
	for _, name := range []string{"optout", "evicted"} {
		stack.WaitFor(t, ctx, 2*time.Minute, name+" deleted", func() (bool, string) {
			_, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
	}

	// Visibility after the outage: connected again, with the outbox as the
	// agent found it on reconnecting.
	stack.WaitFor(t, ctx, time.Minute, "EdgeLinkReady=True and OutboxHealthy on "+keep.Name, func() (bool, string) {
		l := nodeCond(t, ctx, keep.Name, nodes.ConditionLinkReady)
		o := nodeCond(t, ctx, keep.Name, nodes.ConditionOutboxHealthy)
		return l.Status == corev1.ConditionTrue && o.Status == corev1.ConditionTrue &&
				strings.HasPrefix(o.Message, "outbox: ") && strings.Contains(o.Message, "; last sync "),
			fmt.Sprintf("%+v / %+v", l, o)
	})
	m := scrape(t, ctx, keep)
	for _, name := range []string{"outpost_outbox_reports", "outpost_outbox_bytes", "outpost_outbox_dropped_total", "outpost_outbox_max_bytes"} {
		if _, ok := m[name]; !ok {
			t.Errorf("metric %s missing", name)
		}
	}
}

func startAgent(t *testing.T, ctx context.Context, name string, proxy *stack.Proxy) *stack.Agent {
	t.Helper()
	a, err := st.Join(ctx, relay, name) // joins directly: the proxy may be down
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	if proxy != nil {
		args = []string{"--server", "https://" + proxy.Addr}
	}
	if err := a.Start(args...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent %s:\n%s", name, a.Proc.LogTail(60))
		}
	})
	return a
}

func podYAML(ns, name, node string, optOut bool) string {
	ann := ""
	if optOut {
		ann = fmt.Sprintf("  annotations: {%s: \"true\"}\n", tolerations.OptOut)
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: %s
%sspec:
  nodeSelector: {kubernetes.io/hostname: %s}
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: %s
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
`, name, ns, ann, node, st.Images[0].Ref)
}

// boundPodYAML is a pod bound by name, past the scheduler (which would not
// place it on a tainted node).
func boundPodYAML(ns, name, node string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: %s
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: %s
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
`, name, ns, node, st.Images[0].Ref)
}

// canaryPodYAML is a pod bound by name that opts out of the relay's
// offline tolerations and tolerates the offline taints for seconds.
func canaryPodYAML(ns, name, node string, seconds int) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: %s
  annotations: {%s: "true"}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 2
  tolerations:
  - {key: %s, operator: Exists, effect: NoExecute, tolerationSeconds: %d}
  - {key: %s, operator: Exists, effect: NoExecute, tolerationSeconds: %d}
  containers:
  - name: app
    image: %s
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
`, name, ns, tolerations.OptOut, node, corev1.TaintNodeNotReady, seconds, corev1.TaintNodeUnreachable, seconds, st.Images[0].Ref)
}

// offlineSeconds is "<not-ready>,<unreachable>": the seconds of the pod's
// NoExecute tolerations of those taints, or "forever".
func offlineSeconds(p *corev1.Pod) string {
	var out []string
	for _, key := range []string{corev1.TaintNodeNotReady, corev1.TaintNodeUnreachable} {
		s := "none"
		for _, tl := range p.Spec.Tolerations {
			if tl.Key == key && tl.Effect == corev1.TaintEffectNoExecute {
				s = "forever"
				if tl.TolerationSeconds != nil {
					s = strconv.FormatInt(*tl.TolerationSeconds, 10)
				}
				break
			}
		}
		out = append(out, s)
	}
	return strings.Join(out, ",")
}

func getPod(t *testing.T, ctx context.Context, ns, name string) *corev1.Pod {
	t.Helper()
	p, err := st.CP.Client().CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func waitRunning(t *testing.T, ctx context.Context, ns, name string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	var got *corev1.Pod
	stack.WaitFor(t, ctx, timeout, "pod "+ns+"/"+name+" Running and Ready", func() (bool, string) {
		p, err := st.CP.Client().CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		got = p
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil || len(p.Status.ContainerStatuses) == 0 {
			return false, fmt.Sprintf("phase %s, %d container statuses", p.Status.Phase, len(p.Status.ContainerStatuses))
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady {
				return c.Status == corev1.ConditionTrue, fmt.Sprintf("Ready=%s %s", c.Status, c.Message)
			}
		}
		return false, "no Ready condition"
	})
	return got
}

func nodeCond(t *testing.T, ctx context.Context, node string, typ corev1.NodeConditionType) corev1.NodeCondition {
	t.Helper()
	n, err := st.CP.Client().CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range n.Status.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return corev1.NodeCondition{}
}

// taskRunning asks containerd itself (ctr), not the agent, whether the
// container's task runs.
func taskRunning(t *testing.T, ctx context.Context, node, id string) bool {
	t.Helper()
	out, err := st.Containerd.Ctr(ctx, "-n", "outpost-"+node, "tasks", "ls")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == id {
			return f[2] == "RUNNING"
		}
	}
	return false
}

// scrape reads the agent's metrics endpoint into name → value.
func scrape(t *testing.T, ctx context.Context, a *stack.Agent) map[string]float64 {
	t.Helper()
	m, err := stack.Scrape(ctx, "http://"+a.MetricsAddr+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func waitMetric(t *testing.T, ctx context.Context, a *stack.Agent, name string, ok func(float64) bool) {
	t.Helper()
	stack.WaitFor(t, ctx, time.Minute, a.Name+" metric "+name, func() (bool, string) {
		m, err := stack.Scrape(ctx, "http://"+a.MetricsAddr+"/metrics")
		if err != nil {
			return false, err.Error()
		}
		v, present := m[name]
		return present && ok(v), fmt.Sprintf("%s = %v (present %v)", name, v, present)
	})
}
