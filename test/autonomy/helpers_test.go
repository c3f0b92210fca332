package autonomy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
	"outpost.dev/test/wait"
)

const ns = "default"

// bme280YAML is a sim BME280 Device on node whose temperature and
// humidity are polled every 100 ms and reported every tempEvery and
// humEvery ("200ms").
func bme280YAML(name, node, tempEvery, humEvery string) string {
	return fmt.Sprintf(`apiVersion: outpost.dev/v1alpha1
kind: Device
metadata: {name: %s, namespace: default}
spec:
  nodeName: %s
  driver: bme280
  connection: {bus: I2C1, address: 0x76}
  properties:
    - {name: temperature, type: float, unit: "°C", pollInterval: 100ms, reportInterval: %s}
    - {name: humidity, type: float, unit: "%%RH", pollInterval: 100ms, reportInterval: %s}
`, name, node, tempEvery, humEvery)
}

// createConfigMap creates ConfigMap name in ns with data, and deletes it
// when t ends.
func createConfigMap(t *testing.T, ctx context.Context, name string, data map[string]string) *corev1.ConfigMap {
	t.Helper()
	kc := st.CP.Client()
	cm, err := kc.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kc.CoreV1().ConfigMaps(ns).Delete(context.Background(), cm.Name, metav1.DeleteOptions{}) })
	return cm
}

// applyDevices applies the Devices in docs with kubectl, and deletes them
// (without waiting) when t ends.
func applyDevices(t *testing.T, ctx context.Context, docs []string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "devices.yaml")
	if err := os.WriteFile(f, []byte(strings.Join(docs, "---\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := st.CP.Kubectl(ctx, "apply", "-f", f); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = st.CP.Kubectl(context.Background(), "delete", "-f", f, "--wait=false") })
}

// edge is one gateway: an agent with its own node, containerd namespace
// and, optionally, a cuttable proxy between it and the relay.
type edge struct {
	name  string
	agent *stack.Agent
	proxy *stack.Proxy // nil: the agent dials the relay directly
	ctrNS string
}

// newEdge joins node name and starts its agent (through a proxy if asked),
// waiting until the node is Ready. Cleanup stops the agent and removes the
// node's pods.
func newEdge(t *testing.T, ctx context.Context, name string, viaProxy bool) *edge {
	t.Helper()
	return newEdgeOn(t, ctx, relay, name, viaProxy)
}

// newEdgeOn is newEdge with the node joined to, and its agent dialing,
// relay r.
func newEdgeOn(t *testing.T, ctx context.Context, r *stack.Relay, name string, viaProxy bool) *edge {
	t.Helper()
	return newEdgeVia(t, ctx, r, name, viaProxy, "")
}

// newEdgeVia is newEdgeOn with the agent dialing server (https://HOST:PORT,
// a balancer in front of several relays) instead, when it is not "".
func newEdgeVia(t *testing.T, ctx context.Context, r *stack.Relay, name string, viaProxy bool, server string) *edge {
	t.Helper()
	a, err := st.Join(ctx, r, name)
	if err != nil {
		t.Fatal(err)
	}
	e := &edge{name: name, agent: a, ctrNS: "outpost-" + name}
	var args []string
	if viaProxy {
		if e.proxy, err = stack.NewProxy(r.Addr); err != nil {
			t.Fatal(err)
		}
		server = "https://" + e.proxy.Addr
	}
	if server != "" {
		args = []string{"--server", server}
	}
	if err := a.Start(args...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = a.Stop()
		if e.proxy != nil {
			e.proxy.Close()
		}
		deleteNodePods(name)
		// Pods of a stopped agent stay; kill them so later tests run on
		// a quiet machine.
		e.killTasks(context.Background())
	})
	if err := st.WaitNodeReady(ctx, name, true, 2*time.Minute); err != nil {
		t.Fatalf("%v\n%s", err, a.Proc.LogTail(30))
	}
	return e
}

func deleteNodePods(node string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kc := st.CP.Client()
	l, err := kc.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return
	}
	for _, p := range l.Items {
		_ = kc.CoreV1().Pods(ns).Delete(ctx, p.Name, *metav1.NewDeleteOptions(0))
	}
}

