package podstatus

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"k8s.io/client-go/kubernetes/fake"

	"outpost.dev/wire"
)

// gonePod is a report about a pod that does not exist: dropped, and so
// done, without a write.
func gonePod(i int) *wire.PodStatus {
	return &wire.PodStatus{UID: fmt.Sprint("uid-gone-", i), Namespace: "default", Name: fmt.Sprint("gone-", i), Phase: "Running"}
}

// queueWorkers counts the goroutines serving a coalesce queue.
func queueWorkers() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "cloud/coalesce.(*Queue[...]).work(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// Sessions have no goroutine: their reports are written by at most
// MaxConcurrent workers, which end once nothing is ready; each session's
// reports are done one at a time, oldest first.
func TestSessionsShareWorkers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const workers, sessions, reports = 2, 5, 3
		w, err := NewWriter(WriterConfig{MaxConcurrent: workers})
		if err != nil {
			t.Fatal(err)
		}
		client := fake.NewClientset()
		var (
			mu            sync.Mutex
			running, peak int
			done          = map[int][]uint64{}
		)
		release := make(chan struct{})
		var ss []*Session
		for i := range sessions {
			s := w.Start(context.Background(), SessionConfig{Node: "gw", Client: client, Done: func(seq uint64) {
				mu.Lock()
				running++
				peak = max(peak, running)
				done[i] = append(done[i], seq)
				mu.Unlock()
				<-release
				mu.Lock()
				running--
				mu.Unlock()
			}})
			defer s.Stop()
			ss = append(ss, s)
		}
		if g := queueWorkers(); g != 0 {
			t.Fatalf("%d goroutines for %d sessions with nothing to write", g, sessions)
		}
		for i, s := range ss {
			for j := range reports {
				s.Report(uint64(j+1), gonePod(i*reports+j))
			}
		}
		synctest.Wait()
		if g := queueWorkers(); g != workers {
			t.Fatalf("%d goroutines writing, want %d", g, workers)
		}
		close(release)
		synctest.Wait()
		if g := queueWorkers(); g != 0 {
			t.Fatalf("%d goroutines left once every report was done", g)
		}
		if peak != workers {
			t.Errorf("%d reports written at once, want %d", peak, workers)
		}
		for i := range sessions {
			if !slices.Equal(done[i], []uint64{1, 2, 3}) {
				t.Errorf("session %d: done %v, want [1 2 3]", i, done[i])
			}
		}
	})
}

// Stop waits for the report being written; nothing is written after it.
func TestSessionStopWaitsForWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, _ := NewWriter(WriterConfig{})
		entered, release := make(chan struct{}), make(chan struct{})
		var mu sync.Mutex
		var done []uint64
		s := w.Start(context.Background(), SessionConfig{Node: "gw", Client: fake.NewClientset(), Done: func(seq uint64) {
			if seq == 1 {
				close(entered)
				<-release
			}
			mu.Lock()
			done = append(done, seq)
			mu.Unlock()
		}})
		s.Report(1, gonePod(1))
		s.Report(2, gonePod(2))
		<-entered
		stopped := make(chan struct{})
		go func() { s.Stop(); close(stopped) }()
		synctest.Wait()
		select {
		case <-stopped:
			t.Fatal("Stop returned while a report was being written")
		default:
		}
		close(release)
		<-stopped
		if s.Report(3, gonePod(3)) {
			t.Error("Report took a report after Stop")
		}
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(done, []uint64{1}) {
			t.Errorf("done %v after Stop, want [1]", done)
		}
	})
}

// A panic in one session's write ends that session's writes, not the
// others'.
func TestSessionPanicContained(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, _ := NewWriter(WriterConfig{MaxConcurrent: 1})
		client := fake.NewClientset()
		bad := w.Start(context.Background(), SessionConfig{Node: "gw", Client: client, Done: func(uint64) { panic("boom") }})
		defer bad.Stop()
		a := newAcks()
		good := w.Start(context.Background(), SessionConfig{Node: "gw", Client: client, Done: a.done})
		defer good.Stop()
		bad.Report(1, gonePod(1))
		synctest.Wait()
		bad.Report(2, gonePod(2))
		good.Report(7, gonePod(3))
		if got := <-a.ch; got != 7 {
			t.Fatalf("done %d, want 7", got)
		}
		synctest.Wait()
		if bad.q.Len() != 1 {
			t.Errorf("%d reports waiting in the session that panicked, want 1 (kept, unacked)", bad.q.Len())
		}
	})
}

// TryReport queues without waiting: refused, with nothing queued or done,
// once MaxPending pods wait; a report of a pod already waiting replaces
// it (its seq done) even then; refused once the session stopped. A
// report refused is queued by Report after room was made, and nothing is
// lost.
func TestTryReport(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, err := NewWriter(WriterConfig{MaxConcurrent: 1})
		if err != nil {
			t.Fatal(err)
		}
		var (
			mu   sync.Mutex
			done []uint64
		)
		release := make(chan struct{})
		s := w.Start(context.Background(), SessionConfig{Node: "gw", Client: fake.NewClientset(), MaxPending: 2,
			Done: func(seq uint64) {
				if seq == 1 {
					<-release // the write of 1 stays in flight meanwhile
				}
				mu.Lock()
				done = append(done, seq)
				mu.Unlock()
			}})
		defer s.Stop()
		if !s.TryReport(1, gonePod(1)) {
			t.Fatal("TryReport into an empty session refused")
		}
		synctest.Wait() // 1 in flight: not counted
		if !s.TryReport(2, gonePod(2)) || !s.TryReport(3, gonePod(3)) {
			t.Fatal("TryReport with room refused")
		}
		if s.TryReport(4, gonePod(4)) {
			t.Fatal("TryReport went past MaxPending")
		}
		if !s.TryReport(5, gonePod(2)) {
			t.Fatal("TryReport of a pod already waiting refused")
		}
		mu.Lock()
		if !slices.Equal(done, []uint64{2}) {
			t.Fatalf("done %v, want [2] (replaced by 5)", done)
		}
		mu.Unlock()
		reported := make(chan bool, 1)
		go func() { reported <- s.Report(4, gonePod(4)) }()
		close(release)
		if !<-reported {
			t.Fatal("Report failed")
		}
		synctest.Wait()
		mu.Lock()
		slices.Sort(done)
		if !slices.Equal(done, []uint64{1, 2, 3, 4, 5}) {
			t.Fatalf("done %v, want 1 to 5", done)
		}
		mu.Unlock()
		s.Stop()
		if s.TryReport(6, gonePod(6)) {
			t.Fatal("TryReport after Stop queued")
		}
	})
}
