package watchcache_test

import (
	"runtime"
	"sync"
	"testing"
	"time"
)

// BenchmarkWaiting is the memory of a Cache waiting out its back-off, as
// it does (a pending time.AfterFunc timer) against a goroutine blocked
// on a timer, as a Cache's loop used to wait: heap and stacks per waiter,
// 10,000 waiters.
func BenchmarkWaiting(b *testing.B) {
	const n = 10000
	measure := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc + ms.StackInuse
	}
	b.Run("AfterFunc", func(b *testing.B) {
		for b.Loop() {
			before := measure()
			timers := make([]*time.Timer, n)
			for i := range timers {
				timers[i] = time.AfterFunc(time.Hour, func() {})
			}
			after := measure()
			for _, t := range timers {
				t.Stop()
			}
			b.ReportMetric(float64(after-before)/n, "B/waiter")
		}
	})
	b.Run("goroutine", func(b *testing.B) {
		for b.Loop() {
			before := measure()
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					t := time.NewTimer(time.Hour)
					defer t.Stop()
					select {
					case <-t.C:
					case <-stop:
					}
				}()
			}
			after := measure()
			close(stop)
			wg.Wait()
			b.ReportMetric(float64(after-before)/n, "B/waiter")
		}
	})
}
