package linux

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"periph.io/x/conn/v3/driver/driverreg"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/onewire"
	"periph.io/x/conn/v3/spi"
	"periph.io/x/host/v3/gpioioctl"
	"periph.io/x/host/v3/netlink"
	"periph.io/x/host/v3/sysfs"

	"outpost.dev/hal"
)

// Line is a GPIO line of a gpiochip.
type Line struct {
	// Chips are the labels of the gpiochip (as gpiodetect shows them) that
	// carry the line, or its device name ("gpiochip0"); the first present
	// wins, as kernels have renamed chips over the years.
	Chips  []string
	Offset int
}

// SPIDev is /dev/spidevBus.CS.
type SPIDev struct{ Bus, CS int }

// Layout maps a board's names to kernel devices.
type Layout struct {
	I2C     map[string]int    // "I2C1" → /dev/i2c-1
	SPI     map[string]SPIDev // "SPI0.0" → /dev/spidev0.0
	GPIO    map[string]Line   // "GPIO17" → line 17 of pinctrl-bcm2711
	OneWire map[string]uint32 // "W1" → w1 bus master 1 (/sys/bus/w1/devices/w1_bus_master1)
}

// Buses opens kernel devices on first use; it implements hal.Buses and is
// safe for concurrent use. I²C and 1-wire buses are shared between devices;
// each SPI call opens the spidev anew, and the device closes it.
type Buses struct {
	l Layout

	mu      sync.Mutex
	i2c     map[string]i2c.Bus
	ow      map[string]onewire.Bus
	gpioErr error
	gpioOK  bool
}

// New returns Buses for l. Nothing is opened yet.
func New(l Layout) *Buses {
	return &Buses{l: l, i2c: map[string]i2c.Bus{}, ow: map[string]onewire.Bus{}}
}

// I2C implements hal.Buses.
func (b *Buses) I2C(name string) (i2c.Bus, error) {
	n, ok := b.l.I2C[name]
	if !ok {
		return nil, hal.NotFound(hal.ErrNoBus, "I²C", name, slices.Collect(maps.Keys(b.l.I2C)))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if bus, ok := b.i2c[name]; ok {
		return bus, nil
	}
	bus, err := sysfs.NewI2C(n)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is /dev/i2c-%d: %v (enable it, e.g. dtparam=i2c_arm=on)", hal.ErrNoBus, name, n, err)
	}
	b.i2c[name] = bus
	return bus, nil
}

// SPI implements hal.Buses.
func (b *Buses) SPI(name string) (spi.Port, error) {
	d, ok := b.l.SPI[name]
	if !ok {
		return nil, hal.NotFound(hal.ErrNoBus, "SPI", name, slices.Collect(maps.Keys(b.l.SPI)))
	}
	p, err := sysfs.NewSPI(d.Bus, d.CS)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is /dev/spidev%d.%d: %v (enable it, e.g. dtparam=spi=on)", hal.ErrNoBus, name, d.Bus, d.CS, err)
	}
	return p, nil
}

// OneWire implements hal.Buses.
func (b *Buses) OneWire(name string) (onewire.Bus, error) {
	id, ok := b.l.OneWire[name]
	if !ok {
		return nil, hal.NotFound(hal.ErrNoBus, "1-wire", name, slices.Collect(maps.Keys(b.l.OneWire)))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if bus, ok := b.ow[name]; ok {
		return bus, nil
	}
	bus, err := netlink.New(id)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is w1_bus_master%d: %v (load w1-gpio, e.g. dtoverlay=w1-gpio)", hal.ErrNoBus, name, id, err)
	}
	b.ow[name] = bus
	return bus, nil
}

// Pin implements hal.Buses.
func (b *Buses) Pin(name string) (gpio.PinIO, error) {
	l, ok := b.l.GPIO[name]
	if !ok {
		return nil, hal.NotFound(hal.ErrNoPin, "GPIO", name, slices.Collect(maps.Keys(b.l.GPIO)))
	}
	b.mu.Lock()
	if !b.gpioOK && b.gpioErr == nil {
		// Initialises only the periph drivers linked in: gpioioctl and sysfs.
		if _, err := driverreg.Init(); err != nil {
			b.gpioErr = err
		}
		b.gpioOK = b.gpioErr == nil
	}
	err := b.gpioErr
	b.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: GPIO character devices: %v", hal.ErrNoPin, name, err)
	}
	var seen []string
	for _, want := range l.Chips {
		for _, c := range gpioioctl.Chips {
			if c.Label() == want || c.Name() == want {
				if p := c.ByNumber(l.Offset); p != nil {
					return p, nil
				}
				return nil, fmt.Errorf("%w: %s: %s has no line %d", hal.ErrNoPin, name, want, l.Offset)
			}
		}
	}
	for _, c := range gpioioctl.Chips {
		seen = append(seen, c.Name()+" ("+c.Label()+")")
	}
	return nil, fmt.Errorf("%w: %s: no gpiochip labelled %s (found: %s)", hal.ErrNoPin, name, strings.Join(l.Chips, " or "), strings.Join(seen, ", "))
}

var _ hal.Buses = (*Buses)(nil)
