package twins

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"outpost.dev/hal"
	"outpost.dev/wire"
)

// Defaults for what a Device leaves unset.
const (
	DefaultPollInterval   = time.Second
	DefaultReportInterval = 10 * time.Second
	DefaultMaxDevices     = 256
	DefaultResync         = 30 * time.Second
	DefaultRetryMin       = time.Second
	DefaultRetryMax       = time.Minute

	// minPollInterval bounds the CPU one Device can ask for.
	minPollInterval = 10 * time.Millisecond
	// maxWatchWait is the longest a watching device blocks in Wait, which
	// bounds how long stopping it, or a Write to it, waits.
	maxWatchWait = 250 * time.Millisecond
	// writeTimeout bounds how long Write waits for the device's step.
	writeTimeout = 5 * time.Second
)

// Errors returned by Write; hal errors (ErrReadOnly, ErrUnknownProperty,
// ErrNACK, …) are returned as they are.
var (
	ErrUnknownDevice = errors.New("no such device on this node")
	ErrBadValue      = errors.New("bad value")
	ErrNotConnected  = errors.New("device not connected")
)

// Source is where desired devices come from: the agent store.
type Source interface {
	Objects(k wire.Kind) ([]wire.Object, error)
}

// Outbox takes upstream reports: the agent's durable outbox.
type Outbox interface {
	Append(key string, t wire.Type, body wire.Body) (uint64, error)
}

// Publisher receives device states at full rate (the MQTT side). Publish
// is called from the devices' steps, which hold their bus, and Remove from
// the loop; neither may block for long.
type Publisher interface {
	// Publish is called when a reading changed a value or a condition
	// changed; the State is the publisher's to keep.
	Publish(s State)
	// Remove is called when a Device is no longer assigned to the node.
	Remove(ref Ref)
}

// Ref names a Device.
type Ref struct{ Namespace, Name string }

func (r Ref) String() string { return r.Namespace + "/" + r.Name }

// Reading is the latest value of one property.
type Reading struct {
	Name   string
	Type   hal.Type
	Unit   string
	Access hal.Access
	Num    float64 // Float and Int
	Bool   bool    // Bool
	At     time.Time
}

// Value returns the reading as float64 or bool.
func (r Reading) Value() any {
	if r.Type == hal.Bool {
		return r.Bool
	}
	return r.Num
}

// State is what a device looks like now.
type State struct {
	Ref
	Driver    string
	Connected bool
	// Error is the message of the current error (open, read or a rejected
	// desired value); empty when there is none.
	Error string
	// Values holds the latest reading of each property read so far, in
	// the device's property order.
	Values []Reading
	// Changed names the properties whose value changed with this state.
	Changed []string
}

// Config configures a Loop.
type Config struct {
	Source Source
	// Changes signals that the desired devices may have changed
	// (desired.Applier.Changes); nil means periodic resync only.
	Changes <-chan struct{}
	// Buses are the board's buses (boards.Board.Open).
	Buses     hal.Buses
	Outbox    Outbox
	Publisher Publisher // nil: none
	Log       *slog.Logger
	// MaxDevices bounds the devices served at once; the rest are reported
	// with an Error condition. Zero means DefaultMaxDevices.
	MaxDevices int
	// Resync is how often the desired devices are read again without a
	// change signal; RetryMin and RetryMax bound the backoff after an
	// error. Zero means the defaults.
	Resync, RetryMin, RetryMax time.Duration
}

// Stats are the loop's counters.
type Stats struct {
	Devices, Connected, OverLimit          int
	Reads, ReadErrors, OpenErrors, Reports int64
	ReportErrors, Writes, WriteErrors      int64
}

// Loop reconciles desired Devices with open hal devices.
type Loop struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	workers   map[Ref]*worker
	overLimit map[Ref]string  // uid of devices refused for the limit
	buses     map[string]*bus // by busKey, while a worker uses it

	reads, readErrors, openErrors, reports atomic.Int64
	reportErrors, writes, writeErrors      atomic.Int64
}

// New returns a Loop; Run starts it.
func New(cfg Config) *Loop {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxDevices <= 0 {
		cfg.MaxDevices = DefaultMaxDevices
	}
	if cfg.Resync <= 0 {
		cfg.Resync = DefaultResync
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = DefaultRetryMin
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(DefaultRetryMax, cfg.RetryMin)
	}
	return &Loop{
		cfg: cfg, log: cfg.Log,
		workers:   map[Ref]*worker{},
		overLimit: map[Ref]string{},
		buses:     map[string]*bus{},
	}
}

