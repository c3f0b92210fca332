package twins_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"outpost.dev/agent/twins"
	"outpost.dev/hal"
	"outpost.dev/hal/sim"
	"outpost.dev/wire"
)

// probes is what the "test-probe" driver saw: per device (its "id"
// option) the opens, closes and reads, and any access to a bus while
// another device on it was being accessed or to a device after its Close.
var probes = struct {
	sync.Mutex
	opens, closes, reads map[string]int
	busy                 map[string]bool // bus or pin in use
	overlaps, afterClose int
}{opens: map[string]int{}, closes: map[string]int{}, reads: map[string]int{}, busy: map[string]bool{}}

func resetProbes() {
	probes.Lock()
	defer probes.Unlock()
	clear(probes.opens)
	clear(probes.closes)
	clear(probes.reads)
	clear(probes.busy)
	probes.overlaps, probes.afterClose = 0, 0
}

func probeCount(m map[string]int, id string) int {
	probes.Lock()
	defer probes.Unlock()
	return m[id]
}

// probe is a device whose every Read takes its "delay" option (of the
// bubble's fake time) on its bus; its one property counts the reads.
type probe struct {
	id, bus string
	delay   time.Duration
	n       int
	closed  bool
}

func init() {
	hal.Register("test-probe", func(_ hal.Buses, c hal.Conn) (hal.Device, error) {
		d, err := time.ParseDuration(c.Option("delay", "0s"))
		if err != nil {
			return nil, err
		}
		p := &probe{id: c.Option("id", ""), bus: c.Bus + c.Pin, delay: d}
		probes.Lock()
		probes.opens[p.id]++
		probes.Unlock()
		return p, nil
	}, "delay", "id")
}

func (p *probe) Properties() []hal.Property {
	return []hal.Property{{Name: "count", Type: hal.Int, Access: hal.ReadOnly}}
}

// use marks the bus busy for d, counting overlaps with other devices.
func (p *probe) use(d time.Duration) {
	probes.Lock()
	if probes.busy[p.bus] {
		probes.overlaps++
	}
	if p.closed {
		probes.afterClose++
	}
	probes.busy[p.bus] = true
	probes.Unlock()
	time.Sleep(d)
	probes.Lock()
	probes.busy[p.bus] = false
	probes.Unlock()
}

func (p *probe) Read() ([]hal.Value, error) {
	p.use(p.delay)
	p.n++
	probes.Lock()
	probes.reads[p.id]++
	probes.Unlock()
	return []hal.Value{p.Properties()[0].Int(int64(p.n))}, nil
}

func (p *probe) Write(hal.Value) error { return hal.ErrReadOnly }

func (p *probe) Close() error {
	p.use(0)
	p.closed = true
	probes.Lock()
	probes.closes[p.id]++
	probes.Unlock()
	return nil
}

func probeDevice(id, bus string, poll time.Duration, delay time.Duration) *wire.Device {
	d := &wire.Device{Driver: "test-probe", Options: map[string]string{"id": id, "delay": delay.String()},
		Properties: []wire.DeviceProperty{{Name: "count", PollMillis: poll.Milliseconds(), ReportMillis: 1000}}}
	if len(bus) > 0 && bus[0] == 'P' {
		d.Pin = bus
	} else {
		d.Bus = bus
	}
	return d
}

// startBubble runs a Loop inside the synctest bubble until stop is
// called or the test ends.
func startBubble(t *testing.T) (src *source, l *twins.Loop, stop func()) {
	resetProbes()
	src = newSource()
	l = twins.New(twins.Config{
		Source: src, Changes: src.changes, Buses: nil, Outbox: &outbox{}, Publisher: &publisher{},
		Resync: time.Hour, RetryMin: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	stop = sync.OnceFunc(func() { cancel(); <-done })
	t.Cleanup(stop)
	return src, l, stop
}

// connected waits (in the bubble's time) until n devices are connected.
func connected(t *testing.T, l *twins.Loop, n int) {
	t.Helper()
	for i := 0; l.Stats().Connected < n; i++ {
		if i == 1000 {
			t.Fatalf("%d devices connected after 10 s, want %d: %+v", l.Stats().Connected, n, l.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Polled devices have no goroutine of their own: between polls, fifty of
// them on three buses and twenty pins leave no goroutine behind. Each is
// still read at its poll interval, and devices on one bus never touch it
// at once.
func TestPolledDevicesShareGoroutines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src, l, _ := startBubble(t)
		synctest.Wait()
		before := runtime.NumGoroutine()
		var ids []string
		for i := range 50 {
			bus := fmt.Sprintf("I2C%d", i%3)
			if i >= 30 {
				bus = fmt.Sprintf("P%d", i)
			}
			id := fmt.Sprintf("d%02d", i)
			ids = append(ids, id)
			src.put(id, "1", probeDevice(id, bus, 100*time.Millisecond, time.Millisecond))
		}
		connected(t, l, 50)
		synctest.Wait()
		if n := runtime.NumGoroutine() - before; n > 2 {
			t.Errorf("%d more goroutines with 50 polled devices idle between polls, want none", n)
		}
		reads := map[string]int{}
		for _, id := range ids {
			reads[id] = probeCount(probes.reads, id)
		}
		time.Sleep(time.Second)
		for _, id := range ids {
			// Ten polls in a second; a read takes 1 ms and ten devices
			// share a bus, so a poll may slip into the next one.
			if n := probeCount(probes.reads, id) - reads[id]; n < 9 || n > 11 {
				t.Errorf("%s read %d times in a second at a 100 ms poll, want 10", id, n)
			}
		}
		probes.Lock()
		defer probes.Unlock()
		if probes.overlaps != 0 {
			t.Errorf("%d accesses to a bus while another device used it", probes.overlaps)
		}
	})
}

// A slow device holds its own bus only: a device on another bus keeps its
// poll interval, while the slow device's neighbour on the same bus waits
// for it (the bus serialises them).
func TestSlowBusDoesNotDelayOtherBuses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src, l, _ := startBubble(t)
		src.put("slow", "1", probeDevice("slow", "I2C1", 100*time.Millisecond, 2*time.Second))
		src.put("neighbour", "1", probeDevice("neighbour", "I2C1", 100*time.Millisecond, 0))
		src.put("fast", "1", probeDevice("fast", "SPI0", 100*time.Millisecond, 0))
		connected(t, l, 3)
		fast, slow, neighbour := probeCount(probes.reads, "fast"), probeCount(probes.reads, "slow"), probeCount(probes.reads, "neighbour")
		time.Sleep(10 * time.Second)
		fast = probeCount(probes.reads, "fast") - fast
		slow = probeCount(probes.reads, "slow") - slow
		neighbour = probeCount(probes.reads, "neighbour") - neighbour
		if fast < 95 {
			t.Errorf("fast device on another bus read %d times in 10 s at a 100 ms poll, want about 100", fast)
		}
		// The slow device's reads take 2 s each: five fit in 10 s. Its
		// neighbour gets a turn between two of them (two when its poll
		// comes due just before the slow one's).
		if slow < 3 || slow > 6 || neighbour < slow-1 || neighbour > 2*(slow+1) {
			t.Errorf("on the slow bus: %d slow reads and %d of its neighbour in 10 s, want about 5 and 5 to 10", slow, neighbour)
		}
	})
}

