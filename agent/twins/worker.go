package twins

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"outpost.dev/hal"
	"outpost.dev/wire"
)

// worker serves one Device: it alone touches the hal device.
type worker struct {
	l       *Loop
	ref     Ref
	uid     string
	version string // guarded by l.mu
	spec    wire.Device
	conn    hal.Conn
	bus     *sync.Mutex

	cancel context.CancelFunc
	done   chan struct{}
	writes chan writeReq
	poke   chan struct{} // desired values changed

	mu         sync.Mutex
	desired    []wire.TwinValue
	props      []*propState // nil until open
	connected  bool
	errReason  string
	errMsg     string
	desiredErr string
	reported   bool // conditions reported at least once
}

type writeReq struct {
	v    hal.Value
	done chan error
}

type propState struct {
	p           hal.Property
	poll        time.Duration
	reportEvery time.Duration
	deadband    float64

	have bool
	last hal.Value
	at   time.Time

	reported    bool
	reportedNum float64
	lastReport  time.Time
	dirty       bool
}

func (l *Loop) newWorker(ref Ref, o *wire.Object) *worker {
	d := o.Device
	c := hal.Conn{Bus: d.Bus, Addr: d.Address, Pin: d.Pin, ChipSelect: int(d.ChipSelect), Options: d.Options}
	w := &worker{
		l: l, ref: ref, uid: o.UID, version: o.Version, spec: *d, conn: c,
		bus:     l.busLock(c),
		done:    make(chan struct{}),
		writes:  make(chan writeReq, 1),
		poke:    make(chan struct{}, 1),
		desired: d.Desired,
	}
	return w
}

func (w *worker) setDesired(d []wire.TwinValue) {
	w.mu.Lock()
	w.desired = d
	w.mu.Unlock()
	select {
	case w.poke <- struct{}{}:
	default:
	}
}

func (w *worker) run(ctx context.Context) {
	defer close(w.done)
	backoff := w.l.cfg.RetryMin
	for ctx.Err() == nil {
		dev, err := w.open()
		if err == nil {
			var served bool
			served, err = w.serve(ctx, dev)
			w.bus.Lock()
			dev.Close()
			w.bus.Unlock()
			if err == nil {
				return // stopped
			}
			if served {
				backoff = w.l.cfg.RetryMin
			}
			w.l.readErrors.Add(1)
			w.fail(err, "ReadFailed")
		} else {
			w.l.openErrors.Add(1)
			w.fail(err, "OpenFailed")
		}
		// Jitter of ±20% keeps devices on one broken bus from retrying in step.
		d := time.Duration(float64(backoff) * (0.8 + 0.4*rand.Float64()))
		if !w.sleep(ctx, d) {
			return
		}
		backoff = min(2*backoff, w.l.cfg.RetryMax)
	}
}

// sleep waits d, refusing writes meanwhile; false when stopped.
func (w *worker) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case req := <-w.writes:
			w.mu.Lock()
			msg := w.errMsg
			w.mu.Unlock()
			req.done <- fmt.Errorf("%w: %s: %s", ErrNotConnected, w.ref, msg)
		}
	}
}

func (w *worker) open() (hal.Device, error) {
	w.bus.Lock()
	dev, err := hal.Open(w.l.cfg.Buses, w.spec.Driver, w.conn)
	w.bus.Unlock()
	if err != nil {
		return nil, err
	}
	props, err := w.properties(dev.Properties())
	if err != nil {
		w.bus.Lock()
		dev.Close()
		w.bus.Unlock()
		return nil, err
	}
	w.mu.Lock()
	// Keep the last readings of a device that comes back.
	for _, p := range props {
		for _, old := range w.props {
			if old.p.Name == p.p.Name {
				p.have, p.last, p.at = old.have, old.last, old.at
				p.reported, p.reportedNum, p.lastReport = old.reported, old.reportedNum, old.lastReport
			}
		}
	}
	w.props = props
	w.mu.Unlock()
	return dev, nil
}

// properties merges the driver's properties with the Device's settings.
// With no properties listed in the Device, all of the driver's are served.
func (w *worker) properties(have []hal.Property) ([]*propState, error) {
	mk := func(p hal.Property, s *wire.DeviceProperty) *propState {
		ps := &propState{p: p, poll: DefaultPollInterval, reportEvery: DefaultReportInterval}
		if s == nil {
			return ps
		}
		if s.PollMillis > 0 {
			ps.poll = max(time.Duration(s.PollMillis)*time.Millisecond, minPollInterval)
		}
		if s.ReportMillis > 0 {
			ps.reportEvery = time.Duration(s.ReportMillis) * time.Millisecond
		}
		ps.deadband = s.Deadband
		if s.Unit != "" {
			ps.p.Unit = s.Unit
		}
		if s.Access == "ReadOnly" {
			ps.p.Access = hal.ReadOnly
		}
		return ps
	}
	if len(w.spec.Properties) == 0 {
		out := make([]*propState, len(have))
		for i, p := range have {
			out[i] = mk(p, nil)
		}
		return out, nil
	}
	out := make([]*propState, 0, len(w.spec.Properties))
	for i := range w.spec.Properties {
		s := &w.spec.Properties[i]
		j := slices.IndexFunc(have, func(p hal.Property) bool { return p.Name == s.Name })
		if j < 0 {
			names := make([]string, len(have))
			for k, p := range have {
				names[k] = p.Name
			}
			return nil, fmt.Errorf("%w %q: driver %s has %s", hal.ErrUnknownProperty, s.Name, w.spec.Driver, strings.Join(names, ", "))
		}
		out = append(out, mk(have[j], s))
	}
	return out, nil
}