// Run reconciles until ctx is done, then closes every device.
func (l *Loop) Run(ctx context.Context) error {
	l.Reconcile(ctx)
	t := time.NewTicker(l.cfg.Resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			l.stopAll()
			return nil
		case <-l.cfg.Changes:
		case <-t.C:
		}
		l.Reconcile(ctx)
	}
}

// Reconcile compares the desired Devices with the open ones once.
func (l *Loop) Reconcile(ctx context.Context) {
	objs, err := l.cfg.Source.Objects(wire.KindDevice)
	if err != nil {
		l.log.Error("reading desired devices from the store", "err", err)
		return
	}
	slices.SortFunc(objs, func(a, b wire.Object) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	want := make(map[Ref]*wire.Object, len(objs))
	for i := range objs {
		if objs[i].Device != nil {
			want[Ref{objs[i].Namespace, objs[i].Name}] = &objs[i]
		}
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	// Stop what is gone or rewired first, so its bus and pins are free.
	var stopped []*worker
	for ref, w := range l.workers {
		o, ok := want[ref]
		if ok && o.UID == w.uid && (o.Version == w.version || sameWiring(&w.spec, o.Device)) {
			continue
		}
		w.stop()
		stopped = append(stopped, w)
		delete(l.workers, ref)
		if !ok && l.cfg.Publisher != nil {
			l.cfg.Publisher.Remove(ref)
		}
	}
	for _, w := range stopped {
		<-w.done
		l.release(w.bus)
	}
	for ref, uid := range l.overLimit {
		if o, ok := want[ref]; !ok || o.UID != uid {
			delete(l.overLimit, ref)
		}
	}
	for i := range objs {
		o := &objs[i]
		if o.Device == nil {
			continue
		}
		ref := Ref{o.Namespace, o.Name}
		if w, ok := l.workers[ref]; ok {
			if w.version != o.Version {
				w.version = o.Version
				w.setDesired(o.Device.Desired)
			}
			continue
		}
		if len(l.workers) >= l.cfg.MaxDevices {
			if _, told := l.overLimit[ref]; !told {
				l.overLimit[ref] = o.UID
				l.refuse(ref, o.UID)
			}
			continue
		}
		delete(l.overLimit, ref)
		w := l.newWorker(ref, o, l.acquire(o.Device))
		l.workers[ref] = w
		w.wake()
	}
}

// acquire returns the bus d is wired to, counting its worker; l.mu held.
func (l *Loop) acquire(d *wire.Device) *bus {
	key := busKey(hal.Conn{Bus: d.Bus, Pin: d.Pin})
	b := l.buses[key]
	if b == nil {
		b = &bus{key: key}
		l.buses[key] = b
	}
	b.refs++
	return b
}

// release forgets b once its last worker is done; l.mu held.
func (l *Loop) release(b *bus) {
	if b.refs--; b.refs == 0 {
		delete(l.buses, b.key)
	}
}

func (l *Loop) refuse(ref Ref, uid string) {
	msg := fmt.Sprintf("not served: this node already serves %d devices (the agent's limit); move the Device to another node", l.cfg.MaxDevices)
	l.log.Error("device refused", "device", ref.String(), "limit", l.cfg.MaxDevices)
	r := &wire.TwinReport{Device: ref.String(), Conditions: conditions(false, "TooManyDevices", msg)}
	if _, err := l.cfg.Outbox.Append(reportKey(ref), wire.TypeTwinReport, r); err != nil {
		l.reportErrors.Add(1)
		l.log.Error("twin report not queued", "device", ref.String(), "err", err)
	}
}

func (l *Loop) stopAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range l.workers {
		w.stop()
	}
	for ref, w := range l.workers {
		<-w.done
		l.release(w.bus)
		delete(l.workers, ref)
	}
}

// Write sets property name of a device to x (float64, int or bool, as JSON
// decodes them), reads it back and reports the result. It is how MQTT
// writes reach a device; desired values from the store are applied by the
// loop itself.
func (l *Loop) Write(ctx context.Context, ref Ref, name string, x any) error {
	l.mu.Lock()
	w, ok := l.workers[ref]
	l.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownDevice, ref)
	}
	v, err := w.value(name, x)
	if err != nil {
		return err
	}
	req := writeReq{v: v, done: make(chan error, 1)}
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	select {
	case w.writes <- req:
		w.wake()
	case <-ctx.Done():
		return fmt.Errorf("write %s on %s: device busy: %w", name, ref, ctx.Err())
	case <-w.done:
		return fmt.Errorf("%w: %s", ErrUnknownDevice, ref)
	}
	select {
	case err := <-req.done:
		return err
	case <-w.done:
		select {
		case err := <-req.done:
			return err
		default:
			return fmt.Errorf("%w: %s", ErrUnknownDevice, ref)
		}
	case <-ctx.Done():
		return fmt.Errorf("write %s on %s: %w", name, ref, ctx.Err())
	}
}

