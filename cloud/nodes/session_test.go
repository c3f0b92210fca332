package nodes

import (
	"context"
	"fmt"
	goruntime "runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// startFleet starts n sessions, gw-0 to gw-<n-1>, each with its first
// report, at one instant.
func startFleet(w *Writer, n int) []*Session {
	sessions := make([]*Session, n)
	for i := range sessions {
		sessions[i] = w.Start(context.Background(), SessionConfig{Client: w.cfg.Client, Name: fmt.Sprintf("gw-%d", i)})
		sessions[i].Report(0, *report())
	}
	return sessions
}

// A fleet of sessions started at one instant, as after a relay restart,
// writes what a kubelet would: each Lease renewed every LeaseDuration/4
// and each unchanged status written every statusRefresh, never less often;
// the first renewal and the first refresh come at a random point within
// their period, so the sessions do not renew in lock-step.
func TestSessionSteadyWrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, client := newWriter(t)
		renewEvery := w.cfg.LeaseDuration / 4
		var mu sync.Mutex
		leases := map[string][]time.Time{} // renewals (patches) by node
		status := map[string][]time.Time{} // status writes by node
		client.PrependReactor("*", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
			mu.Lock()
			defer mu.Unlock()
			switch u := a.(type) {
			case k8stesting.PatchAction: // a renewal or a status write
				switch {
				case u.GetResource().Resource == "leases":
					leases[u.GetName()] = append(leases[u.GetName()], time.Now())
				case u.GetResource().Resource == "nodes" && u.GetSubresource() == "status" && u.GetPatchType() == types.StrategicMergePatchType:
					status[u.GetName()] = append(status[u.GetName()], time.Now())
				}
			}
			return false, nil, nil
		})
		const n = 20
		start := time.Now()
		sessions := startFleet(w, n)
		const span = 10 * time.Minute
		time.Sleep(span - time.Nanosecond)
		synctest.Wait()
		mu.Lock()
		defer func() {
			mu.Unlock()
			for _, s := range sessions {
				s.Stop() // writes EdgeLinkReady=False: not counted above
			}
		}()
		firsts := map[time.Duration]bool{}
		for i := range n {
			name := fmt.Sprintf("gw-%d", i)
			got := leases[name]
			// The Lease is created at once, then renewed span/renewEvery times.
			if want := int(span / renewEvery); len(got) != want {
				t.Fatalf("%s: %d renewals in %v, want %d", name, len(got), span, want)
			}
			first := got[0].Sub(start)
			if first <= 0 || first > renewEvery {
				t.Errorf("%s: first renewal after %v, want within (0, %v]", name, first, renewEvery)
			}
			firsts[first] = true
			// A session wakes at least 1 ms after its step (the timer's
			// floor): a renewal due less than 1 ms after the session's
			// status write comes up to 1 ms late, and the next is
			// renewEvery after it.
			for j := 1; j < len(got); j++ {
				if d := got[j].Sub(got[j-1]); d < renewEvery || d > renewEvery+time.Millisecond {
					t.Fatalf("%s: renewal %d came %v after the one before, want %v (up to 1 ms late)", name, j, d, renewEvery)
				}
			}
			// The Node is created with its status; refreshed twice in span.
			st := status[name]
			if len(st) != 2 {
				t.Fatalf("%s: %d status writes in %v, want 2", name, len(st), span)
			}
			if d := st[0].Sub(start); d <= 0 || d > statusRefresh {
				t.Errorf("%s: first refresh after %v, want within (0, %v]", name, d, statusRefresh)
			}
			if d := st[1].Sub(st[0]); d < statusRefresh || d > statusRefresh+time.Millisecond {
				t.Errorf("%s: second refresh %v after the first, want %v (up to 1 ms late)", name, d, statusRefresh)
			}
		}
		if len(firsts) < n/2 {
			t.Errorf("first renewals of %d sessions started together fell on only %d instants", n, len(firsts))
		}
	})
}

