package twins

import (
	"strings"
	"sync"

	"outpost.dev/hal"
)

// bus runs the steps of the devices on one bus (I²C bus, SPI controller,
// 1-wire bus; one GPIO pin), one after another: a device's step is its
// only access to the hal device, so devices on one bus never touch it at
// once. Steps run on a goroutine that exists only while steps are ready:
// it takes the ready devices in the order they became ready and ends when
// none is left. Buses run their steps in parallel with each other.
type bus struct {
	key  string
	refs int // workers on this bus; guarded by Loop.mu

	mu      sync.Mutex
	ready   []*worker
	running bool
}

// busKey names the bus c uses: one per I²C bus, SPI controller or 1-wire
// bus, one per pin for GPIO devices.
func busKey(c hal.Conn) string {
	if c.Bus != "" {
		ctrl, _, _ := strings.Cut(c.Bus, ".")
		return "bus:" + ctrl
	}
	return "pin:" + c.Pin
}

// wake makes w's step ready to run on its bus unless it is ready already
// or its device is lent to its watch goroutine (which hands it back, ready,
// within maxWatchWait).
func (b *bus) wake(w *worker) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if w.queued || w.lent || w.gone {
		return
	}
	w.queued = true
	b.ready = append(b.ready, w)
	if !b.running {
		b.running = true
		go b.run()
	}
}

// run steps the ready devices until none is left.
func (b *bus) run() {
	for {
		b.mu.Lock()
		if len(b.ready) == 0 {
			b.running = false
			b.ready = nil // let a burst's backing array go
			b.mu.Unlock()
			return
		}
		w := b.ready[0]
		b.ready[0] = nil
		b.ready = b.ready[1:]
		w.queued = false
		b.mu.Unlock()
		w.step()
	}
}

// lend hands w's device to its watch goroutine to wait for an edge for up
// to d, unless a step was asked for meanwhile. It reports whether it did.
func (b *bus) lend(w *worker) bool {
	b.mu.Lock()
	if w.queued {
		b.mu.Unlock()
		return false
	}
	w.lent = true
	b.mu.Unlock()
	return true
}

// giveBack takes w's device back from its watch goroutine and makes its
// step ready.
func (b *bus) giveBack(w *worker) {
	b.mu.Lock()
	w.lent = false
	b.mu.Unlock()
	b.wake(w)
}

// retire marks w stopped for good: wakes (a timer that fires late) no
// longer queue it.
func (b *bus) retire(w *worker) {
	b.mu.Lock()
	w.gone = true
	b.mu.Unlock()
}
