package coalesce

import (
	"runtime"
	"testing"
)

// BenchmarkIdleQueueMemory is the memory of 1,000 queues that were used
// once and are empty again, as a relay holds one per connected agent
// (cloud/podstatus): B/queue is heap per queue.
func BenchmarkIdleQueueMemory(b *testing.B) {
	const n = 1000
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	for b.Loop() {
		qs := make([]*Queue[string, int], n)
		before := heap()
		for i := range qs {
			q := New[string, int](16)
			q.TryPut("uid", 1, nil)
			k, _, _ := q.TryTake()
			q.Done(k)
			qs[i] = q
		}
		after := heap()
		b.ReportMetric(float64(after-before)/n, "B/queue")
		runtime.KeepAlive(qs)
	}
}
