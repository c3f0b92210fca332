package relay

import (
	"slices"
	"sync"
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

// TestAckNeverWaitsOnTheConnection: a writer marking reports done does
// not wait while the connection's write is stuck (a peer that stopped
// reading); the acks meanwhile are replaced by the newest, which goes out
// once the write returns, and no goroutine stays once all are sent.
func TestAckNeverWaitsOnTheConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		stuck := make(chan struct{})
		var mu sync.Mutex
		var sent []uint64
		a := newAcks(func(s uint64) {
			if s == 1 {
				<-stuck
			}
			mu.Lock()
			sent = append(sent, s)
			mu.Unlock()
		})
		for seq := uint64(1); seq <= 5; seq++ {
			a.received(wire.TypePodStatus, seq)
			a.done(seq) // returns although the first send is stuck
			synctest.Wait()
		}
		mu.Lock()
		if len(sent) != 0 {
			t.Fatalf("sent %v while the first write is stuck", sent)
		}
		mu.Unlock()
		close(stuck)
		synctest.Wait() // the sending goroutine ended: the bubble is idle
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(sent, []uint64{1, 5}) {
			t.Fatalf("sent %v, want [1 5]: the acks behind a stuck write coalesce to the newest", sent)
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
