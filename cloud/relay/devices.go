package relay

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"outpost.dev/cloud/devices"
	"outpost.dev/cloud/pods"
	"outpost.dev/wire"
)

// deviceSyncWait bounds how long a twin report waits for the relay's
// Device watch to list before it is judged.
const deviceSyncWait = 10 * time.Second

// twins handles the twin reports of one connection: each is checked
// against the Devices bound to the connection's node (from the relay's
// Device watch, which also feeds the downstream sync) and handed to the relay's status
// writer, and acknowledged through the connection's acks once written.
type twins struct {
	c    *conn
	devs *devices.NodeDevices // nil: the relay has no Device API

	mu      sync.Mutex
	pending map[string]uint64 // device → seq of its newest report not yet written
	logged  time.Time         // last drop logged, to bound log lines
}

// startDevices subscribes the connection to its node's Devices in the
// relay's Device watch, keeping the link ids the agent holds (held, from
// its hello). The returned Extra goes into the pod sync (nil without a
// Device API); stop ends the subscription.
func (c *conn) startDevices(held []wire.ObjectVersion) (t *twins, extra pods.Extra, stop func()) {
	t = &twins{c: c, pending: map[string]uint64{}}
	if c.s.deviceHub == nil {
		return t, nil, func() {}
	}
	t.devs = c.s.deviceHub.Watch(c.node, c.log)
	t.devs.Adopt(held)
	return t, t.devs, t.devs.Stop
}

// dropReason is the reason label of a dropped twin report's counter.
type dropReason string

const (
	dropNoDeviceAPI   dropReason = "no-device-api"
	dropUnknownLinkID dropReason = "unknown-link-id"
	dropBadName       dropReason = "bad-name"
	dropNoSuchDevice  dropReason = "no-such-device"
)

// report handles one twin report numbered seq, already received by
// c.acks, on the poller's loop as far as it can without waiting: it
// returns nil once the report is dropped or queued, or the rest, which
// may wait, to run off the loop with reading paused (while the relay's
// Device watch has not listed yet, or its status queue is full:
// back-pressure on this agent). A report by link id is first expanded to
// the report by name it stands for, from the ids of this connection's
// sync.
func (t *twins) report(seq uint64, r *wire.TwinReport) (rest func()) {
	if t.devs == nil {
		t.drop(seq, dropNoDeviceAPI, r.Device, "this relay has no Device API (no dynamic client configured)")
		return nil
	}
	id := r.ID
	uid, err := t.devs.Expand(r, time.Now())
	if err != nil {
		t.drop(seq, dropUnknownLinkID, "link id "+strconv.FormatUint(uint64(id), 10), err.Error())
		return nil
	}
	key := r.Device
	ns, name, ok := strings.Cut(key, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		t.drop(seq, dropBadName, key, "device is not namespace/name")
		return nil
	}
	if !t.devs.Synced() {
		return func() {
			ctx, cancel := context.WithTimeout(t.c.s.ctx, deviceSyncWait)
			t.devs.WaitSynced(ctx)
			cancel()
			if rest := t.submit(seq, key, uid, r); rest != nil {
				rest()
			}
		}
	}
	return t.submit(seq, key, uid, r)
}

// submit hands the report of Device key (of UID uid when the report named
// it by link id) to the relay's status writer if its queue has room; it
// returns nil then, or when the Device is not this node's (dropped), or
// else the rest, which waits for room.
func (t *twins) submit(seq uint64, key, uid string, r *wire.TwinReport) (rest func()) {
	lookup := func() (*devices.Device, bool) {
		d, ok := t.devs.Get(key)
		if ok && uid != "" && string(d.UID) != uid {
			return nil, false // replaced since the link id was given
		}
		return d, ok
	}
	if _, ok := lookup(); !ok {
		t.drop(seq, dropNoSuchDevice, key, "no such Device bound to this node")
		return nil
	}
	// A newer report of a Device supersedes the older ones (the agent's
	// outbox coalesces them too): the older seq is done, and the ack may
	// pass it while the newer one is written.
	t.mu.Lock()
	prev, had := t.pending[key]
	t.pending[key] = seq
	t.mu.Unlock()
	if had {
		t.c.acks.done(prev)
	}
	w := devices.Write{
		Node: t.c.node, Key: key, Report: r, Owner: t,
		Lookup: lookup,
		Done: func() {
			t.mu.Lock()
			if t.pending[key] <= seq {
				delete(t.pending, key)
			}
			t.mu.Unlock()
			t.c.acks.done(seq)
		},
	}
	if t.c.s.devices.TrySubmit(w) {
		return nil
	}
	// False only when the relay is closing; the agent sends it again.
	return func() { t.c.s.devices.Submit(t.c.s.ctx, w) }
}

// drop acks a report that can never be written, logging why (at most a
// line a second per connection).
func (t *twins) drop(seq uint64, reason dropReason, key, why string) {
	t.c.s.metrics.twinsDropped.WithLabelValues(string(reason)).Inc()
	t.mu.Lock()
	now := time.Now()
	logIt := now.Sub(t.logged) >= time.Second
	if logIt {
		t.logged = now
	}
	t.mu.Unlock()
	if logIt {
		t.c.log.Warn("twin report dropped", "device", key, "reason", why, "seq", seq)
	}
	t.c.acks.done(seq)
}
