package pods

import (
	"context"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"outpost.dev/wire"
)

// bubbleGoroutines returns the stacks of the goroutines of the synctest
// bubble running the test (there is one: these tests are not parallel).
func bubbleGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		header, _, _ := strings.Cut(g, "\n")
		if strings.Contains(header, "synctest bubble") {
			out = append(out, g)
		}
	}
	return out
}

// noTokens makes a pod without the service-account token source every
// pod of defaulted() has.
func noTokens(p *corev1.Pod) {
	p.Spec.Volumes = nil
	p.Spec.Containers[0].VolumeMounts = nil
}

// An idle session holds no goroutine: not while it waits for its Node,
// nor once it is in sync (its pod watch, read on a goroutine only because
// the fake clientset has no watchmux streams, is the one left).
func TestSessionIdleHoldsNoGoroutine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		client := fake.NewClientset(testPod("web", "edge-1", "10", noTokens))
		rec := &recorder{frames: make(chan wire.Sync, 16)}
		base := len(bubbleGoroutines())
		s := Start(ctx, Config{Client: client, Node: "edge-1", Send: rec.send, Syncer: NewSyncer(2)})
		defer s.Stop()

		// No Node yet: the session read it, and waits for its back-off.
		synctest.Wait()
		if g := bubbleGoroutines(); len(g) != base {
			t.Fatalf("%d goroutines more while waiting for the Node:\n%s", len(g)-base, strings.Join(g, "\n\n"))
		}
		if _, err := client.CoreV1().Nodes().Create(ctx, edgeNode("edge-1"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := summary(rec.next(t)); !equal(got, "+pod/web@10") {
			t.Fatalf("initial sync %v", got)
		}
		synctest.Wait()
		g := bubbleGoroutines()
		if len(g) != base+1 {
			t.Fatalf("%d goroutines more once in sync, want 1 (the fake client's pod watch):\n%s", len(g)-base, strings.Join(g, "\n\n"))
		}
		for _, st := range g {
			if strings.Contains(st, "outpost.dev/cloud/pods.(*") || strings.Contains(st, "outpost.dev/cloud/coalesce.") {
				t.Fatalf("a goroutine of the session or its Syncer while idle:\n%s", st)
			}
		}

		// An hour idle: no frame, and still no goroutine.
		time.Sleep(time.Hour)
		synctest.Wait()
		if n := len(bubbleGoroutines()); n != base+1 {
			t.Fatalf("%d goroutines more after an idle hour, want 1", n-base)
		}
		if len(rec.frames) != 0 {
			t.Fatalf("a frame while nothing changed: %v", summary(<-rec.frames))
		}
		s.Stop()
		synctest.Wait()
		if n := len(bubbleGoroutines()); n != base {
			t.Fatalf("%d goroutines more after Stop, want 0", n-base)
		}
	})
}

// The session's timer, not a watch event, brings the next read of a
// claim: nothing the session watches changes when a claim binds.
func TestSessionTimerReadsClaimAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		claim := boundClaim("data-0", "")
		claim.Status.Phase = corev1.ClaimPending
		client := fake.NewClientset(
			edgeNode("edge-1"),
			testPod("db", "edge-1", "10", func(p *corev1.Pod) {
				noTokens(p)
				p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "data", VolumeSource: pvcSource("data-0", false)})
			}),
			claim,
		)
		rec := &recorder{frames: make(chan wire.Sync, 16)}
		s := Start(ctx, Config{Client: client, Node: "edge-1", Send: rec.send, Syncer: NewSyncer(2)})
		defer s.Stop()
		if got := summary(rec.next(t)); len(got) != 0 {
			t.Fatalf("initial sync %v, want nothing (the pod waits)", got)
		}
		synctest.Wait() // the refusal written, its watch event handled
		if _, err := client.CoreV1().PersistentVolumes().Create(ctx, volumeFor("pv-1", "data-0",
			corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: "/srv/db"}}), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := client.CoreV1().PersistentVolumeClaims("default").Update(ctx, boundClaim("data-0", "pv-1"), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if len(rec.frames) != 0 {
			t.Fatalf("a frame before the timer fired: %v", summary(<-rec.frames))
		}
		start := time.Now()
		if got := summary(rec.next(t)); !equal(got, "+pod/db@10") {
			t.Fatalf("after the bind: %v", got)
		}
		if waited := time.Since(start); waited <= 0 || waited > claimRetry {
			t.Fatalf("the claim was read again after %v, want within (0, %v]", waited, claimRetry)
		}
	})
}

