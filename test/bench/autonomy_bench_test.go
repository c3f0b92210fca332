package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/test/harness"
	"outpost.dev/test/podnet"
	"outpost.dev/test/stack"
	"outpost.dev/test/wait"
)

// autoRig is one edge node on real containerd behind a cuttable proxy.
type autoRig struct {
	st    *stack.Stack
	relay *stack.Relay
	agent *stack.Agent
	proxy *stack.Proxy
	node  string
	ctrNS string
}

// startAutoRig starts a stack with containerd and one agent behind a
// proxy; maxPods > 0 sets the agent's maxPods.
func startAutoRig(b *testing.B, node string, maxPods int) *autoRig {
	b.Helper()
	st, relay := stack.StartWithRelay(b, context.Background(), stack.Options{Containerd: true})
	return addAutoRig(b, st, relay, node, maxPods, true)
}

// addAutoRig joins node to the stack and starts its agent behind a proxy,
// with the pod network on or off (network.disabled).
func addAutoRig(b *testing.B, st *stack.Stack, relay *stack.Relay, node string, maxPods int, network bool) *autoRig {
	b.Helper()
	ctx := context.Background()
	var err error
	r := &autoRig{st: st, relay: relay, node: node, ctrNS: "outpost-" + node}
	if r.agent, err = st.Join(ctx, r.relay, node); err != nil {
		b.Fatal(err)
	}
	r.agent.NoPodNetwork = !network
	b.Cleanup(func() { _ = r.agent.Stop() })
	if r.proxy, err = stack.NewProxy(r.relay.Addr); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(r.proxy.Close)
	if err := r.agent.Start("--server", "https://"+r.proxy.Addr); err != nil {
		b.Fatal(err)
	}
	if maxPods > 0 {
		// The stack wrote the config at the first start; a top-level key
		// appended to it takes effect at the next.
		if err := r.agent.Stop(); err != nil {
			b.Fatal(err)
		}
		f, err := os.OpenFile(r.agent.Config, os.O_APPEND|os.O_WRONLY, 0)
		if err == nil {
			_, err = fmt.Fprintf(f, "maxPods: %d\n", maxPods)
			f.Close()
		}
		if err != nil {
			b.Fatal(err)
		}
		if err := r.agent.Start(); err != nil {
			b.Fatal(err)
		}
	}
	if err := st.WaitNodeReady(ctx, node, true, 2*time.Minute); err != nil {
		b.Fatal(err)
	}
	return r
}

// pod is a sleeping busybox pod for the rig's node that tolerates the
// node being unreachable for ever, so a long offline spell evicts nothing
// whatever the cluster's defaults.
func (r *autoRig) pod(name string, mod func(*corev1.Pod)) *corev1.Pod {
	grace := int64(1)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{
			NodeName: r.node, TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{Name: "app", Image: r.st.Images[0].Ref, Command: []string{"sleep", "86400"}}},
			Tolerations: []corev1.Toleration{
				{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
				{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
			},
		},
	}
	if mod != nil {
		mod(p)
	}
	return p
}

func (r *autoRig) create(b *testing.B, ctx context.Context, pods ...*corev1.Pod) map[string]string {
	b.Helper()
	uids := map[string]string{}
	for _, p := range pods {
		got, err := r.st.CP.Client().CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		uids[got.Name] = string(got.UID)
	}
	return uids
}

// running maps pod hash (as in the agent's container IDs) to the IDs of
// its running tasks, and lists every container's pod hash.
func (r *autoRig) running(ctx context.Context) (run map[string][]string, all map[string]bool, err error) {
	out, err := r.st.Containerd.Ctr(ctx, "-n", r.ctrNS, "tasks", "list")
	if err != nil {
		return nil, nil, err
	}
	run, all = map[string][]string{}, map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[2] == "RUNNING" {
			if h := autoPodHash(f[0]); h != "" {
				run[h] = append(run[h], f[0])
			}
		}
	}
	out, err = r.st.Containerd.Ctr(ctx, "-n", r.ctrNS, "containers", "list", "-q")
	if err != nil {
		return nil, nil, err
	}
	for _, id := range strings.Fields(out) {
		if h := autoPodHash(id); h != "" {
			all[h] = true
		}
	}
	return run, all, nil
}

