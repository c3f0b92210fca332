package twins_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"outpost.dev/agent/twins"
	"outpost.dev/hal"
	_ "outpost.dev/hal/all"
	"outpost.dev/hal/sim"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

// source is an in-memory desired state with a change signal, standing in
// for the store and the applier.
type source struct {
	mu      sync.Mutex
	objs    map[string]wire.Object
	changes chan struct{}
}

func newSource() *source {
	return &source{objs: map[string]wire.Object{}, changes: make(chan struct{}, 1)}
}

func (s *source) Objects(k wire.Kind) ([]wire.Object, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []wire.Object
	for _, o := range s.objs {
		if o.Kind == k {
			out = append(out, o)
		}
	}
	return out, nil
}

func (s *source) put(name, version string, d *wire.Device) {
	s.mu.Lock()
	s.objs[name] = wire.Object{Kind: wire.KindDevice, UID: "uid-" + name, Namespace: "default", Name: name, Version: version, Device: d}
	s.mu.Unlock()
	s.poke()
}

func (s *source) del(name string) {
	s.mu.Lock()
	delete(s.objs, name)
	s.mu.Unlock()
	s.poke()
}

func (s *source) poke() {
	select {
	case s.changes <- struct{}{}:
	default:
	}
}

// outbox records appended twin reports.
type outbox struct {
	mu      sync.Mutex
	reports []wire.TwinReport
}

func (o *outbox) Append(key string, t wire.Type, body wire.Body) (uint64, error) {
	if t != wire.TypeTwinReport {
		return 0, errors.New("not a twin report")
	}
	r := body.(*wire.TwinReport)
	if err := r.Validate(); err != nil {
		return 0, err
	}
	if key != "device/"+r.Device {
		return 0, errors.New("key " + key + " does not match device " + r.Device)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.reports = append(o.reports, *r)
	return uint64(len(o.reports)), nil
}

// of returns the reports about device name.
func (o *outbox) of(name string) []wire.TwinReport {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []wire.TwinReport
	for _, r := range o.reports {
		if r.Device == "default/"+name {
			out = append(out, r)
		}
	}
	return out
}

func (o *outbox) last(name string) (wire.TwinReport, bool) {
	rs := o.of(name)
	if len(rs) == 0 {
		return wire.TwinReport{}, false
	}
	return rs[len(rs)-1], true
}

// publisher records published states.
type publisher struct {
	mu     sync.Mutex
	states map[string][]twins.State
}

func (p *publisher) Publish(s twins.State) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.states == nil {
		p.states = map[string][]twins.State{}
	}
	p.states[s.Name] = append(p.states[s.Name], s)
}

func (p *publisher) Remove(ref twins.Ref) {}

func (p *publisher) count(name string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.states[name])
}

// clock is a settable clock for the simulator's world.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }
func newClock() *clock               { c := &clock{}; c.ns.Store(time.Now().UnixNano()); return c }
func value(r wire.TwinReport, name string) (float64, bool) {
	for _, v := range r.Values {
		if v.Name == name {
			return v.Num, true
		}
	}
	return 0, false
}

func condition(r wire.TwinReport, typ string) wire.Condition {
	for _, c := range r.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return wire.Condition{}
}

type fixture struct {
	src *source
	ob  *outbox
	pub *publisher
	sim *sim.Sim
	clk *clock
	l   *twins.Loop
}

