package coalesce

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

// result is what a Take returned.
type result struct {
	key string
	v   []int
	ok  bool
}

// goTake runs Take in a goroutine; the channel gets its result.
func goTake(ctx context.Context, q *Queue[string, []int]) <-chan result {
	c := make(chan result, 1)
	go func() {
		k, v, ok := q.Take(ctx)
		c <- result{k, v, ok}
	}()
	return c
}

// pending says whether c has no result yet, once every goroutine of the
// bubble is blocked.
func pending[T any](c <-chan T) bool {
	synctest.Wait()
	select {
	case <-c:
		return false
	default:
		return true
	}
}

func appendTo(v int) func([]int) []int { return func(w []int) []int { return append(w, v) } }

func mustTake(t *testing.T, q *Queue[string, []int], key string, want ...int) {
	t.Helper()
	k, v, ok := q.Take(t.Context())
	if !ok || k != key || len(v) != len(want) {
		t.Fatalf("took %q %v %v, want %q %v", k, v, ok, key, want)
	}
	for i := range want {
		if v[i] != want[i] {
			t.Fatalf("took %q %v, want %v", k, v, want)
		}
	}
}

// Keys come out oldest first; a value put for a waiting key merges into it
// and keeps its place.
func TestOrderAndMerge(t *testing.T) {
	q := New[string, []int](10)
	ctx := t.Context()
	q.Put(ctx, "a", []int{1}, nil)
	q.Put(ctx, "b", []int{2}, nil)
	q.Put(ctx, "a", []int{3}, appendTo(3))
	q.Put(ctx, "b", []int{4}, nil) // nil merge: replaced
	if q.Len() != 2 {
		t.Fatalf("Len %d", q.Len())
	}
	mustTake(t, q, "a", 1, 3)
	mustTake(t, q, "b", 4)
	if q.Len() != 0 {
		t.Fatalf("Len %d after taking both", q.Len())
	}
}

// A key in flight is not taken again; what was put meanwhile is ready
// once the flight is Done.
func TestInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := New[string, []int](10)
		ctx := t.Context()
		q.Put(ctx, "a", []int{1}, nil)
		mustTake(t, q, "a", 1)
		q.Put(ctx, "a", []int{2}, nil)
		got := goTake(ctx, q)
		if !pending(got) {
			t.Fatal("a key in flight was taken again")
		}
		q.Put(ctx, "b", []int{5}, nil)
		if r := <-got; r.key != "b" {
			t.Fatalf("took %q, want b (a is in flight)", r.key)
		}
		q.Done("a")
		mustTake(t, q, "a", 2)
	})
}

// A failed value backs off; one put meanwhile merges into it and waits as
// long. A value put during the flight is written instead, at once, with
// the failed one merged as the caller says.
func TestRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := New[string, []int](10)
		ctx := t.Context()
		q.Put(ctx, "a", []int{1}, nil)
		mustTake(t, q, "a", 1)
		q.Retry("a", []int{1}, 10*time.Second, nil)
		got := goTake(ctx, q)
		time.Sleep(5 * time.Second)
		q.Put(ctx, "a", []int{2}, appendTo(2))
		time.Sleep(4 * time.Second)
		if !pending(got) || q.Len() != 1 {
			t.Fatalf("a value backing off was taken early (Len %d)", q.Len())
		}
		time.Sleep(time.Second)
		if r := <-got; r.key != "a" || len(r.v) != 2 {
			t.Fatalf("after the backoff took %+v, want a [1 2]", r)
		}

		// Newer value during the flight: ready at once, the failed one
		// merged into it; the backoff of the failed one is void.
		q.Put(ctx, "a", []int{3}, nil)
		q.Retry("a", []int{1, 2}, time.Hour, func(newer []int) []int { return append([]int{0}, newer...) })
		mustTake(t, q, "a", 0, 3)
		q.Done("a")
		if q.Len() != 0 {
			t.Fatalf("Len %d", q.Len())
		}
	})
}

// Put waits while the queue is full and goes on once a key is taken; it
// gives up when its context ends. Keys in flight do not count.
func TestBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := New[string, []int](2)
		ctx := t.Context()
		q.Put(ctx, "a", []int{1}, nil)
		q.Put(ctx, "b", []int{2}, nil)
		q.Put(ctx, "a", []int{3}, nil) // merging needs no room
		put := make(chan bool, 1)
		go func() { put <- q.Put(ctx, "c", []int{4}, nil) }()
		if !pending(put) {
			t.Fatal("Put went past the bound")
		}
		mustTake(t, q, "a", 3)
		if !<-put {
			t.Fatal("Put failed after room was made")
		}
		cctx, cancel := context.WithCancel(ctx)
		go func() { put <- q.Put(cctx, "d", []int{5}, nil) }()
		if !pending(put) {
			t.Fatal("Put went past the bound")
		}
		cancel()
		if <-put {
			t.Fatal("Put succeeded after its context ended")
		}
		// A Retry keeps its value even with the queue full.
		q.Retry("a", []int{3}, time.Second, nil)
		if q.Len() != 3 {
			t.Fatalf("Len %d, want 3 (b, c and a backing off)", q.Len())
		}
	})
}

// Close wakes every waiting Put and Take with false; nothing is queued
// after it, and a backoff ending after it readies nothing.
func TestClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := New[string, []int](2)
		ctx := t.Context()
		got := goTake(ctx, q)
		synctest.Wait()
		q.Put(ctx, "a", []int{1}, nil)
		if r := <-got; !r.ok {
			t.Fatal("Take failed")
		}
		q.Retry("a", []int{1}, time.Second, nil)
		q.Put(ctx, "b", []int{2}, nil) // full: a backing off, b
		put := make(chan bool, 1)
		go func() { put <- q.Put(ctx, "c", []int{3}, nil) }()
		synctest.Wait()
		q.Close()
		if <-put {
			t.Fatal("a waiting Put succeeded after Close")
		}
		if _, _, ok := q.Take(ctx); ok {
			t.Fatal("Take succeeded after Close")
		}
		if q.Put(ctx, "d", []int{4}, nil) {
			t.Fatal("Put succeeded after Close")
		}
		time.Sleep(2 * time.Second) // the backoff timer fires into a closed queue
		synctest.Wait()
	})
}
