package autonomy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/fxamacker/cbor/v2"
	bolt "go.etcd.io/bbolt"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/agent/store"
	"outpost.dev/test/stack"
	"outpost.dev/wire"
)

// storeView is what the test reads from a killed agent's bbolt file:
// whether it checks clean, the version of one ConfigMap (downstream: each
// sync is fsynced before the relay's next one is asked for) and the
// outbox's next sequence number (upstream: a committed report keeps its
// number).
type storeView struct {
	cmVersion uint64
	nextSeq   uint64
	outbox    int
}

// Bucket and key names of agent/store and agent/outbox, read here without
// their code so that the check does not trust what it checks.
var (
	bucketObjects = []byte("objects")
	bucketOutbox  = []byte("outbox")
	bucketOutMeta = []byte("outbox-meta")
	bucketOutKeys = []byte("outbox-keys")
	keyNextSeq    = []byte("next-seq")
)

func readStore(path, cmUID string) (storeView, error) {
	var v storeView
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return v, fmt.Errorf("open: %w", err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		var errs []string
		for e := range tx.Check() {
			errs = append(errs, e.Error())
		}
		if len(errs) > 0 {
			return fmt.Errorf("consistency check: %s", strings.Join(errs, "; "))
		}
		if b := tx.Bucket(bucketObjects); b != nil {
			if raw := b.Get(append([]byte{byte(wire.KindConfigMap)}, cmUID...)); raw != nil {
				var o wire.Object
				if err := wire.Unmarshal(raw, &o); err != nil {
					return fmt.Errorf("stored ConfigMap: %w", err)
				}
				v.cmVersion, _ = strconv.ParseUint(o.Version, 10, 64)
			}
		}
		if b := tx.Bucket(bucketOutMeta); b != nil {
			if raw := b.Get(keyNextSeq); len(raw) == 8 {
				v.nextSeq = binary.BigEndian.Uint64(raw)
			}
		}
		eb, kb := tx.Bucket(bucketOutbox), tx.Bucket(bucketOutKeys)
		if eb == nil || kb == nil {
			return nil // before the outbox was opened the first time
		}
		// Coalescing holds: each key names one queued report, the one
		// carrying that key, and no report has a key that names another.
		byKey := map[string]uint64{}
		err := eb.ForEach(func(k, raw []byte) error {
			v.outbox++
			seq := binary.BigEndian.Uint64(k)
			if seq >= v.nextSeq {
				return fmt.Errorf("outbox entry %d at or beyond the next seq %d", seq, v.nextSeq)
			}
			var r struct {
				Key string `cbor:"1,keyasint,omitempty"`
			}
			if err := cbor.Unmarshal(raw, &r); err != nil {
				return fmt.Errorf("outbox entry %d: %w", seq, err)
			}
			if r.Key == "" {
				return nil
			}
			if old, dup := byKey[r.Key]; dup {
				return fmt.Errorf("outbox entries %d and %d both queued for %s", old, seq, r.Key)
			}
			byKey[r.Key] = seq
			if cur := kb.Get([]byte(r.Key)); len(cur) != 8 || binary.BigEndian.Uint64(cur) != seq {
				return fmt.Errorf("outbox entry %d for %s, but the key names %x", seq, r.Key, cur)
			}
			return nil
		})
		if err == nil && kb.Stats().KeyN != len(byKey) {
			err = fmt.Errorf("outbox: %d keys for %d keyed reports", kb.Stats().KeyN, len(byKey))
		}
		return err
	})
	return v, err
}

// storeWritesBeforeKill bounds the writes to its store that
// TestKill9DuringStoreWrites lets the agent make before each kill.
const storeWritesBeforeKill = 60

// fileWrites reports the writes to one file (inotify IN_MODIFY). Writes
// made while nobody reads may be reported as one.
type fileWrites struct {
	f   *os.File
	buf []byte
}