func start(t *testing.T, maxDevices int) *fixture {
	t.Helper()
	f := &fixture{src: newSource(), ob: &outbox{}, pub: &publisher{}, clk: newClock()}
	f.sim = sim.New(f.clk.now)
	f.l = twins.New(twins.Config{
		Source: f.src, Changes: f.src.changes, Buses: f.sim, Outbox: f.ob, Publisher: f.pub,
		MaxDevices: maxDevices, Resync: time.Hour, RetryMin: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	wait.For(t, 5*time.Second, what, ok)
}

func bme280(poll, report int64, deadband float64) *wire.Device {
	return &wire.Device{Driver: "bme280", Bus: "I2C1", Address: 0x76, Properties: []wire.DeviceProperty{
		{Name: "temperature", PollMillis: poll, ReportMillis: report, Deadband: deadband},
		{Name: "humidity", PollMillis: poll, ReportMillis: report, Deadband: 100},
		{Name: "pressure", PollMillis: poll, ReportMillis: report, Deadband: 100},
	}}
}

func TestReadsArePublishedAndReported(t *testing.T) {
	f := start(t, 0)
	f.src.put("air", "1", &wire.Device{Driver: "bme280", Bus: "I2C1", Address: 0x76})
	eventually(t, "a report", func() bool { _, ok := f.ob.last("air"); return ok })
	r, _ := f.ob.last("air")
	temp, ok := value(r, "temperature")
	if !ok || temp < 19 || temp > 23 {
		t.Fatalf("reported temperature %v (ok %v), want about 21 °C: %+v", temp, ok, r)
	}
	for _, name := range []string{"humidity", "pressure"} {
		if _, ok := value(r, name); !ok {
			t.Errorf("report lacks %s: %+v", name, r)
		}
	}
	if c := condition(r, "Connected"); c.Status != "True" {
		t.Errorf("Connected = %+v", c)
	}
	if c := condition(r, "Error"); c.Status != "False" {
		t.Errorf("Error = %+v", c)
	}
	eventually(t, "a publication", func() bool { return f.pub.count("air") > 0 })
}

// With the world's clock standing still nothing changes: one report and one
// publication, however often the device is read. A change beyond the
// deadband is reported, one within it is not.
func TestDeadband(t *testing.T) {
	f := start(t, 0)
	f.src.put("air", "1", bme280(10, 10, 0.5))
	eventually(t, "first report", func() bool { return len(f.ob.of("air")) == 1 })
	before := f.l.Stats().Reads
	eventually(t, "20 more reads", func() bool { return f.l.Stats().Reads > before+20 })
	if n := len(f.ob.of("air")); n != 1 {
		t.Fatalf("%d reports with nothing changing, want 1", n)
	}
	if n := f.pub.count("air"); n != 1 {
		t.Fatalf("%d publications with nothing changing, want 1", n)
	}
	// 3 s of world time: temperature moves about 0.05 °C, inside the deadband.
	f.clk.add(3 * time.Second)
	eventually(t, "a publication of the small change", func() bool { return f.pub.count("air") >= 2 })
	// A device's reads run one after another, each publishing then
	// reporting: once a later read has begun, the one that published has
	// queued whatever report it was going to.
	seen := f.l.Stats().Reads
	eventually(t, "a later read", func() bool { return f.l.Stats().Reads > seen })
	if n := len(f.ob.of("air")); n != 1 {
		t.Fatalf("%d reports after a change inside the deadband, want 1", n)
	}
	// 60 s more: about 0.85 °C, beyond it.
	f.clk.add(60 * time.Second)
	eventually(t, "a report of the large change", func() bool { return len(f.ob.of("air")) == 2 })
}

// Values changing on every read are published at full rate but reported
// at most once per report interval.
func TestReportIntervalCoalesces(t *testing.T) {
	f := start(t, 0)
	f.src.put("air", "1", bme280(10, 300, 0))
	stop := make(chan struct{})
	defer close(stop)
	go func() { // the world runs a thousand times faster than the wall
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
				f.clk.add(2 * time.Second)
			}
		}
	}()
	eventually(t, "first report", func() bool { return len(f.ob.of("air")) >= 1 })
	first := time.Now()
	eventually(t, "three reports and ten reads", func() bool { return len(f.ob.of("air")) >= 3 && f.l.Stats().Reads >= 10 })
	elapsed := time.Since(first)
	reports, pubs := len(f.ob.of("air")), f.pub.count("air")
	// Report k comes at least (k-1) intervals after the first, which came
	// before first was taken (the slack covers that observation's delay):
	// more reports than that in elapsed means the interval was not kept.
	if limit := 1 + int((elapsed+20*time.Millisecond)/(300*time.Millisecond)); reports > limit {
		t.Errorf("%d reports within %v at a 300 ms report interval, want at most %d", reports, elapsed, limit)
	}
	// A forced BME280 measurement takes tens of ms (the driver waits for
	// the conversion): every read is published, whatever the rate.
	if reads := f.l.Stats().Reads; reads < 10 || int64(pubs) < reads-1 {
		t.Errorf("%d publications for %d reads with values changing, want every read", pubs, reads)
	}
	t.Logf("reads %d, publications %d, reports %d", f.l.Stats().Reads, pubs, reports)
}

