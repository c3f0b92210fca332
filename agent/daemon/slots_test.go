package daemon

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"testing"
	"time"

	"outpost.dev/agent/slots"
	"outpost.dev/test/wait"
)

// TestHealthGate: the trial ends on the ack of the node status queued
// after a connect, not on earlier acks or on reports not after a connect.
func TestHealthGate(t *testing.T) {
	sl, err := slots.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer sl.Close()
	bin := []byte("agent v2")
	sum := sha256.Sum256(bin)
	slot, err := sl.Install(bytes.NewReader(bin), "v2", "sha256:"+hex.EncodeToString(sum[:]))
	if err != nil {
		t.Fatal(err)
	}
	if err := sl.Switch(slot, time.Hour); err != nil {
		t.Fatal(err)
	}
	onTrial := func() bool {
		st, err := sl.State()
		if err != nil {
			t.Fatal(err)
		}
		return st.Trial
	}
	g := &healthGate{sl: sl, running: slot, log: slog.New(slog.DiscardHandler)}
	g.acked(7) // before any connect
	g.queued(8, false)
	g.acked(9) // a periodic report's ack, not the after-connect one
	g.queued(10, true)
	g.acked(9)
	g.mu.Lock()
	started := g.busy || g.done
	g.mu.Unlock()
	if started || !onTrial() {
		t.Fatal("trial ended before the after-connect node status was acked")
	}
	g.acked(10)
	wait.For(t, 10*time.Second, "the trial to end", func() bool { return !onTrial() })

	// An agent the launcher did not start has no slots: nothing happens.
	(&healthGate{log: slog.New(slog.DiscardHandler)}).acked(10)
}
