package relay

import (
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"outpost.dev/wire"
)

// TestAcksAreCumulativeAcrossWriters: an ack never passes a report still
// being written, whichever writer holds it.
func TestAcksAreCumulativeAcrossWriters(t *testing.T) {
	synctest.Test(t, testAcksCumulative)
}

func testAcksCumulative(t *testing.T) {
	var mu sync.Mutex
	var sentList []uint64
	a := newAcks(func(s uint64) { mu.Lock(); sentList = append(sentList, s); mu.Unlock() })
	sent := func() []uint64 { synctest.Wait(); mu.Lock(); defer mu.Unlock(); return slices.Clone(sentList) }
	a.received(wire.TypePodStatus, 1)
	a.received(wire.TypeNodeStatus, 2)
	a.received(wire.TypePodStatus, 3)
	a.received(wire.TypeNodeStatus, 4)
	a.doneUpTo(wire.TypeNodeStatus, 4) // node writes 2 and 4 (coalesced)
	if s := sent(); len(s) != 0 {
		t.Fatalf("acked %v while pod status 1 is pending", s)
	}
	a.done(3)
	if s := sent(); len(s) != 0 {
		t.Fatalf("acked %v while pod status 1 is pending", s)
	}
	a.done(1)
	if s := sent(); !slices.Equal(s, []uint64{4}) {
		t.Fatalf("acks %v, want [4]", s)
	}
	a.received(wire.TypePodStatus, 4) // sent again: already acked
	a.received(wire.TypePodStatus, 6)
	a.received(wire.TypePodStatus, 5) // out of order
	a.done(6)
	a.done(5)
	a.done(5)
	if s := sent(); !slices.Equal(s, []uint64{4, 6}) {
		t.Fatalf("acks %v, want [4 6]", s)
	}
	if len(a.pending) != 0 {
		t.Fatalf("pending %v", a.pending)
	}
}

// TestAckNeverWaitsOnTheConnection: the writer whose report moved the
// ack sends it itself, with no goroutine of its own; while its send is
// slow, other writers marking reports done do not wait, and the acks
// meanwhile are replaced by the newest, which the sending writer sends
// after its own. Nothing of the acks runs once all are sent.
func TestAckNeverWaitsOnTheConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow := make(chan struct{})
		var mu sync.Mutex
		var sent []uint64
		a := newAcks(func(s uint64) {
			if s == 1 {
				<-slow
			}
			mu.Lock()
			sent = append(sent, s)
			mu.Unlock()
		})
		a.received(wire.TypePodStatus, 1)
		first := make(chan struct{})
		go func() { // the writer of report 1, whose send is slow
			defer close(first)
			a.done(1)
		}()
		synctest.Wait()
		for seq := uint64(2); seq <= 5; seq++ {
			a.received(wire.TypePodStatus, seq)
			a.done(seq) // returns although the first send is slow
		}
		mu.Lock()
		if len(sent) != 0 {
			t.Fatalf("sent %v while the first write is slow", sent)
		}
		mu.Unlock()
		close(slow)
		<-first // the first writer sent the newest too, and returned
		synctest.Wait()
		got := func() []uint64 { mu.Lock(); defer mu.Unlock(); return slices.Clone(sent) }
		if s := got(); !slices.Equal(s, []uint64{1, 5}) {
			t.Fatalf("sent %v, want [1 5]: the acks behind a slow write coalesce to the newest", s)
		}
		a.received(wire.TypeNodeStatus, 6)
		a.doneUpTo(wire.TypeNodeStatus, 6)
		if sent := got(); !slices.Equal(sent, []uint64{1, 5, 6}) {
			t.Fatalf("sent %v, want [1 5 6]: the writer's own call sends the ack", sent)
		}
	})
}

// TestStreamWindowEnforced: data beyond the credit granted breaks the
// stream instead of being buffered.
func TestStreamWindowEnforced(t *testing.T) {
	ss := streamSet{max: 2}
	st, err := ss.open()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ss.open(); err != nil {
		t.Fatal(err)
	}
	if _, err := ss.open(); err != errTooManyStreams {
		t.Fatalf("third stream: %v", err)
	}
	chunk := make([]byte, wire.MaxStreamChunk)
	for range wire.StreamWindow / wire.MaxStreamChunk {
		ss.deliver(wire.StreamData{ID: st.id, Data: chunk})
	}
	select {
	case <-st.broken:
		t.Fatal("broken within the window")
	default:
	}
	ss.deliver(wire.StreamData{ID: st.id, Data: []byte("x")})
	select {
	case <-st.broken:
	default:
		t.Fatal("a byte beyond the window was taken")
	}
	if len(st.data) != wire.StreamWindow/wire.MaxStreamChunk {
		t.Fatalf("%d frames queued", len(st.data))
	}
	ss.deliver(wire.StreamData{ID: 999, Data: chunk}) // unknown stream: dropped
}

// BenchmarkAckDone is one report received and done, moving the ack, and
// the ack sent, one report at a time (as a connection's reports mostly
// come): what sending an ack costs, with a send that does not wait, as
// link writes do not.
func BenchmarkAckDone(b *testing.B) {
	var n atomic.Uint64
	a := newAcks(func(s uint64) { n.Store(s) })
	b.ReportAllocs()
	seq := uint64(0)
	for b.Loop() {
		seq++
		a.received(wire.TypePodStatus, seq)
		a.done(seq)
		for n.Load() != seq {
			runtime.Gosched() // until the ack went out
		}
	}
}
