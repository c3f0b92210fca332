package twins

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"outpost.dev/hal"
	"outpost.dev/wire"
)

// worker serves one Device. It has no goroutine of its own: its step runs
// on its bus's goroutine (see bus) when its poll or retry is due (its
// timer), when its desired values change (setDesired), when a Write comes
// or when it is stopped. Only the step touches the hal device, and only
// one step of a worker runs at a time, so the fields after "step's own"
// need no lock.
type worker struct {
	l       *Loop
	ref     Ref
	uid     string
	version string // guarded by l.mu
	spec    wire.Device
	conn    hal.Conn
	bus     *bus

	done     chan struct{} // closed by the step that closed the device
	writes   chan writeReq // bounded: one waiting request
	poked    atomic.Bool   // desired values changed
	stopping atomic.Bool

	// Guarded by bus.mu.
	queued bool // in bus.ready
	lent   bool // the watch goroutine holds the device
	gone   bool // stopped: wakes are ignored

	mu         sync.Mutex
	desired    []wire.TwinValue
	props      []*propState // nil until open
	connected  bool
	errReason  string
	errMsg     string
	desiredErr string
	reported   bool // conditions reported at least once

	// The step's own.
	dev      hal.Device
	lend     chan time.Duration // to the watch goroutine: wait up to this long for an edge
	edge     bool               // the watch goroutine saw an edge; written before giveBack
	applied  map[string]float64
	next     time.Time // next poll
	retryAt  time.Time // next open while dev is nil
	backoff  time.Duration
	served   bool // a read succeeded since the device was opened
	timer    *time.Timer
	finished bool
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

func (l *Loop) newWorker(ref Ref, o *wire.Object, b *bus) *worker {
	d := o.Device
	c := hal.Conn{Bus: d.Bus, Addr: d.Address, Pin: d.Pin, ChipSelect: int(d.ChipSelect), Options: d.Options}
	return &worker{
		l: l, ref: ref, uid: o.UID, version: o.Version, spec: *d, conn: c,
		bus:     b,
		done:    make(chan struct{}),
		writes:  make(chan writeReq, 1),
		desired: d.Desired,
		backoff: l.cfg.RetryMin,
	}
}

func (w *worker) wake() { w.bus.wake(w) }

func (w *worker) setDesired(d []wire.TwinValue) {
	w.mu.Lock()
	w.desired = d
	w.mu.Unlock()
	w.poked.Store(true)
	w.wake()
}

// stop asks the worker to close its device; done is closed once it has.
func (w *worker) stop() {
	w.stopping.Store(true)
	w.wake()
}

// step does what is due: close the device when stopping; open it when
// its retry is due; apply changed desired values, serve one Write, and
// read when the poll is due or the watch goroutine saw an edge. It then
// sets the timer for what comes next, or lends a watching device to its
// watch goroutine.
func (w *worker) step() {
	if w.finished {
		return // a wake that came as it stopped
	}
	if w.stopping.Load() {
		w.finish()
		return
	}
	now := time.Now()
	if w.dev == nil {
		if now.Before(w.retryAt) {
			w.refuseWrites()
			w.after(w.retryAt.Sub(now))
			return
		}
		if !w.open() {
			return
		}
		now = time.Now() // serve a Write that waited for the open
	}
	if err := w.serve(now); err != nil {
		w.broke(err)
		return
	}
	w.schedule()
}

// open opens the device, applies the desired values and reads it once;
// on failure it closes what it opened and backs off.
func (w *worker) open() bool {
	dev, err := hal.Open(w.l.cfg.Buses, w.spec.Driver, w.conn)
	if err != nil {
		w.l.openErrors.Add(1)
		w.fail(err, "OpenFailed")
		w.retry()
		return false
	}
	props, err := w.properties(dev.Properties())
	if err != nil {
		dev.Close()
		w.l.openErrors.Add(1)
		w.fail(err, "OpenFailed")
		w.retry()
		return false
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
	w.dev, w.served = dev, false
	w.applied = map[string]float64{}
	w.poked.Store(false) // applied now
	if err := w.applyDesired(dev, w.applied); err != nil {
		w.broke(err)
		return false
	}
	if err := w.read(dev, false); err != nil {
		w.broke(err)
		return false
	}
	w.served = true
	w.next = time.Now().Add(w.period())
	if watcher, ok := dev.(hal.Watcher); ok {
		w.lend = make(chan time.Duration, 1)
		go w.watch(watcher, w.lend)
	}
	return true
}

// period is the shortest poll interval of the device's properties: the
// device is read whole.
func (w *worker) period() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	period := time.Hour
	for _, p := range w.props {
		period = min(period, p.poll)
	}
	return period
}

// serve does one step's work on an open device. An error from it is the
// device's (a bus error, a failed read): the device is closed.
func (w *worker) serve(now time.Time) error {
	if w.poked.Swap(false) {
		if err := w.applyDesired(w.dev, w.applied); err != nil {
			return err
		}
	}
	// One Write per step, so a stream of them cannot hold the bus.
	select {
	case req := <-w.writes:
		if err := w.write(w.dev, req); err != nil {
			return err
		}
		if len(w.writes) > 0 {
			w.wake()
		}
	default:
	}
	edge := w.edge
	w.edge = false
	if edge || !now.Before(w.next) {
		if err := w.read(w.dev, false); err != nil {
			return err
		}
		if now := time.Now(); !now.Before(w.next) {
			period := w.period()
			w.next = w.next.Add(period)
			if w.next.Before(now) { // fell behind: skip, do not burst
				w.next = now.Add(period)
			}
		}
	}
	w.flush(time.Now())
	return nil
}

// flush reports the values that moved beyond their deadband but were held
// back by their report interval, once it has passed: a device read only
// on edges or polled less often than it reports still reports them.
func (w *worker) flush(now time.Time) {
	w.mu.Lock()
	var r *wire.TwinReport
	if at := w.heldLocked(); !at.IsZero() && !now.Before(at) {
		r = w.reportLocked(now)
	}
	w.mu.Unlock()
	if r != nil {
		w.send(r)
	}
}

// heldLocked returns when the values held back by their report interval
// are due; zero when none is.
func (w *worker) heldLocked() time.Time {
	var at time.Time
	for _, p := range w.props {
		if t := p.lastReport.Add(p.reportEvery); p.dirty && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	return at
}

// schedule arranges the next step of an open device: a polled device's
// timer is set for its next poll (or report of held-back values, when
// sooner); a watching device is lent to its watch
// goroutine, which waits for an edge until then (at most maxWatchWait at
// a time, which bounds how long a stop or a Write waits for it).
func (w *worker) schedule() {
	next := w.next
	w.mu.Lock()
	if at := w.heldLocked(); !at.IsZero() && at.Before(next) {
		next = at
	}
	w.mu.Unlock()
	wait := max(time.Until(next), 0)
	if w.lend == nil {
		w.after(wait)
		return
	}
	if w.timer != nil {
		w.timer.Stop()
	}
	if w.bus.lend(w) {
		w.lend <- min(wait, maxWatchWait)
	}
}

// watch waits for edges on a watching device while the device is lent to
// it, then gives the device back for a step. It ends when lend is closed.
func (w *worker) watch(watcher hal.Watcher, lend <-chan time.Duration) {
	for d := range lend {
		w.edge = d > 0 && watcher.Wait(d)
		w.bus.giveBack(w)
	}
}

// after sets the timer to wake the worker in d.
func (w *worker) after(d time.Duration) {
	if w.timer == nil {
		w.timer = time.AfterFunc(d, w.wake)
		return
	}
	w.timer.Reset(d)
}

// broke closes a device that failed, reports the error and backs off.
func (w *worker) broke(err error) {
	w.closeDev()
	if w.served {
		w.backoff = w.l.cfg.RetryMin
	}
	w.l.readErrors.Add(1)
	w.fail(err, "ReadFailed")
	w.retry()
}

// retry sets the next open after the backoff, jittered by ±20% so devices
// on one broken bus do not retry in step, and doubles the backoff.
func (w *worker) retry() {
	d := time.Duration(float64(w.backoff) * (0.8 + 0.4*rand.Float64()))
	w.retryAt = time.Now().Add(d)
	w.backoff = min(2*w.backoff, w.l.cfg.RetryMax)
	w.refuseWrites()
	w.after(d)
}

// refuseWrites answers a waiting Write while the device is not open.
func (w *worker) refuseWrites() {
	select {
	case req := <-w.writes:
		w.mu.Lock()
		msg := w.errMsg
		w.mu.Unlock()
		req.done <- fmt.Errorf("%w: %s: %s", ErrNotConnected, w.ref, msg)
	default:
	}
}

// closeDev closes the open device exactly once and ends its watch
// goroutine, which does not hold it: the step runs only while it is not
// lent.
func (w *worker) closeDev() {
	if w.dev == nil {
		return
	}
	w.dev.Close()
	w.dev = nil
	if w.lend != nil {
		close(w.lend)
		w.lend = nil
	}
}

// finish closes the device for good and answers a waiting Write.
func (w *worker) finish() {
	w.finished = true
	w.bus.retire(w)
	if w.timer != nil {
		w.timer.Stop()
	}
	w.closeDev()
	select {
	case req := <-w.writes:
		req.done <- fmt.Errorf("%w: %s", ErrUnknownDevice, w.ref)
	default:
	}
	close(w.done)
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
			err = dev.Write(v)
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
// failed read back is returned (the device is closed); the write's own
// error goes to the requester.
func (w *worker) write(dev hal.Device, req writeReq) error {
	err := dev.Write(req.v)
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
	vals, err := dev.Read()
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