// An API server slower than the renewals come: one worker, each Lease
// write taking 500 ms, 30 sessions, so renewals every 10 s would need
// 15 s of writes in every 10. The renewals start late, the period grows
// past a quarter of the Lease duration (never past three quarters), and
// every Lease is still renewed well within its duration. (Renewed every
// 10 s regardless, they would come as often, since the one worker
// bounds them, but every one late, the queue never empty.)
func TestSessionRenewalsSlowAPI(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset()
		const ld = 40 * time.Second
		w, err := NewWriter(WriterConfig{Client: client, LeaseDuration: ld, Workers: 1})
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		leases := map[string][]time.Time{}
		// The fake clientset holds its lock while a reactor runs: with
		// the sleep on, no other request can be made, Stop's included.
		var slow atomic.Bool
		slow.Store(true)
		client.PrependReactor("patch", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
			if slow.Load() {
				time.Sleep(500 * time.Millisecond)
			}
			mu.Lock()
			defer mu.Unlock()
			leases[a.(k8stesting.PatchAction).GetName()] = append(leases[a.(k8stesting.PatchAction).GetName()], time.Now())
			return false, nil, nil
		})
		const n = 30
		start := time.Now()
		sessions := startFleet(w, n)
		// The period, sampled every second of the span: it moves both
		// ways, growing while renewals start late and shrinking once
		// they start on time.
		const span = 10 * time.Minute
		longest := time.Duration(0)
		for range span / time.Second {
			time.Sleep(time.Second)
			longest = max(longest, w.pace.period())
		}
		synctest.Wait()
		slow.Store(false)
		time.Sleep(time.Second) // the write in flight, if any, ends
		mu.Lock()
		defer func() {
			mu.Unlock()
			for _, s := range sessions {
				s.Stop()
			}
		}()
		if longest <= ld/4 || longest > ld*3/4 {
			t.Errorf("longest renewal period in %v of late renewals %v, want within (%v, %v]", span, longest, ld/4, ld*3/4)
		}
		for i := range n {
			name := fmt.Sprintf("gw-%d", i)
			got := leases[name]
			if len(got) < int(span/(ld*3/4)) {
				t.Fatalf("%s: %d renewals in %v", name, len(got), span)
			}
			for j := 1; j < len(got); j++ {
				if got[j].Sub(start) < time.Minute {
					continue // the fleet's start, all at once
				}
				if d := got[j].Sub(got[j-1]); d >= ld*7/8 {
					t.Errorf("%s: renewal %d came %v after the one before, want well within the Lease duration %v", name, j, d, ld)
				}
			}
		}
	})
}

// Connected sessions cost no goroutine: a fleet of them, written and
// idle between renewals, leaves none running; steps run on at most
// Workers goroutines at once, one session never on two.
func TestSessionsShareWorkers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		client := fake.NewClientset()
		const workers = 2
		w, err := NewWriter(WriterConfig{Client: client, LeaseDuration: 40 * time.Second, Workers: workers})
		if err != nil {
			t.Fatal(err)
		}
		// Alive is asked on the worker, before each renewal.
		var (
			mu            sync.Mutex
			running, peak int
		)
		release := make(chan struct{})
		alive := func() bool {
			mu.Lock()
			running++
			peak = max(peak, running)
			mu.Unlock()
			<-release
			mu.Lock()
			running--
			mu.Unlock()
			return true
		}
		const n = 10
		var sessions []*Session
		for i := range n {
			s := w.Start(context.Background(), SessionConfig{Client: client, Name: fmt.Sprintf("gw-%d", i), Alive: alive})
			s.Report(0, *report())
			sessions = append(sessions, s)
		}
		synctest.Wait()
		if g := queueWorkers(); g != workers {
			t.Fatalf("%d goroutines for %d sessions with writes due, want %d", g, n, workers)
		}
		close(release)
		time.Sleep(time.Minute) // past every first renewal
		synctest.Wait()
		if g := queueWorkers(); g != 0 {
			t.Fatalf("%d goroutines for %d idle sessions, want 0", g, n)
		}
		if peak != workers {
			t.Errorf("at most %d steps at once, want %d", peak, workers)
		}
		leases, err := client.CoordinationV1().Leases(LeaseNamespace).List(context.Background(), metav1.ListOptions{})
		if err != nil || len(leases.Items) != n {
			t.Fatalf("%d leases (%v), want %d", len(leases.Items), err, n)
		}
		for _, s := range sessions {
			s.Stop()
		}
	})
}