// serve polls and writes until stopped (nil) or a read fails. served says
// whether at least one read succeeded.
func (w *worker) serve(ctx context.Context, dev hal.Device) (served bool, err error) {
	w.mu.Lock()
	period := time.Hour
	for _, p := range w.props {
		period = min(period, p.poll)
	}
	w.mu.Unlock()

	applied := map[string]float64{}
	if err := w.applyDesired(dev, applied); err != nil {
		return false, err
	}
	if err := w.read(dev, false); err != nil {
		return false, err
	}
	next := time.Now().Add(period)
	watcher, _ := dev.(hal.Watcher)
	var timer *time.Timer
	if watcher == nil {
		timer = time.NewTimer(period)
		defer timer.Stop()
	}
	for {
		// One select serves requests and waits for the next poll. A
		// watcher waits for its edge below, not here: unless a request is
		// pending, its select does not block (fired).
		var due <-chan time.Time
		switch {
		case watcher == nil:
			timer.Reset(max(time.Until(next), 0))
			due = timer.C
		case ctx.Err() == nil && len(w.poke) == 0 && len(w.writes) == 0:
			due = fired
		}
		select {
		case <-ctx.Done():
			return true, nil
		case <-w.poke:
			if err := w.applyDesired(dev, applied); err != nil {
				return true, err
			}
			continue
		case req := <-w.writes:
			if err := w.write(dev, req); err != nil {
				return true, err
			}
			continue
		case <-due:
		}
		if watcher != nil {
			wait := min(time.Until(next), maxWatchWait)
			edge := wait > 0 && watcher.Wait(wait)
			if !edge && time.Now().Before(next) {
				continue
			}
		}
		if err := w.read(dev, false); err != nil {
			return true, err
		}
		if now := time.Now(); !now.Before(next) {
			next = next.Add(period)
			if next.Before(now) { // fell behind: skip, do not burst
				next = now.Add(period)
			}
		}
	}
}

// fired is a channel that is always ready: a select with it among its
// cases does not block.
var fired = func() <-chan time.Time {
	c := make(chan time.Time)
	close(c)
	return c
}()

// applyDesired writes the store's desired values that changed since last
// applied, then reads back. A value the device cannot take (unknown or
// read-only property, bad value) is an Error condition, not a reconnect;
// a bus error is returned.
func (w *worker) applyDesired(dev hal.Device, applied map[string]float64) error {
	w.mu.Lock()
	desired := w.desired
	w.mu.Unlock()
	var bad []string
	wrote := false
	for _, tv := range desired {
		if n, ok := applied[tv.Name]; ok && n == tv.Num {
			continue
		}
		v, err := w.value(tv.Name, tv.Num)
		if err == nil {
			w.bus.Lock()
			err = dev.Write(v)
			w.bus.Unlock()
			w.l.writes.Add(1)
			wrote = true
			if err != nil && !errors.Is(err, hal.ErrReadOnly) && !errors.Is(err, hal.ErrUnknownProperty) {
				w.l.writeErrors.Add(1)
				return err
			}
		}
		if err != nil {
			w.l.writeErrors.Add(1)
			bad = append(bad, "desired "+tv.Name+": "+err.Error())
			continue
		}
		applied[tv.Name] = tv.Num
	}
	w.mu.Lock()
	old := w.desiredErr
	w.desiredErr = strings.Join(bad, "; ")
	changed := old != w.desiredErr
	w.mu.Unlock()
	if wrote || changed {
		return w.read(dev, true)
	}
	return nil
}

// write serves a Write request: write, read back, report at once. Only a
// failed read back is returned (it ends serve); the write's own error goes
// to the requester.
func (w *worker) write(dev hal.Device, req writeReq) error {
	w.bus.Lock()
	err := dev.Write(req.v)
	w.bus.Unlock()
	w.l.writes.Add(1)
	if err != nil {
		w.l.writeErrors.Add(1)
	}
	rerr := w.read(dev, true)
	if err == nil {
		err = rerr
	}
	req.done <- err
	return rerr
}