// podSpec is a pod on node running cmd in the test busybox image.
func podSpec(name, node string, cmd ...string) *corev1.Pod {
	zero := int64(1)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"test": "autonomy"}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: &zero,
			Containers: []corev1.Container{{
				Name: "app", Image: st.Images[0].Ref, Command: cmd,
			}},
		},
	}
}

func createPod(t *testing.T, ctx context.Context, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	got, err := st.CP.Client().CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// task is a containerd task as ctr lists it.
type task struct {
	ID     string
	PID    int
	Status string
}

// tasks lists the tasks in the edge's containerd namespace, by ID.
func (e *edge) tasks(ctx context.Context) (map[string]task, error) {
	out, err := st.Containerd.Ctr(ctx, "-n", e.ctrNS, "tasks", "list")
	if err != nil {
		return nil, err
	}
	ts := map[string]task{}
	for i, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if i == 0 || len(f) < 3 { // header
			continue
		}
		pid, _ := strconv.Atoi(f[1])
		ts[f[0]] = task{ID: f[0], PID: pid, Status: f[2]}
	}
	return ts, nil
}

// containers lists the container IDs in the edge's namespace.
func (e *edge) containers(ctx context.Context) ([]string, error) {
	out, err := st.Containerd.Ctr(ctx, "-n", e.ctrNS, "containers", "list", "-q")
	if err != nil {
		return nil, err
	}
	return strings.Fields(out), nil
}

// ctrID is a container ID the agent made: <container>-<pod hash>-<attempt>-<random>.
type ctrID struct {
	ID, Container, PodHash string
	Attempt                int
}

func parseID(id string) (ctrID, bool) {
	f := strings.Split(id, "-")
	if len(f) < 4 {
		return ctrID{}, false
	}
	n, err := strconv.Atoi(f[len(f)-2])
	if err != nil {
		return ctrID{}, false
	}
	return ctrID{ID: id, Container: strings.Join(f[:len(f)-3], "-"), PodHash: f[len(f)-3], Attempt: n}, true
}

// podHash is the part of a container ID that names its pod (the agent's
// scheme: the first 6 bytes of the SHA-256 of the pod UID, in hex).
func podHash(uid string) string {
	sum := sha256.Sum256([]byte(uid))
	return hex.EncodeToString(sum[:6])
}

// state is what containerd holds for the edge: every container, and the
// running task of each pod's containers.
type state struct {
	byPod   map[string][]ctrID  // pod hash → containers
	running map[string][]task   // pod hash → running tasks
	tasks   map[string]task     // by container ID
	ids     map[string]struct{} // every container ID
}

func (e *edge) state(ctx context.Context) (state, error) {
	s := state{byPod: map[string][]ctrID{}, running: map[string][]task{}, ids: map[string]struct{}{}}
	ids, err := e.containers(ctx)
	if err != nil {
		return s, err
	}
	if s.tasks, err = e.tasks(ctx); err != nil {
		return s, err
	}
	for _, id := range ids {
		s.ids[id] = struct{}{}
		c, ok := parseID(id)
		if !ok {
			continue
		}
		s.byPod[c.PodHash] = append(s.byPod[c.PodHash], c)
		if t, ok := s.tasks[id]; ok && t.Status == "RUNNING" {
			s.running[c.PodHash] = append(s.running[c.PodHash], t)
		}
	}
	return s, nil
}

// latest is the highest attempt of container name of the pod.
func (s state) latest(uid, name string) (ctrID, bool) {
	var best ctrID
	found := false
	for _, c := range s.byPod[podHash(uid)] {
		if c.Container == name && (!found || c.Attempt > best.Attempt) {
			best, found = c, true
		}
	}
	return best, found
}

