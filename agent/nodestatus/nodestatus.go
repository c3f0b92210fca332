// Package nodestatus reports the node's status up the link: its facts
// (addresses, capacity) and its link figures (outbox depth, bytes, drops)
// through the outbox, when they change and after every connect.
package nodestatus

import (
	"context"
	"log/slog"
	"reflect"
	"time"

	"outpost.dev/agent/outbox"
	"outpost.dev/wire"
)

// Every is how often the reporter looks for changed node facts; only a
// change is reported.
const Every = 30 * time.Second

// Config is what the reporter reads and where it reports.
type Config struct {
	Outbox *outbox.Outbox
	// Read returns the node's facts; Stats its link figures.
	Read  func() (wire.NodeInfo, error)
	Stats func() *wire.LinkStats
	// Connected receives a value on every connect.
	Connected <-chan struct{}
	// Queued, if set, is told each report's outbox sequence number, and
	// whether it is the one queued after a connect.
	Queued func(seq uint64, afterConnect bool)
	Log    *slog.Logger
}

// Run queues a node status report through the outbox when the node's facts
// or its link figures change, checked every Every, and after every
// connect, so the node's conditions show the outbox as the link came back.
// The hello carries the facts on every connect anyway. It returns when ctx
// ends.
func Run(ctx context.Context, cfg Config) {
	last, _ := cfg.Read()
	var lastStats wire.LinkStats
	t := time.NewTicker(Every)
	defer t.Stop()
	for {
		force := false
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-cfg.Connected:
			force = true
		}
		ni, err := cfg.Read()
		if err != nil {
			cfg.Log.Warn("reading node facts", "err", err)
			continue
		}
		ls := cfg.Stats()
		// Times always move; only the figures count as a change.
		cmp := *ls
		cmp.At, cmp.LastSync = 0, 0
		if !force && reflect.DeepEqual(ni, last) && cmp == lastStats {
			continue
		}
		seq, err := cfg.Outbox.Append("node", wire.TypeNodeStatus, &wire.NodeStatus{Node: ni, Link: ls})
		if err != nil {
			cfg.Log.Error("node status not queued", "err", err)
			continue
		}
		if cfg.Queued != nil {
			cfg.Queued(seq, force)
		}
		last, lastStats = ni, cmp
	}
}