// value converts x for property name, refusing unknown and read-only
// properties.
func (w *worker) value(name string, x any) (hal.Value, error) {
	w.mu.Lock()
	props := w.props
	connected := w.connected
	msg := w.errMsg
	w.mu.Unlock()
	if props == nil && !connected {
		return hal.Value{}, fmt.Errorf("%w: %s: %s", ErrNotConnected, w.ref, msg)
	}
	i := slices.IndexFunc(props, func(p *propState) bool { return p.p.Name == name })
	if i < 0 {
		names := make([]string, len(props))
		for k, p := range props {
			names[k] = p.p.Name
		}
		return hal.Value{}, fmt.Errorf("%w %q (device %s has: %s)", hal.ErrUnknownProperty, name, w.ref, strings.Join(names, ", "))
	}
	p := props[i].p
	if p.Access != hal.ReadWrite {
		return hal.Value{}, fmt.Errorf("%w: %s of device %s", hal.ErrReadOnly, name, w.ref)
	}
	return convert(p, x)
}

// read reads every property, publishes what changed and reports when due
// (or at once with force).
func (w *worker) read(dev hal.Device, force bool) error {
	w.bus.Lock()
	vals, err := dev.Read()
	w.bus.Unlock()
	if err != nil {
		return err
	}
	w.l.reads.Add(1)
	now := time.Now()

	w.mu.Lock()
	var changed []string
	for _, v := range vals {
		i := slices.IndexFunc(w.props, func(p *propState) bool { return p.p.Name == v.Name })
		if i < 0 {
			continue
		}
		p := w.props[i]
		if !p.have || p.last.Num != v.Num || p.last.Bool != v.Bool {
			changed = append(changed, v.Name)
		}
		p.have, p.last, p.at = true, v, now
		if !p.reported || math.Abs(toNum(v)-p.reportedNum) > p.deadband {
			p.dirty = true
		}
	}
	errMsg := w.desiredErr
	condChanged := !w.connected || w.errMsg != errMsg || !w.reported
	w.connected, w.errMsg, w.errReason = true, errMsg, ""
	if errMsg != "" {
		w.errReason = "DesiredRejected"
	}
	due := force || condChanged
	for _, p := range w.props {
		if p.dirty && now.Sub(p.lastReport) >= p.reportEvery {
			due = true
		}
	}
	var r *wire.TwinReport
	if due {
		r = w.reportLocked(now)
	}
	w.mu.Unlock()

	w.emit(len(changed) > 0 || condChanged, changed, r)
	return nil
}

// fail records an open or read error, publishes and reports it when it is
// new.
func (w *worker) fail(err error, def string) {
	msg := err.Error()
	w.mu.Lock()
	changed := w.connected || w.errMsg != msg || !w.reported
	w.connected, w.errMsg, w.errReason = false, msg, reason(err, def)
	var r *wire.TwinReport
	if changed {
		r = w.reportLocked(time.Now())
	}
	w.mu.Unlock()
	if !changed {
		return
	}
	w.l.log.Warn("device error", "device", w.ref.String(), "driver", w.spec.Driver, "err", msg)
	w.emit(true, nil, r)
}

// emit publishes the device's state when publish is set (changed names the
// properties whose values changed) and queues r when there is one. The
// caller made r under w.mu and released it.
func (w *worker) emit(publish bool, changed []string, r *wire.TwinReport) {
	if publish {
		w.publish(changed)
	}
	if r != nil {
		w.send(r)
	}
}

// reportLocked builds a report of every value held and the conditions,
// and marks the values reported.
func (w *worker) reportLocked(now time.Time) *wire.TwinReport {
	r := &wire.TwinReport{Device: w.ref.String(), Conditions: conditions(w.connected, w.errReason, w.errMsg)}
	for _, p := range w.props {
		if !p.have {
			continue
		}
		n := toNum(p.last)
		r.Values = append(r.Values, wire.TwinValue{Name: p.p.Name, Num: n, At: p.at.UnixMilli()})
		p.reported, p.reportedNum, p.lastReport, p.dirty = true, n, now, false
	}
	w.reported = true
	return r
}

func (w *worker) send(r *wire.TwinReport) {
	if _, err := w.l.cfg.Outbox.Append(reportKey(w.ref), wire.TypeTwinReport, r); err != nil {
		w.l.reportErrors.Add(1)
		w.l.log.Error("twin report not queued", "device", w.ref.String(), "err", err)
		return
	}
	w.l.reports.Add(1)
}

func (w *worker) publish(changed []string) {
	if w.l.cfg.Publisher != nil {
		w.l.cfg.Publisher.Publish(w.state(changed))
	}
}

func (w *worker) state(changed []string) State {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := State{Ref: w.ref, Driver: w.spec.Driver, Connected: w.connected, Error: w.errMsg, Changed: changed}
	s.Values = make([]Reading, 0, len(w.props))
	for _, p := range w.props {
		if !p.have {
			continue
		}
		s.Values = append(s.Values, Reading{
			Name: p.p.Name, Type: p.p.Type, Unit: p.p.Unit, Access: p.p.Access,
			Num: p.last.Num, Bool: p.last.Bool, At: p.at,
		})
	}
	return s
}