// watchWrites watches path, which must exist, until the test ends.
func watchWrites(t *testing.T, path string) *fileWrites {
	t.Helper()
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "inotify")
	t.Cleanup(func() { f.Close() })
	if _, err := syscall.InotifyAddWatch(fd, path, syscall.IN_MODIFY); err != nil {
		t.Fatalf("watch %s: %v", path, err)
	}
	return &fileWrites{f: f, buf: make([]byte, 64<<10)}
}

// read returns the number of writes reported by one read, waiting until
// deadline; 0 when the deadline passed.
func (w *fileWrites) read(t *testing.T, deadline time.Time) int {
	t.Helper()
	if err := w.f.SetReadDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	k, err := w.f.Read(w.buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return 0
	}
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	n := 0
	for b := w.buf[:k]; len(b) >= syscall.SizeofInotifyEvent; n++ {
		ev := (*syscall.InotifyEvent)(unsafe.Pointer(&b[0]))
		if ev.Mask&syscall.IN_Q_OVERFLOW != 0 {
			t.Fatal("inotify queue overflowed")
		}
		b = b[min(len(b), syscall.SizeofInotifyEvent+int(ev.Len)):]
	}
	return n
}

// drain forgets the writes reported so far.
func (w *fileWrites) drain(t *testing.T) {
	t.Helper()
	rc, err := w.f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var rerr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if _, err := syscall.Read(int(fd), w.buf); err != nil {
				if err != syscall.EAGAIN {
					rerr = err
				}
				return
			}
		}
	}); err != nil || rerr != nil {
		t.Fatalf("inotify: %v %v", err, rerr)
	}
}

// await waits for n more writes, failing after timeout.
func (w *fileWrites) await(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for seen := 0; seen < n; {
		k := w.read(t, deadline)
		if k == 0 {
			t.Fatalf("%d of %d writes to the store within %v", seen, n, timeout)
		}
		seen += k
	}
}

