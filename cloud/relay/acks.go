package relay

import (
	"slices"
	"sync"

	"outpost.dev/wire"
)

// acks turns "report N is durable" from each writer of a connection (node
// status, pod status, and any later durable type) into the cumulative
// acks the agent expects: Frame.Ack = N means every report numbered ≤ N
// may leave the agent's outbox. All durable types share the agent's one
// sequence, so an ack is sent only up to just below the oldest report
// still being written, whichever writer holds it.
//
// A handler of a durable frame calls received before handing the report
// to its writer, and the writer calls done (or doneUpTo, for writers that
// coalesce) once it is durable or dropped for good. Outstanding reports
// are bounded by the writers' own queues (each coalesces per object).
type acks struct {
	send func(seq uint64)

	mu      sync.Mutex
	pending []pendingSeq // received, not yet done; by seq
	maxSeen uint64
	acked   uint64
}

type pendingSeq struct {
	seq uint64
	t   wire.Type
}

func newAcks(send func(uint64)) *acks { return &acks{send: send} }

// received records a durable report of type t numbered seq.
func (a *acks) received(t wire.Type, seq uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if seq <= a.acked {
		return // sent again, and already acked
	}
	i, found := slices.BinarySearchFunc(a.pending, seq, func(p pendingSeq, s uint64) int { return cmpU64(p.seq, s) })
	if !found {
		a.pending = slices.Insert(a.pending, i, pendingSeq{seq, t})
	}
	a.maxSeen = max(a.maxSeen, seq)
}

// done marks report seq durable.
func (a *acks) done(seq uint64) {
	a.mu.Lock()
	a.pending = slices.DeleteFunc(a.pending, func(p pendingSeq) bool { return p.seq == seq })
	n := a.advance()
	a.mu.Unlock()
	if n > 0 {
		a.send(n)
	}
}

// doneUpTo marks every report of type t numbered ≤ seq durable: for
// writers that coalesce all reports of their type (last wins).
func (a *acks) doneUpTo(t wire.Type, seq uint64) {
	a.mu.Lock()
	a.pending = slices.DeleteFunc(a.pending, func(p pendingSeq) bool { return p.t == t && p.seq <= seq })
	n := a.advance()
	a.mu.Unlock()
	if n > 0 {
		a.send(n)
	}
}

// advance returns the new cumulative ack, or 0 if it did not move.
func (a *acks) advance() uint64 {
	n := a.maxSeen
	if len(a.pending) > 0 {
		n = a.pending[0].seq - 1
	}
	if n <= a.acked {
		return 0
	}
	a.acked = n
	return n
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
