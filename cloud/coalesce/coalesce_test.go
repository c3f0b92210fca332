package coalesce

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
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

// Serve runs each key on at most n goroutines, never one key on two at
// once, and has no goroutine left once nothing is ready; a value put
// while its key runs is run again after it.
func TestServe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 3
		q := New[string, []int](100)
		ctx := t.Context()
		var (
			mu            sync.Mutex
			running, peak int
			busy          = map[string]bool{}
			got           = map[string][]int{}
		)
		release := make(chan struct{})
		q.Serve(n, func(key string, v []int) {
			mu.Lock()
			if busy[key] {
				t.Errorf("%s run on two goroutines at once", key)
			}
			busy[key] = true
			running++
			peak = max(peak, running)
			got[key] = append(got[key], v...)
			mu.Unlock()
			<-release
			mu.Lock()
			busy[key] = false
			running--
			mu.Unlock()
			q.Done(key)
		})
		for i := range 10 {
			q.Put(ctx, fmt.Sprint("k", i), []int{i}, nil)
		}
		synctest.Wait()
		if g := workers(); g != n {
			t.Fatalf("%d goroutines serving 10 ready keys, want %d", g, n)
		}
		q.Put(ctx, "k0", []int{100}, appendTo(100)) // k0 is running
		close(release)
		synctest.Wait()
		if g := workers(); g != 0 {
			t.Fatalf("%d goroutines left serving an idle queue", g)
		}
		if peak != n {
			t.Errorf("at most %d ran at once, want %d", peak, n)
		}
		for i := range 10 {
			want := []int{i}
			if i == 0 {
				want = []int{0, 100}
			}
			if k := fmt.Sprint("k", i); !slices.Equal(got[k], want) {
				t.Errorf("%s ran with %v, want %v", k, got[k], want)
			}
		}
		// A key put into the idle queue starts a goroutine again.
		q.Put(ctx, "late", []int{7}, nil)
		synctest.Wait()
		if !slices.Equal(got["late"], []int{7}) {
			t.Errorf("late ran with %v", got["late"])
		}
	})
}

// OnReady is told of each key becoming ready, including after a backoff;
// TryTake takes without waiting and Ready counts what it may take.
func TestOnReadyTryTake(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := New[string, []int](10)
		ctx := t.Context()
		told := 0
		q.OnReady(func() { told++ })
		if _, _, ok := q.TryTake(); ok {
			t.Fatal("TryTake took from an empty queue")
		}
		q.Put(ctx, "a", []int{1}, nil)
		q.Put(ctx, "a", []int{2}, nil) // merged: not ready again
		q.Put(ctx, "b", []int{3}, nil)
		if told != 2 || q.Ready() != 2 {
			t.Fatalf("told %d, %d ready; want 2, 2", told, q.Ready())
		}
		k, v, ok := q.TryTake()
		if !ok || k != "a" || !slices.Equal(v, []int{2}) {
			t.Fatalf("TryTake %q %v %v", k, v, ok)
		}
		q.Retry("a", v, time.Second, nil)
		if told != 2 || q.Ready() != 1 {
			t.Fatalf("told %d, %d ready after a Retry; want 2, 1", told, q.Ready())
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if told != 3 || q.Ready() != 2 {
			t.Fatalf("told %d, %d ready after the backoff; want 3, 2", told, q.Ready())
		}
	})
}

// WaitIdle returns once the key's flight ended, at once for a key not in
// flight.
func TestWaitIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := New[string, []int](10)
		ctx := t.Context()
		q.WaitIdle("a")
		q.Put(ctx, "a", []int{1}, nil)
		mustTake(t, q, "a", 1)
		idle := make(chan struct{})
		go func() { q.WaitIdle("a"); close(idle) }()
		if !pending(idle) {
			t.Fatal("WaitIdle returned while the key was in flight")
		}
		q.Put(ctx, "b", []int{2}, nil) // other changes do not end the wait
		if !pending(idle) {
			t.Fatal("WaitIdle returned while the key was in flight")
		}
		q.Retry("a", []int{1}, time.Hour, nil)
		<-idle
	})
}