// autoPodHash is the pod part of <container>-<pod hash>-<attempt>-<random>.
func autoPodHash(id string) string {
	f := strings.Split(id, "-")
	if len(f) < 4 {
		return ""
	}
	return f[len(f)-3]
}

func uidHash(uid string) string {
	sum := sha256.Sum256([]byte(uid))
	return hex.EncodeToString(sum[:6])
}

// exactly says whether containerd runs one task for each pod of uids and
// holds no container of any other pod.
func (r *autoRig) exactly(ctx context.Context, uids map[string]string) (bool, string) {
	run, all, err := r.running(ctx)
	if err != nil {
		return false, err.Error()
	}
	want := map[string]bool{}
	for _, u := range uids {
		want[uidHash(u)] = true
	}
	missing, extra := 0, 0
	for h := range want {
		if len(run[h]) != 1 {
			missing++
		}
	}
	for h := range all {
		if !want[h] {
			extra++
		}
	}
	return missing == 0 && extra == 0, fmt.Sprintf("%d of %d pods not running exactly once, %d pods' containers left over", missing, len(want), extra)
}

// reboot stops the agent and kills and deletes every task in its
// namespace and unmounts its pods' namespaces, as a power cut would.
func (r *autoRig) reboot(b *testing.B, ctx context.Context) {
	b.Helper()
	if err := r.agent.Stop(); err != nil {
		b.Fatal(err)
	}
	out, err := r.st.Containerd.Ctr(ctx, "-n", r.ctrNS, "tasks", "list", "-q")
	if err != nil {
		b.Fatal(err)
	}
	ids := strings.Fields(out)
	for _, id := range ids {
		_, _ = r.st.Containerd.Ctr(ctx, "-n", r.ctrNS, "tasks", "kill", "-s", "SIGKILL", id)
	}
	for _, id := range ids {
		_ = wait.Until(ctx, 5*time.Second, func() (bool, string) {
			_, err := r.st.Containerd.Ctr(ctx, "-n", r.ctrNS, "tasks", "delete", "--force", id)
			return err == nil || strings.Contains(err.Error(), "not found"), fmt.Sprint(err)
		})
	}
	for _, m := range harness.MountsUnder(r.agent.StateDir) {
		_ = syscall.Unmount(m, syscall.MNT_DETACH)
	}
}

func (r *autoRig) wait(b *testing.B, ctx context.Context, timeout time.Duration, what string, cond func() (bool, string)) {
	b.Helper()
	wait.State(b, ctx, timeout, what, cond)
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	sort.Float64s(s)
	return s[len(s)/2]
}

// BenchmarkRestartFromStore: 30 pods in the agent's store, the gateway
// "rebooted" (agent stopped, every task killed and deleted, namespaces
// unmounted) and the link down: the time from starting the agent until
// containerd runs all 30 again, with the pod network off (cni=off) and on
// (cni=on: each pod back on its network, a veth and a lease each, checked
// after the timing once the stale attachments of the namespaces the reboot
// took are DELed; s-to-no-stale is when that was, from the same start),
// each on its own node of one stack. OUTPOST_ROUNDS rounds (default 3);
// the medians are reported.
func BenchmarkRestartFromStore(b *testing.B) {
	harness.RequireCNI(b)
	st, relay := stack.StartWithRelay(b, context.Background(), stack.Options{Containerd: true})
	for _, on := range []bool{false, true} {
		b.Run(cniName(on), func(b *testing.B) { benchRestart(b, st, relay, on) })
	}
}