// TestKill9DuringStoreWrites kills the agent with SIGKILL 100 times, each
// after a random number of writes to its store (0 to 59, counted with
// inotify once it opened the store), while the store is written from both
// sides: a ConfigMap its pod mounts changes 20 times a second (downstream syncs), device
// twins report every 100 ms and pods report status at every start
// (upstream outbox appends and acks). After every kill the bbolt file
// opens and checks clean, the stored ConfigMap version never goes back,
// and the outbox's sequence never goes back. The pods run on untouched
// throughout (adopted 100 times, never restarted), and at the end the
// edge has the last ConfigMap and the API the pods' status.
func TestKill9DuringStoreWrites(t *testing.T) {
	needStack(t)
	ctx := ctxFor(t, 5*time.Minute)
	e := newEdge(t, ctx, "auto-kill", false)
	kc := st.CP.Client()
	cm := createConfigMap(t, ctx, "kill-cfg", map[string]string{"n": "0"})
	names := []string{"kill-cm", "kill-a", "kill-b", "kill-c"}
	for _, n := range names {
		p := podSpec(n, e.name, "sleep", "3600")
		if n == "kill-cm" {
			p.Spec.Volumes = []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: cm.Name}}}}}
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "cfg", MountPath: "/cfg"}}
		}
		createPod(t, ctx, p)
	}
	var docs []string
	for i := range 8 {
		docs = append(docs, bme280YAML(fmt.Sprintf("kill-dev-%d", i), e.name, "100ms", "100ms"))
	}
	applyDevices(t, ctx, docs)
	stack.WaitFor(t, ctx, 2*time.Minute, "pods Running in the API", func() (bool, string) { return runningInAPI(ctx, names...) })
	s0, err := e.state(ctx)
	if err != nil {
		t.Fatal(err)
	}
	running := map[string]task{}
	for _, ts := range s0.running {
		for _, tk := range ts {
			running[tk.ID] = tk
		}
	}
	if len(running) != len(names) {
		t.Fatalf("%d running tasks, want %d", len(running), len(names))
	}

	// The ConfigMap changes all along; last is the value of the last
	// update the API server took.
	var last atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			c := cm.DeepCopy()
			c.ResourceVersion = ""
			c.Data = map[string]string{"n": strconv.Itoa(i)}
			if _, err := kc.CoreV1().ConfigMaps(ns).Update(ctx, c, metav1.UpdateOptions{}); err == nil {
				last.Store(int64(i))
			}
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	db := filepath.Join(e.agent.StateDir, store.FileName)
	writes := watchWrites(t, db)
	var prev storeView
	wrote := 0 // kills after which the store had changed
	var untilKill time.Duration
	start := time.Now()
	const kills = 100
	for i := range kills {
		if e.agent.Proc.Exited() {
			if err := e.agent.Start(); err != nil {
				t.Fatal(err)
			}
		}
		// Kill after a random number of writes to the store once the
		// agent opened it (it writes its pid next to it): at a random
		// point of its writing, however fast or slow the machine is.
		pidFile := filepath.Join(e.agent.StateDir, "agent.pid")
		want := strconv.Itoa(e.agent.Proc.Pid())
		stack.WaitFor(t, ctx, 30*time.Second, "the agent opening its store", func() (bool, string) {
			b, _ := os.ReadFile(pidFile)
			return strings.TrimSpace(string(b)) == want, "pid file: " + string(b)
		})
		opened := time.Now()
		writes.drain(t)
		writes.await(t, rand.IntN(storeWritesBeforeKill), 30*time.Second)
		untilKill += time.Since(opened)
		if e.agent.Proc.Exited() {
			t.Fatalf("kill %d: the agent exited by itself:\n%s", i, e.agent.Proc.LogTail(20))
		}
		if err := e.agent.Kill(); err != nil {
			t.Fatal(err)
		}
		<-e.agent.Proc.Done()
		v, err := readStore(db, string(cm.UID))
		if err != nil {
			t.Fatalf("kill %d: the store: %v", i, err)
		}
		if v.cmVersion < prev.cmVersion || v.nextSeq < prev.nextSeq {
			t.Fatalf("kill %d: the store went back: ConfigMap version %d → %d, outbox next seq %d → %d",
				i, prev.cmVersion, v.cmVersion, prev.nextSeq, v.nextSeq)
		}
		if v.cmVersion != prev.cmVersion || v.nextSeq != prev.nextSeq {
			wrote++
		}
		prev = v
	}
	close(stop)
	wg.Wait()
	t.Logf("%d kills in %s, on average %s after the store opened; the store changed between %d of them; last: ConfigMap version %d, outbox next seq %d, %d queued",
		kills, time.Since(start).Round(100*time.Millisecond), (untilKill / kills).Round(time.Millisecond), wrote, prev.cmVersion, prev.nextSeq, prev.outbox)
	if wrote < kills/2 {
		t.Errorf("the store changed between only %d of %d kills: not the heavy writes the test is about", wrote, kills)
	}

	// The agent comes back and everything converges.
	if err := e.agent.Start(); err != nil {
		t.Fatal(err)
	}
	s1, err := e.state(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for id, tk := range running {
		if got := s1.tasks[id]; got != tk {
			t.Errorf("container %s: task %+v after 100 kills of the agent, was %+v: not adopted", id, got, tk)
		}
	}
	want := strconv.Itoa(int(last.Load()))
	cmPod, err := apiPod(ctx, "kill-cm")
	if err != nil {
		t.Fatal(err)
	}
	cmID, _ := containerID(cmPod)
	stack.WaitFor(t, ctx, 2*time.Minute, "the last ConfigMap value in the pod", func() (bool, string) {
		out, err := st.Containerd.Ctr(ctx, "-n", e.ctrNS, "tasks", "exec", "--exec-id", fmt.Sprintf("check-%d", rand.IntN(1e6)), cmID, "cat", "/cfg/n")
		return err == nil && out == want, fmt.Sprintf("/cfg/n is %q (%v), want %q", out, err, want)
	})
	stack.WaitFor(t, ctx, time.Minute, "pods Running in the API with the same containers", func() (bool, string) {
		if ok, msg := runningInAPI(ctx, names...); !ok {
			return false, msg
		}
		for _, n := range names {
			p, err := apiPod(ctx, n)
			if err != nil {
				return false, err.Error()
			}
			id, rc := containerID(p)
			if _, ok := running[id]; !ok || rc != 0 {
				return false, fmt.Sprintf("%s: container %s restartCount %d", n, id, rc)
			}
		}
		return true, ""
	})
	// The twins report through the last agent too, well after its
	// connection's initial sync (by link id, conditions left out and
	// filled in by the relay).
	since := time.Now()
	for i := range 8 {
		name := fmt.Sprintf("kill-dev-%d", i)
		stack.WaitFor(t, ctx, time.Minute, name+" reported again, Connected", func() (bool, string) {
			out, err := st.CP.Kubectl(ctx, "get", "device", name, "-n", "default", "-o",
				`jsonpath={.status.reported.temperature.at} {.status.conditions[?(@.type=="Connected")].status}`)
			if err != nil {
				return false, err.Error()
			}
			at, connected, _ := strings.Cut(strings.TrimSpace(out), " ")
			ts, err := time.Parse(time.RFC3339Nano, at)
			return err == nil && ts.After(since) && connected == "True", fmt.Sprintf("temperature at %q, Connected %q", at, connected)
		})
	}
}