// workers counts the goroutines Serve started that are running.
func workers() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "coalesce.(*Queue[...]).work(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// TryPut queues without waiting: false, with nothing changed, when the
// queue is full or closed; merging into a waiting key needs no room, and
// a key in flight does not count; a key put after room was made is
// readied (OnReady) as Put's is, and keeps the order of its arrival.
func TestTryPut(t *testing.T) {
	tests := []struct {
		name string
		// setup runs on a queue bounded to 2 and returns the expected
		// ready keys before the TryPut of key "k".
		setup  func(q *Queue[string, []int])
		merge  bool
		wantOK bool
		// want is what Take returns afterwards, key by key.
		want []result
	}{
		{name: "empty", setup: func(q *Queue[string, []int]) {}, wantOK: true,
			want: []result{{"k", []int{9}, true}}},
		{name: "room", setup: func(q *Queue[string, []int]) { q.TryPut("a", []int{1}, nil) }, wantOK: true,
			want: []result{{"a", []int{1}, true}, {"k", []int{9}, true}}},
		{name: "full", setup: func(q *Queue[string, []int]) {
			q.TryPut("a", []int{1}, nil)
			q.TryPut("b", []int{2}, nil)
		}, wantOK: false,
			want: []result{{"a", []int{1}, true}, {"b", []int{2}, true}}},
		{name: "full, key waiting: merged", setup: func(q *Queue[string, []int]) {
			q.TryPut("k", []int{1}, nil)
			q.TryPut("b", []int{2}, nil)
		}, merge: true, wantOK: true,
			want: []result{{"k", []int{1, 9}, true}, {"b", []int{2}, true}}},
		{name: "full, key waiting: replaced", setup: func(q *Queue[string, []int]) {
			q.TryPut("k", []int{1}, nil)
			q.TryPut("b", []int{2}, nil)
		}, wantOK: true,
			want: []result{{"k", []int{9}, true}, {"b", []int{2}, true}}},
		{name: "full, key backing off: merged", setup: func(q *Queue[string, []int]) {
			q.TryPut("k", []int{1}, nil)
			k, v, _ := q.TryTake()
			q.Retry(k, v, time.Hour, nil)
			q.TryPut("b", []int{2}, nil)
		}, merge: true, wantOK: true,
			want: []result{{"b", []int{2}, true}}}, // k waits its backoff
		{name: "in flight does not count", setup: func(q *Queue[string, []int]) {
			q.TryPut("a", []int{1}, nil)
			q.TryPut("b", []int{2}, nil)
			q.TryTake() // a in flight
		}, wantOK: true,
			want: []result{{"b", []int{2}, true}, {"k", []int{9}, true}}},
		{name: "backing off counts", setup: func(q *Queue[string, []int]) {
			q.TryPut("a", []int{1}, nil)
			k, v, _ := q.TryTake()
			q.Retry(k, v, time.Hour, nil)
			q.TryPut("b", []int{2}, nil)
		}, wantOK: false,
			want: []result{{"b", []int{2}, true}}},
		{name: "closed", setup: func(q *Queue[string, []int]) { q.Close() }, wantOK: false,
			want: []result{{"", nil, false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := New[string, []int](2)
			tt.setup(q)
			readied := 0
			q.OnReady(func() { readied++ })
			before := q.Len()
			var merge func([]int) []int
			if tt.merge {
				merge = appendTo(9)
			}
			if ok := q.TryPut("k", []int{9}, merge); ok != tt.wantOK {
				t.Fatalf("TryPut = %v, want %v", ok, tt.wantOK)
			}
			if !tt.wantOK && (q.Len() != before || readied != 0) {
				t.Fatalf("a refused TryPut changed the queue: Len %d → %d, %d readied", before, q.Len(), readied)
			}
			for i, w := range tt.want {
				k, v, ok := q.TryTake()
				if ok != w.ok || k != w.key || !slices.Equal(v, w.v) {
					t.Fatalf("take %d: %q %v %v, want %q %v %v", i, k, v, ok, w.key, w.v, w.ok)
				}
			}
			if _, _, ok := q.TryTake(); ok {
				t.Fatal("a key ready past the expected ones")
			}
		})
	}
}

// A TryPut refused for a full queue succeeds once a Take makes room;
// TryPut and a Put that waited for room are both held to the bound.
func TestTryPutAfterRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := New[string, []int](1)
		ctx := t.Context()
		if !q.TryPut("a", []int{1}, nil) {
			t.Fatal("TryPut into an empty queue failed")
		}
		if q.TryPut("b", []int{2}, nil) {
			t.Fatal("TryPut went past the bound")
		}
		put := make(chan bool, 1)
		go func() { put <- q.Put(ctx, "c", []int{3}, nil) }()
		if !pending(put) {
			t.Fatal("Put went past the bound")
		}
		mustTake(t, q, "a", 1)
		if !<-put {
			t.Fatal("Put failed after room was made")
		}
		if q.TryPut("b", []int{2}, nil) {
			t.Fatal("TryPut went past the bound after the waiting Put took the room")
		}
		q.Done("a")
		mustTake(t, q, "c", 3)
		if !q.TryPut("b", []int{2}, nil) {
			t.Fatal("TryPut failed with room")
		}
		if q.Len() != 1 {
			t.Fatalf("Len %d, want 1", q.Len())
		}
	})
}