// blockingSend is a Send that holds the pass calling it until released.
type blockingSend struct {
	entered chan struct{} // receives a value as each call begins
	release chan struct{}
	calls   atomic.Int32
}

func (b *blockingSend) send([]byte) bool {
	b.calls.Add(1)
	b.entered <- struct{}{}
	<-b.release
	return true
}

// Stop while a pass runs (here, in Send) returns only once that pass has
// returned; then no pass runs again and the watches are stopped.
func TestSessionStopWaitsForPass(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		client := fake.NewClientset(edgeNode("edge-1"), testPod("web", "edge-1", "10", noTokens))
		b := &blockingSend{entered: make(chan struct{}, 16), release: make(chan struct{})}
		base := len(bubbleGoroutines())
		s := Start(ctx, Config{Client: client, Node: "edge-1", Send: b.send, Syncer: NewSyncer(2)})
		<-b.entered // the initial sync is being sent
		stopped := make(chan struct{})
		go func() {
			s.Stop()
			close(stopped)
		}()
		synctest.Wait()
		select {
		case <-stopped:
			t.Fatal("Stop returned while a pass ran")
		case <-s.Done():
			t.Fatal("Done closed while a pass ran")
		default:
		}
		close(b.release)
		<-stopped
		select {
		case <-s.Done():
		default:
			t.Fatal("Done still open after Stop")
		}
		calls := b.calls.Load()
		p, _ := client.CoreV1().Pods("default").Get(ctx, "web", metav1.GetOptions{})
		p.ResourceVersion = "11"
		if _, err := client.CoreV1().Pods("default").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		if c := b.calls.Load(); c != calls {
			t.Fatalf("%d sends after Stop", c-calls)
		}
		if n := len(bubbleGoroutines()); n != base {
			t.Fatalf("%d goroutines more after Stop (a watch left running?)", n-base)
		}
	})
}

// A pass that panics ends its own session (logged, Done closed) and no
// other: a session on the same single worker goes on syncing.
func TestSessionPanicEndsOnlyItself(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		client := fake.NewClientset(edgeNode("edge-1"), edgeNode("edge-2"),
			testPod("a", "edge-1", "10", noTokens), testPod("b", "edge-2", "11", noTokens))
		y := NewSyncer(1)
		var logs strings.Builder
		var logMu sync.Mutex
		log := slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil))
		bad := Start(ctx, Config{Client: client, Node: "edge-1", Log: log, Syncer: y,
			Send: func([]byte) bool { panic("boom") }})
		defer bad.Stop()
		rec := &recorder{frames: make(chan wire.Sync, 16)}
		good := Start(ctx, Config{Client: client, Node: "edge-2", Send: rec.send, Syncer: y})
		defer good.Stop()
		<-bad.Done()
		logMu.Lock()
		logged := logs.String()
		logMu.Unlock()
		if !strings.Contains(logged, "pod sync panicked") || !strings.Contains(logged, "boom") {
			t.Fatalf("the panic was not logged: %q", logged)
		}
		if got := summary(rec.next(t)); !equal(got, "+pod/b@11") {
			t.Fatalf("the other session's initial sync: %v", got)
		}
		p, _ := client.CoreV1().Pods("default").Get(ctx, "b", metav1.GetOptions{})
		p.ResourceVersion = "12"
		if _, err := client.CoreV1().Pods("default").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := summary(rec.next(t)); !equal(got, "+pod/b@12") {
			t.Fatalf("the other session's delta: %v", got)
		}
		select {
		case <-good.Done():
			t.Fatal("the other session ended")
		default:
		}
	})
}

