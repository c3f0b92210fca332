package twins

import (
	"log/slog"
	"slices"
	"sync"
	"time"

	"outpost.dev/wire"
)

// Link is what the Compactor sends on: the agent's link.
type Link interface {
	Send(t wire.Type, seq uint64, body wire.Body) error
	Connected() bool
}

// Compactor shrinks twin reports on their way from the outbox to the link.
// The outbox keeps every report as the worker made it (Device by
// namespace/name, every value by name and time, both conditions), which
// means the same on any connection. On the link, once the current
// connection's initial sync is stored, a report about a Device the store
// holds with a link id (wire.Object.LinkID) names it by that id, sends the
// values of its listed properties by index and age, and leaves the
// conditions out when they equal the last ones sent with that id on this
// connection; the relay fills them in again. The first report of each
// Device on a connection therefore carries its conditions.
//
// Disconnected forgets the connection's state: until the next connection's
// initial sync (Synced), reports travel as stored. A report is shaped and
// handed to the link under one lock that Disconnected takes too, so one
// shaped for a connection never reaches the next (the link drops frames
// queued for a connection that ended).
type Compactor struct {
	link    Link
	source  Source
	changes <-chan struct{}
	log     *slog.Logger
	now     func() time.Time

	mu     sync.Mutex
	synced bool // the connection's initial sync is stored: ids hold
	stale  bool // the store changed since devs was read
	devs   map[string]linked
	// sent are the conditions last sent with each link id on this
	// connection; bounded by the ids in devs.
	sent map[uint32][]wire.Condition
}

type linked struct {
	id    uint32
	props []string
}

// NewCompactor returns a Compactor sending on link, reading link ids from
// source (the agent store) again after each signal on changes (the desired
// state applier's).
func NewCompactor(link Link, source Source, changes <-chan struct{}, log *slog.Logger) *Compactor {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Compactor{link: link, source: source, changes: changes, log: log, now: time.Now,
		devs: map[string]linked{}, sent: map[uint32][]wire.Condition{}}
}

// Connected reports whether the link is up.
func (c *Compactor) Connected() bool { return c.link.Connected() }

// Synced says the current connection's initial sync is stored: the link
// ids in the store are the relay's for this connection. Call it on the
// link's reading goroutine, after the sync was applied.
func (c *Compactor) Synced() {
	c.mu.Lock()
	c.synced, c.stale = true, true
	c.mu.Unlock()
}

// Disconnected forgets the connection that ended (the link's
// OnDisconnect).
func (c *Compactor) Disconnected() {
	c.mu.Lock()
	c.synced = false
	clear(c.sent)
	c.mu.Unlock()
}

// Send sends a frame; twin reports go shaped for the current connection.
func (c *Compactor) Send(t wire.Type, seq uint64, body wire.Body) error {
	if t != wire.TypeTwinReport {
		return c.link.Send(t, seq, body)
	}
	var r wire.TwinReport
	if b, err := wire.Marshal(body); err != nil || wire.Unmarshal(b, &r) != nil {
		return c.link.Send(t, seq, body) // the relay says what is wrong with it
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.changes:
		c.stale = true
	default:
	}
	if c.synced && c.stale {
		c.reload()
	}
	if l, ok := c.devs[r.Device]; ok && c.synced {
		same := len(r.Conditions) > 0 && slices.Equal(c.sent[l.id], r.Conditions)
		err := c.link.Send(t, seq, Compact(&r, l.id, l.props, !same, c.now()))
		if err == nil && !same && len(r.Conditions) > 0 {
			c.sent[l.id] = r.Conditions
		}
		return err
	}
	return c.link.Send(t, seq, &r)
}

// reload reads the Devices' link ids from the store. Called under c.mu.
func (c *Compactor) reload() {
	objs, err := c.source.Objects(wire.KindDevice)
	if err != nil {
		c.log.Warn("link ids not read; twin reports name their Devices", "err", err)
		clear(c.devs)
		return
	}
	c.stale = false
	clear(c.devs)
	ids := map[uint32]bool{}
	for _, o := range objs {
		if o.LinkID == 0 || o.Device == nil {
			continue
		}
		props := make([]string, len(o.Device.Properties))
		for i, p := range o.Device.Properties {
			props[i] = p.Name
		}
		c.devs[Ref{o.Namespace, o.Name}.String()] = linked{o.LinkID, props}
		ids[o.LinkID] = true
	}
	for id := range c.sent {
		if !ids[id] {
			delete(c.sent, id)
		}
	}
}

// Compact returns r as it travels where its Device has link id id and
// the property list props: named by id, the values of listed properties by
// index and age at now (the rest by name), and its conditions only when
// conds is set.
func Compact(r *wire.TwinReport, id uint32, props []string, conds bool, now time.Time) *wire.TwinReport {
	out := &wire.TwinReport{ID: id}
	if conds {
		out.Conditions = r.Conditions
	}
	ms := now.UnixMilli()
	for _, v := range r.Values {
		i := slices.Index(props, v.Name)
		if i < 0 || i >= wire.MaxTwinValues || v.At <= 0 {
			out.Values = append(out.Values, v)
			continue
		}
		out.Short = append(out.Short, wire.ShortValue{Index: uint8(i), Num: v.Num, Age: uint64(min(max(ms-v.At, 0), wire.MaxAgeMillis))})
	}
	return out
}