func benchRestart(b *testing.B, st *stack.Stack, relay *stack.Relay, network bool) {
	const n = 30
	ctx := context.Background()
	mode := strings.TrimPrefix(cniName(network), "cni=")
	run := benchRuns.Add(1) // -count runs this again on the same stack
	r := addAutoRig(b, st, relay, fmt.Sprintf("bench-restart-%s-%d", mode, run), 0, network)
	var pods []*corev1.Pod
	for i := range n {
		pods = append(pods, r.pod(fmt.Sprintf("restart-%s-%d-%02d", mode, run, i), nil))
	}
	uids := r.create(b, ctx, pods...)
	var all []string
	for _, u := range uids {
		all = append(all, u)
	}
	r.wait(b, ctx, 5*time.Minute, "30 pods running", func() (bool, string) { return r.exactly(ctx, uids) })
	// On the network, each with an address (the pod CIDR, kept in the
	// store, arrives seconds after the Node is made), before the link goes.
	var pnode podnet.Node
	if network {
		r.wait(b, ctx, 2*time.Minute, "30 pods with an address", func() (bool, string) {
			l, err := r.st.CP.Client().CoreV1().Pods("default").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + r.node})
			if err != nil {
				return false, err.Error()
			}
			without := 0
			for _, p := range l.Items {
				if p.Status.PodIP == "" {
					without++
				}
			}
			return len(l.Items) == n && without == 0, fmt.Sprintf("%d pods, %d without an address", len(l.Items), without)
		})
		nd, err := r.st.CP.Client().CoreV1().Nodes().Get(ctx, r.node, metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		pnode = podnet.Node{StateDir: r.agent.StateDir, Bridge: r.agent.Bridge, CIDR: nd.Spec.PodCIDR}
	}
	// Offline from here on: the relay is unreachable.
	r.proxy.Refuse(true)
	r.proxy.Cut()
	var secs, clean []float64
	for b.Loop() {
		for round := range envInt("OUTPOST_ROUNDS", 3) {
			r.reboot(b, ctx)
			start := time.Now()
			if err := r.agent.Start(); err != nil {
				b.Fatal(err)
			}
			r.wait(b, ctx, 5*time.Minute, "30 pods running again", func() (bool, string) { return r.exactly(ctx, uids) })
			d := time.Since(start)
			secs = append(secs, d.Seconds())
			b.Logf("round %d: 30 pods running %s after the agent started offline (%s)", round+1, d.Round(10*time.Millisecond), cniName(network))
			if network {
				// A pod's network is made before its container starts:
				// running again means attached again. The attachments
				// of the namespaces the reboot took are DELed after, in
				// the background (agent/cni): until then a pod holds two
				// leases and two cached results.
				r.wait(b, ctx, time.Minute, "each pod on its network, no stale attachment left", func() (bool, string) {
					l, err := podnet.Check(pnode, all)
					return err == nil && l.Pods(n), fmt.Sprintf("%v (%v)", l, err)
				})
				d := time.Since(start)
				clean = append(clean, d.Seconds())
				b.Logf("round %d: the stale attachments gone %s after the agent started", round+1, d.Round(10*time.Millisecond))
			}
		}
	}
	b.ReportMetric(median(secs), "s-to-30-running")
	if network {
		b.ReportMetric(median(clean), "s-to-no-stale")
	}
	// Leave the machine quiet for the next sub-benchmark.
	r.reboot(b, ctx)
	for name := range uids {
		_ = r.st.CP.Client().CoreV1().Pods("default").Delete(ctx, name, *metav1.NewDeleteOptions(0))
	}
}

