package nodes

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"outpost.dev/test/heapstat"
	"outpost.dev/test/wait"
)

// sessionHeap is the Go heap a written, idle session holds, averaged over
// n sessions: the heap with them all written and held, less the heap once
// they are dropped (the fake API server's objects stay in both).
func sessionHeap(tb testing.TB, n int) float64 {
	tb.Helper()
	w, client := newWriter(tb)
	acks := make(chan uint64, n)
	sessions := make([]*Session, n)
	for i := range sessions {
		sessions[i] = w.Start(context.Background(), SessionConfig{Client: w.cfg.Client, Name: fmt.Sprintf("gw-%05d", i),
			OnAck: func(seq uint64) { acks <- seq }})
		sessions[i].Report(1, *report())
	}
	for range n {
		select {
		case <-acks:
		case <-time.After(time.Minute):
			tb.Fatal("reports not written")
		}
	}
	// Wait for the steps that take the Leases, then keep any more from
	// running: the heap is read with no step allocating.
	wait.For(tb, time.Minute, "every session's Lease taken", func() bool {
		for _, s := range sessions {
			if w.q.WaitIdle(s); !s.leased {
				return false
			}
		}
		return true
	})
	for _, s := range sessions {
		s.stopped.Store(true)
		w.q.WaitIdle(s)
		s.timer.Stop()
	}
	held := heapstat.Live()
	runtime.KeepAlive(sessions)
	sessions = nil
	after := heapstat.Live()
	// The Writer and the fake API server's objects stay in both.
	runtime.KeepAlive(w)
	runtime.KeepAlive(client)
	return (float64(held) - float64(after)) / float64(n)
}

// BenchmarkSessionHeap reports the heap one written, idle session keeps
// (B/session), over 1,000 sessions.
func BenchmarkSessionHeap(b *testing.B) {
	for range b.N {
		b.ReportMetric(sessionHeap(b, 1000), "B/session")
	}
}