// runningPods are the hashes of pods with a running task, sorted.
func (s state) runningPods() []string {
	var out []string
	for h := range s.running {
		out = append(out, h)
	}
	sort.Strings(out)
	return out
}

// killTasks kills (SIGKILL) and deletes every task in the edge's
// namespace, as a power cut would: containerd keeps the containers (its
// metadata is on disk), the processes are gone.
func (e *edge) killTasks(ctx context.Context) error {
	ts, err := e.tasks(ctx)
	if err != nil {
		return err
	}
	for id := range ts {
		_, _ = st.Containerd.Ctr(ctx, "-n", e.ctrNS, "tasks", "kill", "-s", "SIGKILL", id)
	}
	for id := range ts {
		if err := wait.Until(ctx, 4*time.Second, func() (bool, string) {
			_, err := st.Containerd.Ctr(ctx, "-n", e.ctrNS, "tasks", "delete", "--force", id)
			return err == nil || strings.Contains(err.Error(), "not found"), fmt.Sprint(err)
		}); err != nil {
			return fmt.Errorf("delete task %s: %w", id, err)
		}
	}
	return nil
}

// reboot simulates a gateway reboot for a stopped agent: every task
// killed and deleted, and the pods' mounts under the state directory
// (network namespaces, memory emptyDirs) gone.
func (e *edge) reboot(t *testing.T, ctx context.Context) {
	t.Helper()
	if e.agent.Proc != nil && !e.agent.Proc.Exited() {
		t.Fatal("reboot with the agent running")
	}
	if err := e.killTasks(ctx); err != nil {
		t.Fatal(err)
	}
	for _, m := range harness.MountsUnder(e.agent.StateDir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Fatalf("unmount %s: %v", m, err)
		}
	}
	ts, err := e.tasks(ctx)
	if err != nil || len(ts) != 0 {
		t.Fatalf("tasks after the reboot: %v (%v)", ts, err)
	}
}

// podUpdate is one pod event as the API server sent it.
type podUpdate struct {
	Type     watch.EventType
	Name     string
	UID      string
	Phase    corev1.PodPhase
	Restarts int32 // of the first container
	ID       string
	Ready    bool // the pod's Ready condition is True
}

// recorder records every pod event of a node from a watch, re-watching
// from the last resourceVersion when the API server closes the stream.
type recorder struct {
	mu     sync.Mutex
	events []podUpdate
	cancel context.CancelFunc
	done   chan struct{}
}

func recordPods(t *testing.T, node string) *recorder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &recorder{cancel: cancel, done: make(chan struct{})}
	kc := st.CP.Client()
	l, err := kc.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		t.Fatal(err)
	}
	rv := l.ResourceVersion
	go func() {
		defer close(r.done)
		for ctx.Err() == nil {
			w, err := kc.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node, ResourceVersion: rv})
			if err != nil {
				select { // the API server is restarting: try again, until the recorder stops
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
				continue
			}
			for ev := range w.ResultChan() {
				p, ok := ev.Object.(*corev1.Pod)
				if !ok {
					continue // a watch error (expired version): re-watch
				}
				rv = p.ResourceVersion
				u := podUpdate{Type: ev.Type, Name: p.Name, UID: string(p.UID), Phase: p.Status.Phase, Ready: podReady(p)}
				if len(p.Status.ContainerStatuses) > 0 {
					u.Restarts = p.Status.ContainerStatuses[0].RestartCount
					u.ID = p.Status.ContainerStatuses[0].ContainerID
				}
				r.mu.Lock()
				r.events = append(r.events, u)
				r.mu.Unlock()
			}
			w.Stop()
		}
	}()
	t.Cleanup(r.stop)
	return r
}

func (r *recorder) stop() {
	r.cancel()
	<-r.done
}

func (r *recorder) of(name string) []podUpdate {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []podUpdate
	for _, u := range r.events {
		if u.Name == name {
			out = append(out, u)
		}
	}
	return out
}