func TestDesiredLatchesOutput(t *testing.T) {
	f := start(t, 0)
	pin := f.sim.Pins["GPIO17"]
	f.src.put("lamp", "1", &wire.Device{Driver: "gpio-out", Pin: "GPIO17"})
	eventually(t, "off reported", func() bool {
		r, ok := f.ob.last("lamp")
		v, has := value(r, "on")
		return ok && has && v == 0
	})
	f.src.put("lamp", "2", &wire.Device{Driver: "gpio-out", Pin: "GPIO17", Desired: []wire.TwinValue{{Name: "on", Num: 1}}})
	eventually(t, "on reported", func() bool {
		r, _ := f.ob.last("lamp")
		v, has := value(r, "on")
		return has && v == 1
	})
	if !pin.Read() {
		t.Fatal("desired on, reported on, but the sim pin is low")
	}
	// A write over MQTT (the loop's Write) and back.
	if err := f.l.Write(context.Background(), twins.Ref{Namespace: "default", Name: "lamp"}, "on", false); err != nil {
		t.Fatal(err)
	}
	if pin.Read() {
		t.Fatal("written off, sim pin still high")
	}
	r, _ := f.ob.last("lamp")
	if v, _ := value(r, "on"); v != 0 {
		t.Fatalf("written off, reported %v", v)
	}
	for _, c := range []struct {
		prop string
		x    any
		want error
	}{
		{"on", 2.5, twins.ErrBadValue},
		{"on", "yes", twins.ErrBadValue},
		{"brightness", 1.0, hal.ErrUnknownProperty},
	} {
		if err := f.l.Write(context.Background(), twins.Ref{Namespace: "default", Name: "lamp"}, c.prop, c.x); !errors.Is(err, c.want) {
			t.Errorf("Write(%s, %v) = %v, want %v", c.prop, c.x, err, c.want)
		}
	}
	if err := f.l.Write(context.Background(), twins.Ref{Namespace: "default", Name: "nope"}, "on", true); !errors.Is(err, twins.ErrUnknownDevice) {
		t.Errorf("Write to unknown device = %v", err)
	}
}

// A device that reports edges (gpio-in) is read on each edge, long before
// its poll, and still takes desired values while it waits for one.
func TestEdgesAndRequestsWhileWatching(t *testing.T) {
	f := start(t, 0)
	pin := f.sim.Pins["GPIO22"]
	props := []wire.DeviceProperty{{Name: "level", PollMillis: 3_600_000, ReportMillis: 1}}
	f.src.put("button", "1", &wire.Device{Driver: "gpio-in", Pin: "GPIO22", Properties: props})
	eventually(t, "low reported", func() bool {
		r, ok := f.ob.last("button")
		v, has := value(r, "level")
		return ok && has && v == 0
	})
	pin.Drive(true)
	eventually(t, "the rising edge read and reported within the hour's poll", func() bool {
		r, _ := f.ob.last("button")
		v, _ := value(r, "level")
		return v == 1
	})
	f.src.put("button", "2", &wire.Device{Driver: "gpio-in", Pin: "GPIO22", Properties: props, Desired: []wire.TwinValue{{Name: "level", Num: 0}}})
	eventually(t, "the desired value for a read-only property refused as a condition", func() bool {
		r, _ := f.ob.last("button")
		c := condition(r, "Error")
		return c.Status == "True" && strings.Contains(c.Message, "desired level")
	})
}

// Desired values held in the store are applied when the device opens, with
// or without a relay: the store is the only input.
func TestDesiredAppliedAtOpen(t *testing.T) {
	f := start(t, 0)
	f.src.put("fan", "1", &wire.Device{Driver: "gpio-out", Pin: "GPIO5", Desired: []wire.TwinValue{{Name: "on", Num: 1}}})
	eventually(t, "pin high", func() bool { return f.sim.Pins["GPIO5"].Read() == true })
	f.src.put("probe", "1", &wire.Device{Driver: "bme280", Bus: "I2C1", Address: 0x76, Desired: []wire.TwinValue{{Name: "temperature", Num: 30}}})
	eventually(t, "desired refused", func() bool {
		r, _ := f.ob.last("probe")
		c := condition(r, "Error")
		return c.Status == "True" && strings.Contains(c.Message, "read-only")
	})
	r, _ := f.ob.last("probe")
	if condition(r, "Connected").Status != "True" {
		t.Errorf("a refused desired value should not disconnect the device: %+v", r.Conditions)
	}
}

