package nodestatus_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"outpost.dev/agent/nodestatus"
	"outpost.dev/agent/outbox"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

// After a connect the node status goes out with the link figures even if
// nothing changed; the figures are what the relay shows in OutboxHealthy.
func TestNodeStatusOnConnectCarriesLinkStats(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ob, err := outbox.Open(db, outbox.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	info := wire.NodeInfo{Arch: "arm64", OS: "linux", Board: "sim",
		Capacity: wire.Resources{CPUMillis: 1000, MemoryBytes: 1 << 30, Pods: 10}, Allocatable: wire.Resources{CPUMillis: 900, MemoryBytes: 1 << 29, Pods: 10}}
	stats := func() *wire.LinkStats {
		s := ob.Stats()
		return &wire.LinkStats{At: time.Now().Unix(), OutboxReports: uint64(s.Entries), OutboxBytes: uint64(s.Bytes), OutboxMaxBytes: 8 << 20, LastSync: 1234}
	}
	connected := make(chan struct{}, 1)
	type queuedReport struct {
		seq          uint64
		afterConnect bool
	}
	queued := make(chan queuedReport, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		nodestatus.Run(ctx, nodestatus.Config{Outbox: ob, Read: func() (wire.NodeInfo, error) { return info, nil }, Stats: stats,
			Connected: connected, Log: slog.New(slog.DiscardHandler),
			Queued: func(seq uint64, afterConnect bool) { queued <- queuedReport{seq, afterConnect} }})
	}()
	defer func() { cancel(); <-done }()

	connected <- struct{}{}
	wait.For(t, 5*time.Second, "one node status queued after a connect", func() bool {
		es, err := ob.Pending(0, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) > 1 {
			t.Fatalf("%d entries after a connect, want 1", len(es))
		}
		if len(es) == 1 {
			if es[0].Type != wire.TypeNodeStatus || es[0].Key != "node" {
				t.Fatalf("entry %+v", es[0])
			}
			f := wire.Frame{Type: es[0].Type, Seq: es[0].Seq, Body: es[0].Body}
			var ns wire.NodeStatus
			if err := f.DecodeBody(&ns); err != nil {
				t.Fatal(err)
			}
			if ns.Link == nil || ns.Link.LastSync != 1234 || ns.Link.OutboxMaxBytes != 8<<20 || ns.Node.Board != "sim" {
				t.Fatalf("node status %+v link %+v", ns, ns.Link)
			}
		}
		return len(es) == 1
	})
	// The report is announced with its sequence number, as the one after a connect.
	es, err := ob.Pending(0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if q := <-queued; q.seq != es[0].Seq || !q.afterConnect {
		t.Fatalf("Queued got %+v, want seq %d after a connect", q, es[0].Seq)
	}
}