// BenchmarkResyncAfterOffline: 100 pods running, the link down for
// OUTPOST_OFFLINE (default 1m; make bench-autonomy uses 10m). While
// offline, half the pods are deleted, 50 new ones created and the
// ConfigMap every pod mounts is changed. Reported: the bytes that cross
// the link (TLS and WebSocket framing included) and the time from the link
// coming back until the edge converged: containerd runs exactly the 100
// desired pods, none is left terminating in the API, the new ones are
// Running in the API and the changed ConfigMap is in a pod's volume; and
// how much of that time was the agent's reconnect back-off.
func BenchmarkResyncAfterOffline(b *testing.B) {
	offline := harness.EnvDuration(b, "OUTPOST_OFFLINE", time.Minute)
	const n = 100
	ctx := context.Background()
	// 100 pods plus the 50 deleted while offline, still on the node
	// (terminating) when the 50 new ones arrive: more than the default
	// maxPods (110), as the scheduler would also see it.
	r := startAutoRig(b, "bench-resync", 200)
	kc := r.st.CP.Client()
	cm, err := kc.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "resync-cfg"},
		Data: map[string]string{"v": "before"}}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	withCM := func(p *corev1.Pod) {
		p.Spec.Volumes = []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: cm.Name}}}}}
		p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "cfg", MountPath: "/cfg"}}
	}
	var pods []*corev1.Pod
	for i := range n {
		pods = append(pods, r.pod(fmt.Sprintf("resync-%03d", i), withCM))
	}
	uids := r.create(b, ctx, pods...)
	r.wait(b, ctx, 10*time.Minute, "100 pods running", func() (bool, string) { return r.exactly(ctx, uids) })

	for b.Loop() {
		r.proxy.Refuse(true)
		r.proxy.Cut()
		cutAt := time.Now()
		// The changes, made at the start of the offline spell.
		for i := 0; i < n; i += 2 {
			name := fmt.Sprintf("resync-%03d", i)
			if err := kc.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
				b.Fatal(err)
			}
			delete(uids, name)
		}
		var fresh []*corev1.Pod
		for i := range n / 2 {
			fresh = append(fresh, r.pod(fmt.Sprintf("resync-new-%03d", i), withCM))
		}
		for k, v := range r.create(b, ctx, fresh...) {
			uids[k] = v
		}
		cm.Data["v"] = "after"
		if cm, err = kc.CoreV1().ConfigMaps("default").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
		time.Sleep(time.Until(cutAt.Add(offline)))

		up0, down0 := r.proxy.Up.Load(), r.proxy.Down.Load()
		// The agent reconnects after its back-off (full jitter, up to
		// 30 s): the first byte up marks the end of it.
		firstUp := r.proxy.NextUp()
		start := time.Now()
		r.proxy.Refuse(false)
		reconnected := make(chan time.Duration, 1)
		go func() {
			<-firstUp
			reconnected <- time.Since(start)
		}()
		probe := uids["resync-001"]
		var probeID string
		r.wait(b, ctx, 10*time.Minute, "converged", func() (bool, string) {
			if ok, msg := r.exactly(ctx, uids); !ok {
				return false, "containerd: " + msg
			}
			l, err := kc.CoreV1().Pods("default").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + r.node})
			if err != nil {
				return false, err.Error()
			}
			notRunning := 0
			for _, p := range l.Items {
				if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
					notRunning++
				}
			}
			if notRunning > 0 || len(l.Items) != n {
				return false, fmt.Sprintf("API: %d pods, %d terminating or not Running", len(l.Items), notRunning)
			}
			if probeID == "" {
				run, _, err := r.running(ctx)
				if err != nil || len(run[uidHash(probe)]) != 1 {
					return false, fmt.Sprintf("probe pod: %v", err)
				}
				probeID = run[uidHash(probe)][0]
			}
			out, err := r.st.Containerd.Ctr(ctx, "-n", r.ctrNS, "tasks", "exec", "--exec-id", "probe-"+strconv.FormatInt(time.Now().UnixNano(), 36), probeID, "cat", "/cfg/v")
			return err == nil && out == "after", fmt.Sprintf("ConfigMap in the pod: %q (%v)", out, err)
		})
		d := time.Since(start)
		up, down := r.proxy.Up.Load()-up0, r.proxy.Down.Load()-down0
		rc := <-reconnected
		b.ReportMetric(d.Seconds(), "s-to-converge")
		b.ReportMetric(rc.Seconds(), "s-to-reconnect")
		b.ReportMetric(float64(up)/1024, "KiB-up")
		b.ReportMetric(float64(down)/1024, "KiB-down")
		b.Logf("after %s offline (50 of 100 pods deleted, 50 created, the ConfigMap changed): converged in %s (the agent reconnected after %s); link %d bytes up, %d down",
			offline, d.Round(10*time.Millisecond), rc.Round(10*time.Millisecond), up, down)
	}
}