// TestKill9WhileRestartingPods reboots the gateway with the relay down and
// kills the agent with SIGKILL again and again while it starts its pods
// from the store (each time after a random number of the containerd
// events of its work, up to the task creates and starts it must make): whatever it left half done (a container created but not
// started, started but not yet seen), the agent that finally stays up runs
// each pod exactly once, counts no restart beyond one per reboot, keeps at
// most the current and the previous attempt of each container, leaves no
// stray task, and the API agrees once the relay is back.
func TestKill9WhileRestartingPods(t *testing.T) {
	needStack(t)
	ctx := ctxFor(t, 5*time.Minute)
	e := newEdge(t, ctx, "auto-kill-boot", false)
	var names []string
	uids := map[string]string{}
	for i := range 10 {
		p := createPod(t, ctx, podSpec(fmt.Sprintf("kboot-%d", i), e.name, "sleep", "3600"))
		names = append(names, p.Name)
		uids[p.Name] = string(p.UID)
	}
	stack.WaitFor(t, ctx, 2*time.Minute, "pods Running in the API", func() (bool, string) { return runningInAPI(ctx, names...) })
	// On the pod network (the agent of a new Node learns its CIDR seconds
	// after the Node is created) before the relay goes.
	stack.WaitFor(t, ctx, time.Minute, "every pod with an IP", func() (bool, string) {
		for _, n := range names {
			if p, err := apiPod(ctx, n); err != nil || p.Status.PodIP == "" {
				return false, fmt.Sprintf("%s: no podIP (%v)", n, err)
			}
		}
		return true, ""
	})

	relayDown(t)
	if err := e.agent.Stop(); err != nil {
		t.Fatal(err)
	}
	e.reboot(t, ctx)
	pidFile := filepath.Join(e.agent.StateDir, "agent.pid")
	events := e.containerdEvents(t, ctx)
	for i := range 12 {
		// The agent is killed once it opened its store and containerd
		// saw a random number of events of its work since it started, at
		// most as many as it must cause: a task start for each pod not
		// running, after a task create where the pod has no task.
		s, err := e.state(ctx)
		if err != nil {
			t.Fatal(err)
		}
		down, must := 0, 0
		for _, n := range names {
			h := podHash(uids[n])
			if len(s.running[h]) > 0 {
				continue
			}
			down++
			must++
			hasTask := false
			for _, c := range s.byPod[h] {
				_, ok := s.tasks[c.ID]
				hasTask = hasTask || ok
			}
			if !hasTask {
				must++
			}
		}
		events.drain()
		if err := e.agent.Start(); err != nil {
			t.Fatal(err)
		}
		want := strconv.Itoa(e.agent.Proc.Pid())
		stack.WaitFor(t, ctx, 30*time.Second, "the agent opening its store", func() (bool, string) {
			b, _ := os.ReadFile(pidFile)
			return strings.TrimSpace(string(b)) == want, "pid file: " + string(b)
		})
		got := events.await(t, rand.IntN(must+1), time.Minute)
		t.Logf("kill %d (%d pods not running) after %d containerd events%s", i, down, len(got), lastEvent(got))
		if err := e.agent.Kill(); err != nil {
			t.Fatal(err)
		}
		<-e.agent.Proc.Done()
		if i%4 == 3 {
			e.reboot(t, ctx) // and the gateway loses power again
		}
	}
	if err := e.agent.Start(); err != nil {
		t.Fatal(err)
	}
	running := map[string]string{} // pod → its running container
	stack.WaitFor(t, ctx, 2*time.Minute, "each pod running exactly once", func() (bool, string) {
		s, err := e.state(ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, n := range names {
			h := podHash(uids[n])
			if len(s.running[h]) != 1 {
				return false, fmt.Sprintf("%s: %d running tasks", n, len(s.running[h]))
			}
			if len(s.byPod[h]) > 2 {
				return false, fmt.Sprintf("%s: %d containers kept: %v", n, len(s.byPod[h]), s.byPod[h])
			}
			running[n] = s.running[h][0].ID
		}
		if len(s.byPod) != len(names) {
			return false, fmt.Sprintf("containers of %d pods, want %d", len(s.byPod), len(names))
		}
		// No task left behind by a start the kill interrupted (created,
		// never started, or of a container since deleted).
		for id, tk := range s.tasks {
			if _, ok := s.ids[id]; !ok || tk.Status != "RUNNING" {
				return false, fmt.Sprintf("task %+v (its container exists: %v)", tk, ok)
			}
		}
		return true, ""
	})
	// Network set-ups the kills interrupted left nothing behind: one
	// address lease and one veth per pod.
	stack.WaitFor(t, ctx, time.Minute, "one address lease and one veth per pod", func() (bool, string) {
		leases := 0
		ents, _ := os.ReadDir(filepath.Join(e.agent.StateDir, "cni", "networks", "outpost"))
		for _, en := range ents {
			if net.ParseIP(en.Name()) != nil {
				leases++
			}
		}
		out, err := exec.Command("ip", "-o", "link", "show", "master", e.agent.Bridge).Output()
		veths := strings.Count(string(out), "\n")
		return err == nil && leases == len(names) && veths == len(names), fmt.Sprintf("%d leases, %d veths on %s (%v)", leases, veths, e.agent.Bridge, err)
	})
	var attempts []int
	for _, n := range names {
		c, _ := parseID(running[n])
		attempts = append(attempts, c.Attempt)
	}
	t.Logf("after 12 kills and 4 reboots, the pods run as attempts %v", attempts)
	for i, a := range attempts {
		// One restart per reboot at most: a killed agent counts none.
		if a > 4 {
			t.Errorf("%s runs as attempt %d after 4 reboots", names[i], a)
		}
	}
	if err := relay.Start(ctx); err != nil {
		t.Fatal(err)
	}
	stack.WaitFor(t, ctx, 2*time.Minute, "the API showing the running containers", func() (bool, string) {
		for _, n := range names {
			p, err := apiPod(ctx, n)
			if err != nil {
				return false, err.Error()
			}
			id, rc := containerID(p)
			c, _ := parseID(running[n])
			if id != running[n] || int(rc) != c.Attempt || p.Status.Phase != corev1.PodRunning {
				return false, fmt.Sprintf("%s: API has %s restartCount %d phase %s, containerd runs %s", n, id, rc, p.Status.Phase, running[n])
			}
		}
		return true, ""
	})
}