func TestErrorsAreConditionsAndIsolated(t *testing.T) {
	f := start(t, 0)
	f.src.put("air", "1", &wire.Device{Driver: "bme280", Bus: "I2C1", Address: 0x76})
	f.src.put("bad", "1", &wire.Device{Driver: "bmp999", Bus: "I2C1"})
	f.src.put("nobus", "1", &wire.Device{Driver: "sht3x", Bus: "I2C7", Address: 0x44})
	f.src.put("nack", "1", &wire.Device{Driver: "sht3x", Bus: "I2C1", Address: 0x45})
	f.src.put("typo", "1", &wire.Device{Driver: "sht3x", Bus: "I2C1", Address: 0x44, Options: map[string]string{"repeatabilty": "low"}})
	for _, c := range []struct{ name, reason, msg string }{
		{"bad", "UnknownDriver", `unknown driver "bmp999"`},
		{"nobus", "NoSuchBus", `no such bus`},
		{"nack", "NoAnswer", `NACK`},
		{"typo", "UnknownOption", `unknown connection option "repeatabilty" for driver sht3x (it has repeatability)`},
	} {
		eventually(t, c.name+" error", func() bool { _, ok := f.ob.last(c.name); return ok })
		r, _ := f.ob.last(c.name)
		e := condition(r, "Error")
		if e.Status != "True" || e.Reason != c.reason || !strings.Contains(e.Message, c.msg) {
			t.Errorf("%s: Error condition %+v, want reason %s and %q in the message", c.name, e, c.reason, c.msg)
		}
		if cc := condition(r, "Connected"); cc.Status != "False" {
			t.Errorf("%s: Connected %+v", c.name, cc)
		}
	}
	if e := condition(f.ob.of("bad")[0], "Error"); !strings.Contains(e.Message, "known: ") {
		t.Errorf("unknown driver message should list the known drivers: %q", e.Message)
	}
	// Retried with backoff, but reported once per distinct error: with
	// three failed opens per failing device, some device failed at least
	// three times, and none reported more than once.
	eventually(t, "failing devices retried", func() bool { return f.l.Stats().OpenErrors >= 12 })
	for _, name := range []string{"bad", "nobus", "nack", "typo"} {
		if n := len(f.ob.of(name)); n != 1 {
			t.Errorf("%s: %d reports of an unchanging error, want 1", name, n)
		}
	}
	// The good device keeps going.
	eventually(t, "good device reported", func() bool {
		r, ok := f.ob.last("air")
		return ok && condition(r, "Connected").Status == "True"
	})
	// Fixing the Device clears the error.
	f.src.put("nack", "2", &wire.Device{Driver: "sht3x", Bus: "I2C1", Address: 0x44})
	eventually(t, "fixed device connected", func() bool {
		r, _ := f.ob.last("nack")
		return condition(r, "Connected").Status == "True" && condition(r, "Error").Status == "False"
	})
}

func TestRemovedAndLimit(t *testing.T) {
	f := start(t, 2)
	f.src.put("a", "1", &wire.Device{Driver: "gpio-out", Pin: "GPIO1"})
	f.src.put("b", "1", &wire.Device{Driver: "gpio-out", Pin: "GPIO2"})
	f.src.put("c", "1", &wire.Device{Driver: "gpio-out", Pin: "GPIO3"})
	eventually(t, "c refused", func() bool {
		r, ok := f.ob.last("c")
		return ok && condition(r, "Error").Reason == "TooManyDevices"
	})
	if s := f.l.Stats(); s.Devices != 2 || s.OverLimit != 1 {
		t.Fatalf("stats %+v, want 2 devices and 1 over the limit", s)
	}
	f.src.del("a")
	eventually(t, "c served once a is gone", func() bool {
		r, _ := f.ob.last("c")
		return condition(r, "Connected").Status == "True"
	})
}