// A pass held up (a slow API request, here a slow Send) holds one worker
// of the Syncer: the other sessions go on with the others.
func TestSlowSessionHoldsOneWorker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		client := fake.NewClientset(edgeNode("edge-1"), edgeNode("edge-2"), edgeNode("edge-3"),
			testPod("a", "edge-1", "10", noTokens), testPod("b", "edge-2", "11", noTokens), testPod("c", "edge-3", "12", noTokens))
		const workers = 2
		y := NewSyncer(workers)
		slow := &blockingSend{entered: make(chan struct{}, 16), release: make(chan struct{})}
		sa := Start(ctx, Config{Client: client, Node: "edge-1", Send: slow.send, Syncer: y})
		defer sa.Stop()
		<-slow.entered
		recs := map[string]*recorder{}
		for _, n := range []string{"edge-2", "edge-3"} {
			recs[n] = &recorder{frames: make(chan wire.Sync, 16)}
			s := Start(ctx, Config{Client: client, Node: n, Send: recs[n].send, Syncer: y})
			defer s.Stop()
		}
		if got := summary(recs["edge-2"].next(t)); !equal(got, "+pod/b@11") {
			t.Fatalf("edge-2: %v", got)
		}
		if got := summary(recs["edge-3"].next(t)); !equal(got, "+pod/c@12") {
			t.Fatalf("edge-3: %v", got)
		}
		synctest.Wait()
		if n := queueWorkers(bubbleGoroutines()); n != 1 {
			t.Fatalf("%d workers with one pass held up, want 1", n)
		}
		close(slow.release)
		synctest.Wait()
		if n := queueWorkers(bubbleGoroutines()); n != 0 {
			t.Fatalf("%d workers once idle, want 0", n)
		}
	})
}

// queueWorkers counts the goroutines serving a coalesce queue.
func queueWorkers(stacks []string) int {
	n := 0
	for _, s := range stacks {
		if strings.Contains(s, "cloud/coalesce.(*Queue[...]).work(") {
			n++
		}
	}
	return n
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// countingExtra counts the passes of a session: each reads Objects.
type countingExtra struct{ passes atomic.Int64 }

func (e *countingExtra) Synced() bool           { return true }
func (e *countingExtra) OnChange(func())        {}
func (e *countingExtra) Objects() []wire.Object { e.passes.Add(1); return nil }

// The end of the context a session was started with ends it, as Stop
// does, and its Syncer then watches that context no more; sessions of
// another context go on.
func TestSessionEndsWithItsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset(edgeNode("edge-1"), edgeNode("edge-2"))
		y := NewSyncer(2)
		ctx, cancel := context.WithCancel(context.Background())
		recs := []*recorder{{frames: make(chan wire.Sync, 16)}, {frames: make(chan wire.Sync, 16)}, {frames: make(chan wire.Sync, 16)}}
		a := Start(ctx, Config{Client: client, Node: "edge-1", Send: recs[0].send, Syncer: y})
		defer a.Stop()
		b := Start(ctx, Config{Client: client, Node: "edge-2", Send: recs[1].send, Syncer: y})
		defer b.Stop()
		other := Start(context.Background(), Config{Client: client, Node: "edge-1", Send: recs[2].send, Syncer: y})
		defer other.Stop()
		for _, r := range recs {
			r.next(t) // the initial sync
		}
		y.mu.Lock()
		if n := len(y.parents); n != 1 {
			t.Errorf("the Syncer watches %d contexts, want 1 for two sessions", n)
		}
		y.mu.Unlock()
		cancel()
		synctest.Wait()
		for _, s := range []*Session{a, b} {
			select {
			case <-s.Done():
			default:
				t.Fatal("a session goes on after its context ended")
			}
		}
		select {
		case <-other.Done():
			t.Fatal("a session of another context ended")
		default:
		}
		y.mu.Lock()
		defer y.mu.Unlock()
		if n := len(y.parents); n != 0 {
			t.Errorf("the Syncer still watches %d contexts", n)
		}
		if y.first != other || other.next != nil {
			t.Error("ended sessions still linked in the Syncer")
		}
	})
}

// A session with nothing due holds no timer, and the Syncer's sweep
// runs a pass of it once it was idle for idleWake.
func TestIdleSessionSweptHourly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset(edgeNode("edge-1"), testPod("web", "edge-1", "10", noTokens))
		rec := &recorder{frames: make(chan wire.Sync, 16)}
		extra := &countingExtra{}
		y := NewSyncer(2)
		s := Start(context.Background(), Config{Client: client, Node: "edge-1", Send: rec.send, Extra: extra, Syncer: y})
		defer s.Stop()
		rec.next(t) // the initial sync
		synctest.Wait()
		passes := extra.passes.Load()
		y.q.WaitIdle(s)
		if s.timer != nil {
			t.Fatal("a timer kept with nothing due")
		}
		time.Sleep(idleWake - sweepEvery)
		synctest.Wait()
		if n := extra.passes.Load(); n != passes {
			t.Fatalf("%d passes before the session was idle for idleWake", n-passes)
		}
		time.Sleep(2 * sweepEvery)
		synctest.Wait()
		if n := extra.passes.Load(); n != passes+1 {
			t.Fatalf("%d passes after idleWake, want 1", n-passes)
		}
	})
}
