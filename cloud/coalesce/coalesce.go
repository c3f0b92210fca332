// Package coalesce is the relay's keyed write queue: at most one value
// waits per key (a newer one is merged into it and keeps its place in
// line), keys are taken oldest first, a key being written is not taken
// again until its write ends, and a failed write waits a backoff before it
// is tried again unless a newer value arrived meanwhile. The queue is
// bounded: Put waits for room, which slows down whoever reports.
//
// Device status (cloud/devices) and pod status (cloud/podstatus) writes
// go through it.
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

// Put queues v for key. When a value of key is waiting already, merge
// (called with it) returns what waits instead; the key keeps its place in
// line, and one backing off keeps backing off. A nil merge replaces it
// with v. merge runs under the queue's lock: it must not block or call the
// queue. With the queue full, Put waits for room; it returns false if ctx
// ended or the queue was closed first.
func (q *Queue[K, V]) Put(ctx context.Context, key K, v V, merge func(waiting V) V) bool {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return false
		}
		if e := q.waiting[key]; e != nil {
			if merge != nil {
				e.v = merge(e.v)
			} else {
				e.v = v
			}
			q.mu.Unlock()
			return true
		}
		if len(q.waiting) < q.max {
			q.waiting[key] = &entry[V]{v: v}
			if _, busy := q.inflight[key]; !busy {
				q.ready = append(q.ready, key)
				q.broadcast()
			}
			q.mu.Unlock()
			return true
		}
		changed := q.changed
		q.mu.Unlock()
		select {
		case <-ctx.Done():
			return false
		case <-changed:
		}
	}
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

// Done ends key's flight; a value put meanwhile becomes ready.
func (q *Queue[K, V]) Done(key K) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.inflight, key)
	if e := q.waiting[key]; e != nil && !e.parked {
		q.ready = append(q.ready, key)
		q.broadcast()
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
		q.ready = append(q.ready, key)
		q.broadcast()
		return
	}
	e := &entry[V]{v: v, parked: true}
	q.waiting[key] = e
	time.AfterFunc(after, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		if q.waiting[key] != e || q.closed {
			return
		}
		e.parked = false
		q.ready = append(q.ready, key)
		q.broadcast()
	})
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
