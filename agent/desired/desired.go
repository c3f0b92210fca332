// Package desired makes the relay's downstream sync frames the agent's
// desired state: each frame is written to the store, fsynced, before
// anything acts on it, and then announced to the loops that act (pods,
// devices). Because the store holds it, the desired state outlives the link
// and a reboot.
package desired

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"outpost.dev/agent/store"
	"outpost.dev/wire"
)

// Applier applies sync frames. Handle is meant to be the link's frame
// handler (or called from it).
type Applier struct {
	store *store.Store
	log   *slog.Logger

	mu       sync.Mutex
	subs     []chan struct{}
	onResync func()

	lastSync atomic.Int64 // unix nanoseconds of the last complete resync
	failures atomic.Int64
}

// New returns an Applier writing to st.
func New(st *store.Store, log *slog.Logger) *Applier {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Applier{store: st, log: log}
}

// Changes returns a new channel that receives a value after a sync changed
// the store; every caller (the pod loop, the twin loop) gets its own.
// Signals coalesce: a loop that wakes reads the whole desired state from
// the store, so a missed signal loses nothing (level-triggered).
func (a *Applier) Changes() <-chan struct{} {
	ch := make(chan struct{}, 1)
	a.mu.Lock()
	a.subs = append(a.subs, ch)
	a.mu.Unlock()
	return ch
}

func (a *Applier) notify() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ch := range a.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// OnResync sets fn to be called, on the frame handler's goroutine, each
// time the initial sync of a connection has been stored completely.
func (a *Applier) OnResync(fn func()) {
	a.mu.Lock()
	a.onResync = fn
	a.mu.Unlock()
}

// LastSync is when the last resync after a hello completed (zero: never
// since start).
func (a *Applier) LastSync() time.Time {
	if n := a.lastSync.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Failures counts sync frames that could not be decoded or stored.
func (a *Applier) Failures() int64 { return a.failures.Load() }

// Handle applies one downstream frame; frames of other types are ignored
// and reported false.
func (a *Applier) Handle(f wire.Frame) bool {
	if f.Type != wire.TypeSync {
		return false
	}
	var sy wire.Sync
	if err := f.DecodeBody(&sy); err != nil {
		a.failures.Add(1)
		a.log.Error("sync from relay refused", "err", err)
		return true
	}
	changed, err := a.store.ApplySync(&sy)
	if err != nil {
		// Nothing of the frame was stored: the next hello reports the old
		// versions, and the relay sends the difference again.
		a.failures.Add(1)
		a.log.Error("sync not stored; it is sent again on the next connection", "err", err,
			"upserts", len(sy.Upserts), "deletes", len(sy.Deletes))
		return true
	}
	if sy.Complete {
		a.lastSync.Store(time.Now().UnixNano())
	}
	for _, c := range changed {
		a.log.Debug("desired state changed", "kind", c.Kind, "uid", c.UID)
	}
	if len(changed) > 0 {
		a.notify()
	}
	if sy.Initial && sy.Complete {
		a.log.Info("resynced with relay", "changed", len(changed))
		a.mu.Lock()
		fn := a.onResync
		a.mu.Unlock()
		if fn != nil {
			fn()
		}
	}
	return true
}
