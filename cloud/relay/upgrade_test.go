package relay_test

import (
	"testing"

	"github.com/coder/websocket"

	"outpost.dev/wire"
)

// TestUpgradeFramesWithoutUpgrades: a relay that rolls out no upgrades
// acks an agent's upgrade report (nothing to write it into), answers a
// chunk request, a hostile one or one it never offered, with a non-fatal
// error, and keeps the link; a report that does not validate is fatal as
// every durable report's is.
func TestUpgradeFramesWithoutUpgrades(t *testing.T) {
	tr := newTestRelay(t, nil)
	c := tr.hello(t, "gw-1")
	send(t, c, encode(t, wire.TypeUpgradeReport, 1, &wire.UpgradeReport{Name: "u", Version: "1.0.0", Phase: wire.UpgradeHealthy}))
	if f := mustRecv(t, c, wire.TypeAck); f.Ack != 1 {
		t.Fatalf("ack %d, want 1", f.Ack)
	}
	for _, req := range []any{
		map[int]any{1: "1.0.0", 2: 0, 3: 1024},                      // valid, nothing offered
		map[int]any{1: "1.0.0", 2: -5, 3: 1024},                     // negative offset
		map[int]any{1: "1.0.0", 2: wire.MaxUpgradeSize, 3: 1024},    // past any artifact
		map[int]any{1: "1.0.0", 2: 0, 3: wire.MaxUpgradeWindow + 1}, // oversize window
		map[int]any{1: "../../bin/sh", 2: 0, 3: 1},                  // a path for a version
	} {
		send(t, c, rawFrame(t, wire.TypeUpgradeChunkRequest, 0, req))
		f := mustRecv(t, c, wire.TypeError)
		var e wire.Error
		if err := f.DecodeBody(&e); err != nil || e.Fatal {
			t.Fatalf("%v: error %+v (%v), want a non-fatal one", req, e, err)
		}
	}
	// A relay → agent frame from the agent is refused, not fatal.
	send(t, c, encode(t, wire.TypeUpgradeChunk, 0, &wire.UpgradeChunk{Version: "1.0.0", Offset: 0, Data: []byte{1}}))
	mustRecv(t, c, wire.TypeError)
	send(t, c, encode(t, wire.TypeHeartbeat, 0, nil))
	mustRecv(t, c, wire.TypeHeartbeat)

	send(t, c, rawFrame(t, wire.TypeUpgradeReport, 2, map[int]any{1: "u", 2: "1.0.0", 3: "Pending", 5: -1}))
	expectFatal(t, c, wire.CodeInvalid, websocket.StatusInvalidFramePayloadData)
}
