package hal

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/onewire"
	"periph.io/x/conn/v3/spi"
)

// BusMap is Buses from fixed maps, for tests and simulators. An unknown name
// is an error wrapping ErrNoBus or ErrNoPin that lists the known names.
type BusMap struct {
	I2CBuses     map[string]i2c.Bus
	SPIPorts     map[string]spi.Port
	GPIOPins     map[string]gpio.PinIO
	OneWireBuses map[string]onewire.Bus
}

// I2C implements Buses.
func (m *BusMap) I2C(name string) (i2c.Bus, error) { return find(m.I2CBuses, "I²C", name, ErrNoBus) }

// SPI implements Buses.
func (m *BusMap) SPI(name string) (spi.Port, error) { return find(m.SPIPorts, "SPI", name, ErrNoBus) }

// Pin implements Buses.
func (m *BusMap) Pin(name string) (gpio.PinIO, error) {
	return find(m.GPIOPins, "GPIO", name, ErrNoPin)
}

// OneWire implements Buses.
func (m *BusMap) OneWire(name string) (onewire.Bus, error) {
	return find(m.OneWireBuses, "1-wire", name, ErrNoBus)
}

func find[T any](m map[string]T, kind, name string, sentinel error) (T, error) {
	if v, ok := m[name]; ok {
		return v, nil
	}
	var zero T
	return zero, NotFound(sentinel, kind, name, slices.Collect(maps.Keys(m)))
}

// NotFound returns an error wrapping sentinel (ErrNoBus or ErrNoPin) for
// the named bus or pin of a kind ("I²C"), listing the known names.
func NotFound(sentinel error, kind, name string, known []string) error {
	slices.Sort(known)
	list := strings.Join(known, ", ")
	if len(known) > 12 {
		list = strings.Join(known[:12], ", ") + fmt.Sprintf(", … (%d in all)", len(known))
	}
	if list == "" {
		list = "none"
	}
	return fmt.Errorf("%w: %s %q (this board has: %s)", sentinel, kind, name, list)
}