// A Node marked Unknown (the node lifecycle controller's mark) while the
// agent is heard from is written Ready again within a step, not at the
// next refresh; while the agent is silent it is left as it is.
func TestSessionNodeUnknown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		w, client := newWriter(t)
		var alive atomic.Bool
		alive.Store(true)
		s := w.Start(ctx, SessionConfig{Client: client, Name: "gw-1", Alive: alive.Load})
		defer s.Stop()
		s.Report(0, *report())
		synctest.Wait()
		ready := func() corev1.NodeCondition {
			t.Helper()
			n, err := client.CoreV1().Nodes().Get(ctx, "gw-1", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return n.Status.Conditions[condIndex(n.Status.Conditions, corev1.NodeReady)]
		}
		if c := ready(); c.Status != corev1.ConditionTrue {
			t.Fatalf("Ready %s after the first write", c.Status)
		}
		for _, tc := range []struct {
			alive bool
			want  corev1.ConditionStatus
		}{{false, corev1.ConditionUnknown}, {true, corev1.ConditionTrue}} {
			alive.Store(tc.alive)
			n, err := client.CoreV1().Nodes().Get(ctx, "gw-1", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			i := condIndex(n.Status.Conditions, corev1.NodeReady)
			n.Status.Conditions[i].Status, n.Status.Conditions[i].Reason = corev1.ConditionUnknown, "NodeStatusUnknown"
			if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			s.NodeUnknown()
			time.Sleep(time.Second)
			synctest.Wait()
			if c := ready(); c.Status != tc.want {
				t.Fatalf("agent heard from %v: Ready %s (%s) a second after the Node was marked Unknown, want %s", tc.alive, c.Status, c.Reason, tc.want)
			}
		}
	})
}

// Stop waits for the step running, then marks the link down; no step
// runs after it.
func TestSessionStopWaitsForStep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, client := newWriter(t)
		// Alive is asked on the worker, within the step, before a renewal.
		var hold atomic.Bool
		entered, release := make(chan struct{}, 1), make(chan struct{})
		alive := func() bool {
			if hold.Load() {
				entered <- struct{}{}
				<-release
			}
			return true
		}
		var after atomic.Int32
		stopped := make(chan struct{})
		client.PrependReactor("*", "nodes", func(a k8stesting.Action) (bool, runtime.Object, error) {
			if a.GetVerb() != "update" && a.GetVerb() != "patch" {
				return false, nil, nil
			}
			select {
			case <-stopped:
				after.Add(1)
			default:
			}
			return false, nil, nil
		})
		s := w.Start(context.Background(), SessionConfig{Client: client, Name: "gw-1", Alive: alive})
		s.Report(0, *report())
		synctest.Wait()
		hold.Store(true)
		time.Sleep(w.cfg.LeaseDuration / 4) // the next renewal
		<-entered
		go func() { s.Stop(); close(stopped) }()
		if !pendingChan(stopped) {
			t.Fatal("Stop returned while a step ran")
		}
		hold.Store(false)
		close(release)
		<-stopped
		n, err := client.CoreV1().Nodes().Get(context.Background(), "gw-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if c := n.Status.Conditions[condIndex(n.Status.Conditions, ConditionLinkReady)]; c.Status != corev1.ConditionFalse {
			t.Fatalf("EdgeLinkReady %s after Stop, want False", c.Status)
		}
		s.Report(2, *report())
		time.Sleep(time.Hour)
		synctest.Wait()
		if after.Load() != 0 {
			t.Fatal("a step ran after Stop")
		}
	})
}

