package relay

import (
	"slices"
	"testing"

	"outpost.dev/wire"
)

// TestAcksAreCumulativeAcrossWriters: an ack never passes a report still
// being written, whichever writer holds it.
func TestAcksAreCumulativeAcrossWriters(t *testing.T) {
	var sent []uint64
	a := newAcks(func(s uint64) { sent = append(sent, s) })
	a.received(wire.TypePodStatus, 1)
	a.received(wire.TypeNodeStatus, 2)
	a.received(wire.TypePodStatus, 3)
	a.received(wire.TypeNodeStatus, 4)
	a.doneUpTo(wire.TypeNodeStatus, 4) // node writes 2 and 4 (coalesced)
	if len(sent) != 0 {
		t.Fatalf("acked %v while pod status 1 is pending", sent)
	}
	a.done(3)
	if len(sent) != 0 {
		t.Fatalf("acked %v while pod status 1 is pending", sent)
	}
	a.done(1)
	if !slices.Equal(sent, []uint64{4}) {
		t.Fatalf("acks %v, want [4]", sent)
	}
	a.received(wire.TypePodStatus, 4) // sent again: already acked
	a.received(wire.TypePodStatus, 6)
	a.received(wire.TypePodStatus, 5) // out of order
	a.done(6)
	a.done(5)
	a.done(5)
	if !slices.Equal(sent, []uint64{4, 6}) {
		t.Fatalf("acks %v, want [4 6]", sent)
	}
	if len(a.pending) != 0 {
		t.Fatalf("pending %v", a.pending)
	}
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