// podReady says whether p's Ready condition is True.
func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// apiPod returns the pod as the API server has it.
func apiPod(ctx context.Context, name string) (*corev1.Pod, error) {
	return st.CP.Client().CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
}

// containerID is a pod's first container's ID as the API has it, without
// the runtime prefix, and its restart count.
func containerID(p *corev1.Pod) (string, int32) {
	if len(p.Status.ContainerStatuses) == 0 {
		return "", -1
	}
	cs := p.Status.ContainerStatuses[0]
	return strings.TrimPrefix(cs.ContainerID, "containerd://"), cs.RestartCount
}

// runningInAPI waits until every pod named is Running in the API with its
// first container running.
func runningInAPI(ctx context.Context, names ...string) (bool, string) {
	for _, n := range names {
		p, err := apiPod(ctx, n)
		if err != nil {
			return false, err.Error()
		}
		if p.Status.Phase != corev1.PodRunning || len(p.Status.ContainerStatuses) == 0 ||
			p.Status.ContainerStatuses[0].State.Running == nil {
			return false, fmt.Sprintf("%s: phase %q, containers %+v", n, p.Status.Phase, p.Status.ContainerStatuses)
		}
	}
	return true, ""
}

// containerdEvents are containerd's events in one edge's namespace, as
// ctr events prints them, for the test's duration.
type containerdEvents struct {
	ch      chan string // topics ("/tasks/start")
	dropped atomic.Int64
}

// containerdEvents starts following containerd's events in the edge's
// namespace until the test ends.
func (e *edge) containerdEvents(t *testing.T, ctx context.Context) *containerdEvents {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(ctx, "ctr", "--address", st.Containerd.Address, "events")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ev := &containerdEvents{ch: make(chan string, 4096)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			// "<time> <namespace> <topic> <event>", the time in four
			// fields ("2006-01-02 15:04:05.999 +0000 UTC").
			f := strings.Fields(sc.Text())
			if len(f) < 6 || f[4] != e.ctrNS {
				continue
			}
			select {
			case ev.ch <- f[5]:
			default:
				ev.dropped.Add(1) // nobody read for a while
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		<-done
	})
	// ctr subscribes as it starts: once it printed an event of this
	// namespace made now (a label on it), it sees every later one.
	_, _ = st.Containerd.Ctr(ctx, "-n", e.ctrNS, "namespaces", "create", e.ctrNS) // fails if it exists
	probe := 0
	wait.For(t, 30*time.Second, "ctr events to print an event of "+e.ctrNS, func() bool {
		probe++
		if _, err := st.Containerd.Ctr(ctx, "-n", e.ctrNS, "namespaces", "label", e.ctrNS, "outpost.dev/events-probe="+strconv.Itoa(probe)); err != nil {
			t.Fatal(err)
		}
		for {
			select {
			case topic := <-ev.ch:
				if strings.HasPrefix(topic, "/namespaces/") {
					return true
				}
			default:
				return false
			}
		}
	})
	return ev
}

// drain forgets the events so far.
func (ev *containerdEvents) drain() {
	for {
		select {
		case <-ev.ch:
		default:
			ev.dropped.Store(0)
			return
		}
	}
}

// await waits for n events since the last drain, failing after timeout.
// It returns their topics.
func (ev *containerdEvents) await(t *testing.T, n int, timeout time.Duration) []string {
	t.Helper()
	var got []string
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for len(got) < n {
		if d := ev.dropped.Load(); d > 0 {
			t.Fatalf("%d containerd events dropped since the last drain", d)
		}
		select {
		case topic := <-ev.ch:
			got = append(got, topic)
		case <-deadline.C:
			t.Fatalf("%d of %d containerd events within %v: %v", len(got), n, timeout, got)
		}
	}
	return got
}

// lastEvent names the last of events for a log line.
func lastEvent(events []string) string {
	if len(events) == 0 {
		return ""
	}
	return ", the last " + events[len(events)-1]
}
