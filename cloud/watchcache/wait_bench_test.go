package watchcache_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"outpost.dev/cloud/watchcache"
	"outpost.dev/test/heapstat"
	"outpost.dev/test/wait"
)

// BenchmarkWaiting is the memory of a Cache waiting out its back-off, as
// it does (a pending time.AfterFunc timer) against a goroutine blocked
// on a timer, as a Cache's loop used to wait: heap and stacks per waiter,
// 10,000 waiters.
func BenchmarkWaiting(b *testing.B) {
	const n = 10000
	b.Run("AfterFunc", func(b *testing.B) {
		for b.Loop() {
			before := heapstat.LiveWithStacks()
			timers := make([]*time.Timer, n)
			for i := range timers {
				timers[i] = time.AfterFunc(time.Hour, func() {})
			}
			after := heapstat.LiveWithStacks()
			for _, t := range timers {
				t.Stop()
			}
			b.ReportMetric(float64(after-before)/n, "B/waiter")
		}
	})
	b.Run("goroutine", func(b *testing.B) {
		for b.Loop() {
			before := heapstat.LiveWithStacks()
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
			after := heapstat.LiveWithStacks()
			close(stop)
			wg.Wait()
			b.ReportMetric(float64(after-before)/n, "B/waiter")
		}
	})
}

// BenchmarkCacheMemory is the memory of a Cache watching over a stream
// (Options.Watch, as the relay's are over cloud/watchmux), past its first
// list: 1,000 caches of one object under one cancellable context. B/cache
// is heap per Cache (the test's stream and the object counted in); a
// Cache holds no goroutine, and the stacks its lists' goroutines ended
// with stay cached by the runtime, so they are not counted.
func BenchmarkCacheMemory(b *testing.B) {
	const n = 1000
	f := &fakeStreams{}
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		base := runtime.NumGoroutine()
		before := heapstat.Live()
		caches := make([]*watchcache.Cache, n)
		for i := range caches {
			caches[i] = watchcache.Start(ctx, f.lw(), watchcache.Options{Watch: f.watch})
		}
		wait.For(b, 10*time.Second, "every cache watching", func() bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			return len(f.opened) >= n
		})
		wait.For(b, 10*time.Second, "the lists' goroutines ended", func() bool { return runtime.NumGoroutine() <= base })
		after := heapstat.Live()
		b.ReportMetric(float64(after-before)/n, "B/cache")
		for _, c := range caches {
			c.Stop()
		}
		cancel()
		f.mu.Lock()
		f.opened = nil
		f.mu.Unlock()
	}
}
