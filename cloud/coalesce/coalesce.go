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

	// The maps are made when a key is put and dropped when they are
	// empty again, and changed only while someone waits: an idle queue
	// holds nothing but itself.
	mu       sync.Mutex
	waiting  map[K]*entry[V] // not in flight: ready, or backing off
	ready    []K             // waiting keys that may be taken, oldest first
	inflight map[K]struct{}
	changed  chan struct{} // closed on the next change; nil while nobody waits
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
	return &Queue[K, V]{max: max(limit, 1)}
}

// broadcast wakes every goroutine waiting in Put, Take or WaitIdle.
// Called with mu held.
func (q *Queue[K, V]) broadcast() {
	if q.changed != nil {
		close(q.changed)
		q.changed = nil
	}
}

// wait returns the channel closed on the next change, for a goroutine
// about to wait for one. Called with mu held.
func (q *Queue[K, V]) wait() <-chan struct{} {
	if q.changed == nil {
		q.changed = make(chan struct{})
	}
	return q.changed
}

// setWaiting records e as key's waiting value. Called with mu held.
func (q *Queue[K, V]) setWaiting(key K, e *entry[V]) {
	if q.waiting == nil {
		q.waiting = map[K]*entry[V]{}
	}
	q.waiting[key] = e
}

// unwait forgets key's waiting value. Called with mu held.
func (q *Queue[K, V]) unwait(key K) {
	delete(q.waiting, key)
	if len(q.waiting) == 0 {
		q.waiting = nil // let the map go
	}
}

// land ends key's flight. Called with mu held.
func (q *Queue[K, V]) land(key K) {
	delete(q.inflight, key)
	if len(q.inflight) == 0 {
		q.inflight = nil // let the map go
	}
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
		if !full {
			q.mu.Unlock()
			return put
		}
		changed := q.wait()
		q.mu.Unlock()
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
	q.setWaiting(key, &entry[V]{v: v})
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
		changed := q.wait()
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
	q.unwait(key)
	if q.inflight == nil {
		q.inflight = map[K]struct{}{}
	}
	q.inflight[key] = struct{}{}
	q.broadcast() // room for a Put
	return key, v
}

// Done ends key's flight; a value put meanwhile becomes ready.
func (q *Queue[K, V]) Done(key K) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.land(key)
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
		if !busy {
			q.mu.Unlock()
			return
		}
		changed := q.wait()
		q.mu.Unlock()
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
	q.land(key)
	if e := q.waiting[key]; e != nil {
		if merge != nil {
			e.v = merge(e.v)
		}
		q.readied(key)
		return
	}
	e := &entry[V]{v: v, parked: true}
	q.setWaiting(key, e)
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
