// Package coalesce is the relay's keyed write queue: at most one value
// waits per key (a newer one is merged into it and keeps its place in
// line), keys are taken oldest first, a key being written is not taken
// again until its write ends, and a failed write waits a backoff before it
// is tried again unless a newer value arrived meanwhile. The queue is
// bounded: Put waits for room, which slows down whoever reports.
//
// A queue is drained either by the caller's own goroutines calling Take, or
// by Serve, which runs a function for each key taken on a bounded number
// of goroutines that exist only while keys are ready: a relay-wide queue
// of sessions then needs no goroutine per session.
//
// TryPut and TryTake are Put and Take that never wait: a caller that must
// not wait (a poller's loop) tries first, and waits elsewhere only when
// the queue is full.
//
// Device status (cloud/devices), pod status (cloud/podstatus) and node
// status and Lease (cloud/nodes) writes go through it.
package coalesce

import (
	"context"
	"sync"
	"time"
)

// Queue is a keyed coalescing queue; create it with New.
type Queue[K comparable, V any] struct {
	max int

	mu       sync.Mutex
	waiting  map[K]*entry[V] // not in flight: ready, or backing off
	ready    []K             // waiting keys that may be taken, oldest first
	inflight map[K]struct{}
	changed  chan struct{} // closed and replaced on every change
	closed   bool

	onReady func()     // see OnReady
	serve   func(K, V) // see Serve
	workers int        // goroutines running serve
	maxWork int
}

type entry[V any] struct {
	v      V
	parked bool // backing off after a failure: not in ready
}

// New returns a queue holding at most limit waiting keys (keys in flight
// do not count); a limit below 1 means 1.
func New[K comparable, V any](limit int) *Queue[K, V] {
	return &Queue[K, V]{
		max:      max(limit, 1),
		waiting:  map[K]*entry[V]{},
		inflight: map[K]struct{}{},
		changed:  make(chan struct{}),
	}
}

// broadcast wakes every goroutine waiting in Put or Take. Called with mu
// held.
func (q *Queue[K, V]) broadcast() {
	close(q.changed)
	q.changed = make(chan struct{})
}

// readied makes key ready: it goes to the back of the line, and whoever
// waits for one is told. Called with mu held.
func (q *Queue[K, V]) readied(key K) {
	q.ready = append(q.ready, key)
	q.broadcast()
	if q.onReady != nil {
		q.onReady()
	}
	if q.serve != nil && q.workers < q.maxWork {
		q.workers++
		go q.work()
	}
}

// OnReady sets f to be called whenever a key becomes ready: put while not
// in flight, its flight ended with a newer value waiting, or its backoff
// over. f runs under the queue's lock: it must not block or call this
// queue. Set it before the queue is used.
func (q *Queue[K, V]) OnReady(f func()) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.onReady = f
}

// Serve runs do(key, v) for each key taken from q, on at most n
// goroutines (n below 1 means 1). A goroutine is started when a key
// becomes ready and fewer than n run, and ends when no key is ready, so
// an idle queue has none. do ends the key's flight with Done or Retry;
// it must not panic. Call Serve once, before the queue is used; Take must
// not be used with it.
func (q *Queue[K, V]) Serve(n int, do func(key K, v V)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.serve, q.maxWork = do, max(n, 1)
	for range min(len(q.ready), q.maxWork) {
		q.workers++
		go q.work()
	}
}

// work takes ready keys for Serve until none is left.
func (q *Queue[K, V]) work() {
	for {
		q.mu.Lock()
		if q.closed || len(q.ready) == 0 {
			q.workers--
			q.mu.Unlock()
			return
		}
		key, v := q.take()
		q.mu.Unlock()
		q.serve(key, v)
	}
}

// Put queues v for key. When a value of key is waiting already, merge
// (called with it) returns what waits instead; the key keeps its place in
// line, and one backing off keeps backing off. A nil merge replaces it
// with v. merge runs under the queue's lock: it must not block or call the
// queue. With the queue full, Put waits for room; it returns false if ctx
// ended or the queue was closed first.
func (q *Queue[K, V]) Put(ctx context.Context, key K, v V, merge func(waiting V) V) bool {
	for {
		q.mu.Lock()
		put, full := q.put(key, v, merge)
		changed := q.changed
		q.mu.Unlock()
		if !full {
			return put
		}
		select {
		case <-ctx.Done():
			return false
		case <-changed:
		}
	}
}

