package e2e

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"

	"outpost.dev/agent/slots"
	"outpost.dev/cloud/upgrade"
	"outpost.dev/test/harness"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

// TestAgentUpgradeFleet: five real agents, each under its own launcher
// with its own slots, state directory, node name and certificate,
// sharing one containerd in namespaces of their own and each running a
// pod, are upgraded by one AgentUpgrade with maxUnavailable 2. In every
// status the API server stored, at most two nodes are in flight (the
// InFlight count, and the nodes between Pending and Switching), and the
// rollout used both; no node's phase goes back, and no Node reports the
// new version before the rollout admitted it. All five end Healthy, on
// the new slot out of trial, with the new version on their Node, and no
// pod's container restarted.
func TestAgentUpgradeFleet(t *testing.T) {
	needStack(t)
	harness.RequireContainerd(t)
	ctx := ctxFor(t, 4*time.Minute)
	rt := harness.StartTestRuntime(t, "ofleet", harness.RegistryOptions{})
	dir := t.TempDir()
	const (
		fleet          = 5
		maxUnavailable = 2
		v1             = "v0.1.0-test"
		v2             = "v0.2.0-fleet"
		groupKey       = "outpost.test/fleet"
		upName         = "agent-fleet"
		trialSecs      = 120
	)

	began := time.Now()
	// The second agent build and a launcher per node (its slots
	// directory is linked in, as on a gateway), built side by side.
	names := make([]string, fleet)
	launchers, slotDirs := make([]string, fleet), make([]string, fleet)
	agent2 := filepath.Join(dir, "outpost-agent-"+v2)
	errs := make([]error, fleet+1)
	var wg sync.WaitGroup
	wg.Go(func() { errs[fleet] = buildAgentErr(ctx, agent2, v2) })
	for i := range fleet {
		names[i] = fmt.Sprintf("fleet-%d", i)
		launchers[i] = filepath.Join(dir, names[i], "outpost-boot")
		slotDirs[i] = filepath.Join(dir, names[i], "slots")
		wg.Go(func() {
			errs[i] = goBuildErr(ctx, launchers[i], launcherFlags(slotDirs[i]), "outpost.dev/agent/cmd/outpost-boot")
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	t.Logf("built in %v", time.Since(began).Round(time.Millisecond))
	pub := newPublisher(t, ctx, dir)
	pub.serve(v2, agent2)

	// The five agents, Ready; then a pod on each.
	for i, name := range names {
		startUpgradable(t, ctx, rt, pub, name, launchers[i])
	}
	for _, name := range names {
		if err := st.WaitNodeReady(ctx, name, true, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	st.Kubectl(t, ctx, append(append([]string{"label", "node"}, names...), groupKey+"=yes")...)
	for _, name := range names {
		applyPod(t, ctx, rt, name, name+"-pod")
	}
	before := map[string]podRun{}
	for _, name := range names {
		before[name] = waitPod(t, ctx, rt, name, name+"-pod")
	}
	t.Logf("five nodes Ready with a pod running each in %v", time.Since(began).Round(time.Millisecond))

	// Watch the AgentUpgrade and the Nodes from before the rollout.
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	uw, err := st.Dynamic(t).Resource(upgrade.GVR).Watch(watchCtx, metav1.ListOptions{FieldSelector: "metadata.name=" + upName})
	if err != nil {
		t.Fatal(err)
	}
	nw, err := st.CP.Client().CoreV1().Nodes().Watch(watchCtx, metav1.ListOptions{LabelSelector: groupKey + "=yes"})
	if err != nil {
		t.Fatal(err)
	}
	rec := &fleetRecord{max: maxUnavailable, from: v1, to: v2, start: time.Now(), phase: map[string]wire.UpgradePhase{},
		history: map[string][]wire.UpgradePhase{}, version: map[string]string{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		rec.follow(watchCtx, uw, nw)
	}()
	defer func() { stopWatch(); <-done }()
	wait.State(t, ctx, time.Minute, "the watch to list the nodes at "+v1, func() (bool, string) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		n := 0
		for _, v := range rec.version {
			if v == v1 {
				n++
			}
		}
		return n == fleet, fmt.Sprintf("%v", rec.version)
	})

	rec.mu.Lock()
	rec.start = time.Now() // the timeline counts from the AgentUpgrade's creation
	rec.mu.Unlock()
	st.CreateUpgrade(t, ctx, upName, v2, groupKey, trialSecs, maxUnavailable, pub.sign(t, ctx, v2, agent2))
	wait.State(t, ctx, 2*time.Minute, "all five Healthy at "+v2+" on their Nodes", func() (bool, string) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if len(rec.errs) > 0 {
			t.Fatalf("the rollout broke its bound or went wrong:\n%s\ntimeline:\n%s", strings.Join(rec.errs, "\n"), strings.Join(rec.timeline, "\n"))
		}
		healthy, upgraded := 0, 0
		for _, name := range names {
			if rec.phase[name] == wire.UpgradeHealthy {
				healthy++
			}
			if rec.version[name] == v2 {
				upgraded++
			}
		}
		s := rec.status
		return healthy == fleet && upgraded == fleet && s.Progress == fmt.Sprintf("%d/%d", fleet, fleet) && s.InFlight == 0,
			fmt.Sprintf("%d Healthy, %d Nodes at %s, status %+v", healthy, upgraded, v2, s)
	})
	stopWatch()
	<-done

	rec.mu.Lock()
	t.Logf("timeline:\n%s", strings.Join(rec.timeline, "\n"))
	if len(rec.errs) > 0 {
		t.Fatalf("the rollout broke its bound or went wrong:\n%s", strings.Join(rec.errs, "\n"))
	}
	// The bound was used: a rollout that went one node at a time would
	// keep under it trivially.
	if rec.maxInFlight != maxUnavailable {
		t.Fatalf("at most %d nodes were ever in flight, want %d (maxUnavailable)", rec.maxInFlight, maxUnavailable)
	}
	for _, name := range names {
		if h := rec.history[name]; len(h) < 2 || h[0] != wire.UpgradePending || h[len(h)-1] != wire.UpgradeHealthy {
			t.Fatalf("node %s went %v, want Pending first and Healthy last", name, h)
		}
	}
	rec.mu.Unlock()

	for i, name := range names {
		if s := slotState(t, slotDirs[i]); s.Current == slots.Packaged || s.CurrentVersion != v2 || s.Trial || s.Previous != slots.Packaged || s.RolledBack != "" {
			t.Fatalf("%s: the slots after the upgrade: %+v", name, s)
		}
		now, desc := podRunning(ctx, rt.Containerd, podNS, name+"-pod", ctrNamespace(name))
		if now != before[name] || now.restarts != 0 {
			t.Fatalf("%s: the pod's container changed: before %+v, now %+v (%s)", name, before[name], now, desc)
		}
	}
}

// fleetRecord follows a rollout through the watch events of its
// AgentUpgrade and of its Nodes, and records every breach of its bound.
type fleetRecord struct {
	max      int
	from, to string
	start    time.Time

	mu          sync.Mutex
	status      upgrade.Status
	phase       map[string]wire.UpgradePhase   // the last phase stored, by node
	history     map[string][]wire.UpgradePhase // each node's phases, in order
	version     map[string]string              // what each Node reports
	maxInFlight int
	timeline    []string
	errs        []string
}

// phaseOrder ranks the phases a node goes through; Failed and RolledBack
// are not in it: neither may happen here.
var phaseOrder = []wire.UpgradePhase{wire.UpgradePending, wire.UpgradeDownloading, wire.UpgradeVerifying, wire.UpgradeSwitching, wire.UpgradeHealthy}

// follow records the events of uw (the AgentUpgrade) and nw (the
// Nodes) until ctx ends; a watch that ends before is an error.
func (r *fleetRecord) follow(ctx context.Context, uw, nw watch.Interface) {
	defer uw.Stop()
	defer nw.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-uw.ResultChan():
			if !ok {
				r.fail(ctx, "the AgentUpgrade watch ended")
				return
			}
			r.upgradeEvent(ev)
		case ev, ok := <-nw.ResultChan():
			if !ok {
				r.fail(ctx, "the Node watch ended")
				return
			}
			r.nodeEvent(ev)
		}
	}
}

func (r *fleetRecord) fail(ctx context.Context, msg string) {
	if ctx.Err() != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, msg)
}

func (r *fleetRecord) upgradeEvent(ev watch.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	u, ok := ev.Object.(*unstructured.Unstructured)
	if !ok || ev.Type == watch.Bookmark {
		if ev.Type == watch.Error {
			r.errs = append(r.errs, fmt.Sprintf("AgentUpgrade watch error: %v", ev.Object))
		}
		return
	}
	a, err := upgrade.FromUnstructured(u)
	if err != nil {
		r.errs = append(r.errs, err.Error())
		return
	}
	r.status = a.Status
	inFlight := []string{}
	for _, n := range a.Status.Nodes {
		rank := slices.Index(phaseOrder, n.Phase)
		if rank < 0 {
			r.errs = append(r.errs, fmt.Sprintf("node %s ended %s: %s", n.Name, n.Phase, n.Reason))
			continue
		}
		if prev, seen := r.phase[n.Name]; seen && rank < slices.Index(phaseOrder, prev) {
			r.errs = append(r.errs, fmt.Sprintf("node %s went back from %s to %s", n.Name, prev, n.Phase))
		}
		if r.phase[n.Name] != n.Phase {
			r.history[n.Name] = append(r.history[n.Name], n.Phase)
			r.logf("%s %s", n.Name, n.Phase)
		}
		r.phase[n.Name] = n.Phase
		if n.Phase != wire.UpgradeHealthy {
			inFlight = append(inFlight, n.Name)
		}
	}
	r.maxInFlight = max(r.maxInFlight, len(inFlight), a.Status.InFlight)
	if len(inFlight) > r.max || a.Status.InFlight > r.max || a.Status.InFlight != len(inFlight) {
		r.errs = append(r.errs, fmt.Sprintf("InFlight %d, nodes between Pending and Switching %v, with maxUnavailable %d", a.Status.InFlight, inFlight, r.max))
	}
}

func (r *fleetRecord) nodeEvent(ev watch.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, ok := ev.Object.(*corev1.Node)
	if !ok {
		if ev.Type == watch.Error {
			r.errs = append(r.errs, fmt.Sprintf("Node watch error: %v", ev.Object))
		}
		return
	}
	if ev.Type == watch.Deleted {
		r.errs = append(r.errs, "node "+n.Name+" deleted")
		return
	}
	v := n.Status.NodeInfo.KubeletVersion
	prev := r.version[n.Name]
	if v == prev {
		return
	}
	switch {
	case prev == "" && v == r.from:
	case prev == r.from && v == r.to:
		// The node was admitted first. The two watches are separate
		// streams, but between its admission and its new agent's
		// Node status lie a download, a switch and a restart.
		if _, admitted := r.phase[n.Name]; !admitted {
			r.errs = append(r.errs, fmt.Sprintf("node %s reports %s before the rollout admitted it", n.Name, v))
		}
	default:
		r.errs = append(r.errs, fmt.Sprintf("node %s went from version %q to %q", n.Name, prev, v))
	}
	r.version[n.Name] = v
	r.logf("%s reports %s", n.Name, v)
}

func (r *fleetRecord) logf(format string, args ...any) {
	r.timeline = append(r.timeline, fmt.Sprintf("%6.2fs ", time.Since(r.start).Seconds())+fmt.Sprintf(format, args...))
}