// Each calls fn with the state of every device served, for a publisher
// that (re)connected.
func (l *Loop) Each(fn func(State)) {
	l.mu.Lock()
	ws := make([]*worker, 0, len(l.workers))
	for _, w := range l.workers {
		ws = append(ws, w)
	}
	l.mu.Unlock()
	for _, w := range ws {
		fn(w.state(nil))
	}
}

// Stats returns the counters.
func (l *Loop) Stats() Stats {
	l.mu.Lock()
	s := Stats{Devices: len(l.workers), OverLimit: len(l.overLimit)}
	for _, w := range l.workers {
		w.mu.Lock()
		if w.connected {
			s.Connected++
		}
		w.mu.Unlock()
	}
	l.mu.Unlock()
	s.Reads, s.ReadErrors, s.OpenErrors = l.reads.Load(), l.readErrors.Load(), l.openErrors.Load()
	s.Reports, s.ReportErrors = l.reports.Load(), l.reportErrors.Load()
	s.Writes, s.WriteErrors = l.writes.Load(), l.writeErrors.Load()
	return s
}

// sameWiring says whether two Devices differ at most in desired values, so
// the open device can stay open.
func sameWiring(a, b *wire.Device) bool {
	x, y := *a, *b
	x.Desired, y.Desired = nil, nil
	return reflect.DeepEqual(x, y)
}

func reportKey(ref Ref) string { return "device/" + ref.Namespace + "/" + ref.Name }

// conditions returns the Connected and Error conditions.
func conditions(connected bool, reason, msg string) []wire.Condition {
	if len(msg) > 1000 {
		msg = strings.ToValidUTF8(msg[:1000], "") + "…"
	}
	c := []wire.Condition{{Type: "Connected", Status: "True"}, {Type: "Error", Status: "False"}}
	if !connected {
		c[0] = wire.Condition{Type: "Connected", Status: "False", Reason: reason, Message: msg}
	}
	if msg != "" {
		c[1] = wire.Condition{Type: "Error", Status: "True", Reason: reason, Message: msg}
	}
	return c
}

// reason classifies a hal error for the condition's Reason.
func reason(err error, def string) string {
	for _, k := range []struct {
		err    error
		reason string
	}{
		{hal.ErrUnknownDriver, "UnknownDriver"}, {hal.ErrNoBus, "NoSuchBus"}, {hal.ErrNoPin, "NoSuchPin"},
		{hal.ErrNACK, "NoAnswer"}, {hal.ErrChipID, "WrongChip"}, {hal.ErrCRC, "CRCMismatch"},
		{hal.ErrBadConn, "BadConnection"}, {hal.ErrUnknownOption, "UnknownOption"}, {hal.ErrUnknownProperty, "UnknownProperty"},
		{hal.ErrReadOnly, "ReadOnlyProperty"}, {hal.ErrUnsupported, "Unsupported"},
	} {
		if errors.Is(err, k.err) {
			return k.reason
		}
	}
	return def
}

func toNum(v hal.Value) float64 {
	if v.Type == hal.Bool {
		if v.Bool {
			return 1
		}
		return 0
	}
	return v.Num
}

// convert turns a float64, int or bool into a value of property p.
func convert(p hal.Property, x any) (hal.Value, error) {
	switch p.Type {
	case hal.Bool:
		switch x := x.(type) {
		case bool:
			return p.Bool(x), nil
		case float64:
			if x == 0 || x == 1 {
				return p.Bool(x == 1), nil
			}
		case int:
			if x == 0 || x == 1 {
				return p.Bool(x == 1), nil
			}
		}
		return hal.Value{}, fmt.Errorf("%w: %s takes true or false, not %v", ErrBadValue, p.Name, x)
	default:
		var f float64
		switch x := x.(type) {
		case float64:
			f = x
		case int:
			f = float64(x)
		default:
			return hal.Value{}, fmt.Errorf("%w: %s takes a number, not %v", ErrBadValue, p.Name, x)
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return hal.Value{}, fmt.Errorf("%w: %s takes a finite number", ErrBadValue, p.Name)
		}
		if p.Type == hal.Int {
			if f != math.Trunc(f) {
				return hal.Value{}, fmt.Errorf("%w: %s takes a whole number, not %v", ErrBadValue, p.Name, f)
			}
			return p.Int(int64(f)), nil
		}
		return p.Float(f), nil
	}
}
