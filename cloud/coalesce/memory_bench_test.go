package coalesce

import (
	"runtime"
	"testing"

	"outpost.dev/test/heapstat"
)

// BenchmarkIdleQueueMemory is the memory of 1,000 queues that were used
// once and are empty again, as a relay holds one per connected agent
// (cloud/podstatus): B/queue is heap per queue.
func BenchmarkIdleQueueMemory(b *testing.B) {
	const n = 1000
	for b.Loop() {
		qs := make([]*Queue[string, int], n)
		before := heapstat.Live()
		for i := range qs {
			q := New[string, int](16)
			q.TryPut("uid", 1, nil)
			k, _, _ := q.TryTake()
			q.Done(k)
			qs[i] = q
		}
		after := heapstat.Live()
		b.ReportMetric(float64(after-before)/n, "B/queue")
		runtime.KeepAlive(qs)
	}
}