// A panic in one session's step ends that session's writes (OnFatal), not
// the others'.
func TestSessionPanicContained(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, client := newWriter(t)
		fatal := make(chan error, 1)
		bad := w.Start(context.Background(), SessionConfig{Client: client, Name: "gw-bad",
			OnAck: func(uint64) { panic("boom") }, OnFatal: func(err error) { fatal <- err }})
		acks := make(chan uint64, 1)
		good := w.Start(context.Background(), SessionConfig{Client: client, Name: "gw-good", OnAck: func(seq uint64) { acks <- seq }})
		bad.Report(1, *report())
		if err := <-fatal; err == nil {
			t.Fatal("no error after a panic")
		}
		good.Report(1, *report())
		if seq := <-acks; seq != 1 {
			t.Fatalf("acked %d", seq)
		}
		bad.Stop()
		good.Stop()
	})
}

// pendingChan says whether c is still open once every goroutine of the
// bubble is blocked.
func pendingChan(c <-chan struct{}) bool {
	synctest.Wait()
	select {
	case <-c:
		return false
	default:
		return true
	}
}

// queueWorkers counts the goroutines serving a coalesce queue.
func queueWorkers() int {
	buf := make([]byte, 1<<20)
	for {
		n := goruntime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "cloud/coalesce.(*Queue[...]).work(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// A periodic status refresh that fails is retried, and the Lease goes on
// being renewed: after a failed write the session re-reads the Node, and
// until then renews nothing, so a refresh that was not retried left the
// Lease to expire and the node to go NotReady while its agent stayed
// connected.
func TestSessionRetriesFailedRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, client := newWriter(t)
		renewEvery := w.cfg.LeaseDuration / 4
		var mu sync.Mutex
		var renewals []time.Time
		statusWrites, refused := 0, 0
		client.PrependReactor("*", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case a.GetVerb() == "patch" && a.GetResource().Resource == "leases":
				renewals = append(renewals, time.Now())
			case a.GetVerb() == "patch" && a.GetResource().Resource == "nodes" && a.GetSubresource() == "status":
				if statusWrites++; statusWrites == 1 { // the first refresh
					refused++
					return true, nil, apierrors.NewServiceUnavailable("etcd is restarting")
				}
			}
			return false, nil, nil
		})
		start := time.Now()
		s := w.Start(context.Background(), SessionConfig{Client: w.cfg.Client, Name: "gw-1"})
		s.Report(0, *report())
		const span = 2 * statusRefresh
		time.Sleep(span - time.Nanosecond)
		synctest.Wait()
		mu.Lock()
		got, writes, n := append([]time.Time(nil), renewals...), statusWrites, refused
		mu.Unlock()
		s.Stop()
		if n != 1 {
			t.Fatalf("%d status writes refused, want the first refresh's", n)
		}
		// The refresh within statusRefresh failed, its retry within a
		// second succeeded, and the second refresh came statusRefresh later.
		if writes != 3 {
			t.Errorf("%d status writes in %v, want 3 (the refused refresh, its retry, the next refresh)", writes, span)
		}
		// Renewals go on past the failure: at most one period is lost to
		// it (the retry takes the Lease at once, then at a random phase).
		if want := int(span/renewEvery) - 1; len(got) < want {
			t.Fatalf("%d Lease renewals in %v, want at least %d", len(got), span, want)
		}
		for i := 1; i < len(got); i++ {
			if d := got[i].Sub(got[i-1]); d > renewEvery+time.Second {
				t.Errorf("renewal %d came %v after the one before, want at most %v and a second's retry", i, d, renewEvery)
			}
		}
		if last := got[len(got)-1].Sub(start); span-last > renewEvery {
			t.Errorf("the last renewal came %v after the start, want within %v of %v", last, renewEvery, span)
		}
	})
}