// Removing, rewiring or stopping a device closes its hal device exactly
// once and never touches it afterwards; a change in desired values only
// keeps it open.
func TestDevicesClosedOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src, l, stop := startBubble(t)
		src.put("gone", "1", probeDevice("gone", "I2C1", 50*time.Millisecond, time.Millisecond))
		src.put("rewired", "1", probeDevice("rewired", "I2C1", 50*time.Millisecond, time.Millisecond))
		src.put("kept", "1", probeDevice("kept", "P1", 50*time.Millisecond, time.Millisecond))
		connected(t, l, 3)
		src.del("gone")
		src.put("rewired", "2", probeDevice("rewired", "I2C2", 50*time.Millisecond, time.Millisecond))
		d := probeDevice("kept", "P1", 50*time.Millisecond, time.Millisecond)
		d.Desired = []wire.TwinValue{{Name: "count", Num: 1}}
		src.put("kept", "2", d)
		time.Sleep(time.Second)
		for id, want := range map[string][2]int{"gone": {1, 1}, "rewired": {2, 1}, "kept": {1, 0}} {
			if o, c := probeCount(probes.opens, id), probeCount(probes.closes, id); o != want[0] || c != want[1] {
				t.Errorf("%s: opened %d and closed %d times, want %d and %d", id, o, c, want[0], want[1])
			}
		}
		stop()
		for _, id := range []string{"gone", "rewired", "kept"} {
			if o, c := probeCount(probes.opens, id), probeCount(probes.closes, id); o != c {
				t.Errorf("%s: opened %d and closed %d times once the loop stopped", id, o, c)
			}
		}
		probes.Lock()
		defer probes.Unlock()
		if probes.afterClose != 0 || probes.overlaps != 0 {
			t.Errorf("%d accesses after Close, %d overlapping on a bus", probes.afterClose, probes.overlaps)
		}
	})
}

// A value held back by the report interval is reported once the interval
// has passed, though no read follows: a gpio-in edge within a second of
// the last report, on a Device polled hourly and reported at most every
// second.
func TestHeldBackValueReportedWithoutRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src, ob, board := newSource(), &outbox{}, sim.New(time.Now)
		pin := board.Pins["GPIO22"]
		l := twins.New(twins.Config{Source: src, Changes: src.changes, Buses: board, Outbox: ob, Resync: time.Hour})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); l.Run(ctx) }()
		defer func() { cancel(); <-done }()

		props := []wire.DeviceProperty{{Name: "level", PollMillis: 3_600_000, ReportMillis: 1000}}
		src.put("button", "1", &wire.Device{Driver: "gpio-in", Pin: "GPIO22", Properties: props})
		connected(t, l, 1)
		synctest.Wait()
		if n := len(ob.of("button")); n != 1 {
			t.Fatalf("%d reports after the open, want 1", n)
		}
		pin.Drive(true)
		time.Sleep(500 * time.Millisecond)
		if reads, n := l.Stats().Reads, len(ob.of("button")); reads != 2 || n != 1 {
			t.Fatalf("half a second after the edge: %d reads and %d reports, want the edge read and the open's report", reads, n)
		}
		time.Sleep(600 * time.Millisecond)
		r, _ := ob.last("button")
		if v, _ := value(r, "level"); v != 1 || l.Stats().Reads != 2 {
			t.Fatalf("a second after the last report: level %v reported after %d reads, want 1 after 2", v, l.Stats().Reads)
		}
	})
}