// TryPut is Put without waiting: it returns false, having done nothing,
// when the queue is full or closed. A value merged into one of its key
// already waiting needs no room: that is never refused for a full queue.
func (q *Queue[K, V]) TryPut(key K, v V, merge func(waiting V) V) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	put, _ := q.put(key, v, merge)
	return put
}

// put queues v for key as Put does, if it can without waiting: full says
// it did not for want of room. Called with mu held.
func (q *Queue[K, V]) put(key K, v V, merge func(waiting V) V) (put, full bool) {
	if q.closed {
		return false, false
	}
	if e := q.waiting[key]; e != nil {
		if merge != nil {
			e.v = merge(e.v)
		} else {
			e.v = v
		}
		return true, false
	}
	if len(q.waiting) >= q.max {
		return false, true
	}
	q.waiting[key] = &entry[V]{v: v}
	if _, busy := q.inflight[key]; !busy {
		q.readied(key)
	}
	return true, false
}

// Take returns the oldest ready key and its value, and holds the key in
// flight until Done or Retry: a value put meanwhile waits. Take waits for
// a ready key; it returns false once ctx ends or the queue is closed.
func (q *Queue[K, V]) Take(ctx context.Context) (key K, v V, ok bool) {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return key, v, false
		}
		if len(q.ready) > 0 {
			key, v = q.take()
			q.mu.Unlock()
			return key, v, true
		}
		changed := q.changed
		q.mu.Unlock()
		select {
		case <-ctx.Done():
			return key, v, false
		case <-changed:
		}
	}
}

// TryTake is Take without waiting: ok is false when no key is ready or
// the queue is closed.
func (q *Queue[K, V]) TryTake() (key K, v V, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || len(q.ready) == 0 {
		return key, v, false
	}
	key, v = q.take()
	return key, v, true
}

// take takes the oldest ready key into flight. Called with mu held and a
// key ready.
func (q *Queue[K, V]) take() (key K, v V) {
	key = q.ready[0]
	var zero K
	q.ready[0] = zero
	q.ready = q.ready[1:]
	if len(q.ready) == 0 {
		q.ready = nil // let the backing array go
	}
	v = q.waiting[key].v
	delete(q.waiting, key)
	q.inflight[key] = struct{}{}
	q.broadcast() // room for a Put
	return key, v
}

// Done ends key's flight; a value put meanwhile becomes ready.
func (q *Queue[K, V]) Done(key K) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.inflight, key)
	if e := q.waiting[key]; e != nil && !e.parked {
		q.readied(key)
	} else {
		q.broadcast() // for WaitIdle
	}
}

// WaitIdle waits until key is not in flight. A key taken after it returns
// is not waited for.
func (q *Queue[K, V]) WaitIdle(key K) {
	for {
		q.mu.Lock()
		_, busy := q.inflight[key]
		changed := q.changed
		q.mu.Unlock()
		if !busy {
			return
		}
		<-changed
	}
}

// Retry ends key's flight with v, whose write failed. If a value of key
// was put meanwhile, merge (called with it, under the queue's lock; nil
// keeps it as it is) returns what waits, ready at once: the newer value
// is written, never v after it. Otherwise v waits, backing off, and is
// ready after the given time; values put meanwhile merge into it. A Retry
// past the bound of the queue still keeps v.
func (q *Queue[K, V]) Retry(key K, v V, after time.Duration, merge func(newer V) V) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.inflight, key)
	if e := q.waiting[key]; e != nil {
		if merge != nil {
			e.v = merge(e.v)
		}
		q.readied(key)
		return
	}
	e := &entry[V]{v: v, parked: true}
	q.waiting[key] = e
	q.broadcast() // for WaitIdle
	time.AfterFunc(after, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		if q.waiting[key] != e || q.closed {
			return
		}
		e.parked = false
		q.readied(key)
	})
}

// Ready is the number of keys that may be taken now.
func (q *Queue[K, V]) Ready() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.ready)
}

// Len is the number of keys waiting (ready or backing off), not counting
// those in flight.
func (q *Queue[K, V]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.waiting)
}

// Close ends the queue: Put and Take return false from now on, waiting
// ones at once. Values still queued are dropped.
func (q *Queue[K, V]) Close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		q.broadcast()
	}
}
