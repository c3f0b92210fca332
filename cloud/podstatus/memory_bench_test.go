package podstatus

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"k8s.io/client-go/kubernetes/fake"

	"outpost.dev/test/heapstat"
	"outpost.dev/test/wait"
)

// BenchmarkSessionMemory is the memory of the sessions of 1,000
// connections, as the relay starts one per connected agent, after one
// report each was written (dropped: its pod does not exist), under one
// cancellable context. B/session is heap per session.
func BenchmarkSessionMemory(b *testing.B) {
	const n = 1000
	w, err := NewWriter(WriterConfig{QPS: 1e6, Burst: 1e6})
	if err != nil {
		b.Fatal(err)
	}
	client := fake.NewClientset()
	log := slog.New(slog.DiscardHandler)
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan uint64, n)
		sessions := make([]*Session, n)
		before := heapstat.Live()
		for i := range sessions {
			sessions[i] = w.Start(ctx, SessionConfig{Node: fmt.Sprint("edge-", i), Client: client, Log: log, Done: func(seq uint64) { done <- seq }})
			sessions[i].Report(1, gonePod(i))
		}
		wait.For(b, 30e9, "every report done", func() bool { return len(done) == n })
		client.ClearActions() // what the fake clientset records is not the sessions'
		after := heapstat.Live()
		b.ReportMetric(float64(after-before)/n, "B/session")
		for _, s := range sessions {
			s.Stop()
		}
		cancel()
	}
}
