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
//
// Writers mark reports done from shared worker goroutines (the relay's
// API write pools), which must never wait on one connection. Link writes
// never wait (the poller queues them, and closes a peer that lets too
// much wait), so the writer whose report moved the ack sends it itself:
// no goroutine is started per ack. One writer sends at a time, in order;
// a writer that moves the ack while another sends leaves it to that one
// and returns, and acks are cumulative, so one not yet sent is replaced
// by a newer one (one ack frame for many reports).
type acks struct {
	send func(seq uint64)

	mu      sync.Mutex
	pending []pendingSeq // received, not yet done; by seq
	maxSeen uint64
	acked   uint64
	unsent  uint64 // the newest ack not yet handed to send; 0 if none
	sending bool   // a writer is sending (sendLoop)
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
	a.flushLocked()
}

// doneUpTo marks every report of type t numbered ≤ seq durable: for
// writers that coalesce all reports of their type (last wins).
func (a *acks) doneUpTo(t wire.Type, seq uint64) {
	a.mu.Lock()
	a.pending = slices.DeleteFunc(a.pending, func(p pendingSeq) bool { return p.t == t && p.seq <= seq })
	a.flushLocked()
}

// flushLocked queues the new cumulative ack, if it moved, and sends it
// unless another writer is sending, which sends it after its own; it
// unlocks a.mu.
func (a *acks) flushLocked() {
	n := a.advance()
	start := false
	if n > 0 {
		a.unsent = n
		start = !a.sending
		a.sending = a.sending || start
	}
	a.mu.Unlock()
	if start {
		a.sendLoop()
	}
}

// sendLoop sends the newest unsent ack until none is left.
func (a *acks) sendLoop() {
	for {
		a.mu.Lock()
		n := a.unsent
		a.unsent = 0
		if n == 0 {
			a.sending = false
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
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
