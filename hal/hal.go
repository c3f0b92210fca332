package hal

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/onewire"
	"periph.io/x/conn/v3/spi"
)

// Conn says where a device is wired.
type Conn struct {
	// Bus is the board's name of the bus: "I2C1", "SPI0.0", "W1".
	Bus string
	// Addr is the device address on the bus: the 7-bit I²C address, or the
	// 64-bit 1-wire ROM code. Zero means the driver's default.
	Addr uint64
	// Pin is the board's name of a GPIO pin: "GPIO17", "P9_12".
	Pin string
	// ChipSelect selects the SPI chip-select line when Bus names only the
	// controller ("SPI0"); it is ignored when Bus already has one ("SPI0.1").
	ChipSelect int
	// Options are driver-specific settings ("channel": "2", "pull": "up").
	Options map[string]string
}

// SPIBus returns the SPI bus name including the chip select ("SPI0.1").
func (c Conn) SPIBus() string {
	if strings.Contains(c.Bus, ".") {
		return c.Bus
	}
	return c.Bus + "." + strconv.Itoa(c.ChipSelect)
}

// String describes the connection for error messages: "I2C1 addr 0x76".
func (c Conn) String() string {
	var parts []string
	if c.Bus != "" {
		parts = append(parts, c.Bus)
	}
	if c.Addr != 0 {
		if c.Addr > 0x3ff {
			parts = append(parts, fmt.Sprintf("rom %016x", c.Addr))
		} else {
			parts = append(parts, fmt.Sprintf("addr 0x%02x", c.Addr))
		}
	}
	if c.Pin != "" {
		parts = append(parts, "pin "+c.Pin)
	}
	if len(parts) == 0 {
		return "(no connection)"
	}
	return strings.Join(parts, " ")
}

// Option returns the named option, or def when it is not set.
func (c Conn) Option(name, def string) string {
	if v, ok := c.Options[name]; ok && v != "" {
		return v
	}
	return def
}

// Type is the type of a property value.
type Type string

// Property value types.
const (
	Float Type = "float"
	Bool  Type = "bool"
	Int   Type = "int"
)

// Access says whether a property can be written.
type Access string

// Property access modes.
const (
	ReadOnly  Access = "ro"
	ReadWrite Access = "rw"
)

// Property describes one named value a device has.
type Property struct {
	Name   string
	Type   Type
	Unit   string // SI-style unit: "°C", "%RH", "hPa", "V", "Hz", "%"; empty for none
	Access Access
}

// Value is one reading of, or one value to write to, a property. Num holds
// Float and Int values; Bool holds Bool values.
type Value struct {
	Name string
	Type Type
	Unit string
	Num  float64
	Bool bool
}

// String formats the value with its unit: "21.37 °C", "true".
func (v Value) String() string {
	switch v.Type {
	case Bool:
		return strconv.FormatBool(v.Bool)
	case Int:
		return strings.TrimSpace(strconv.FormatInt(int64(v.Num), 10) + " " + v.Unit)
	default:
		return strings.TrimSpace(strconv.FormatFloat(v.Num, 'f', -1, 64) + " " + v.Unit)
	}
}

// Device is an open sensor or actuator.
//
// A Device is not safe for concurrent use; the caller serialises Read, Write
// and Close.
type Device interface {
	// Properties lists the device's properties; the list does not change.
	Properties() []Property
	// Read reads every readable property once.
	Read() ([]Value, error)
	// Write sets one writable property. Sensors return ErrReadOnly.
	Write(v Value) error
	// Close releases the device; the bus stays open.
	Close() error
}

// Watcher is implemented by devices that report changes without polling,
// such as gpio-in with edge detection.
type Watcher interface {
	// Wait blocks until the device signals a change or timeout passes, and
	// says whether a change happened. The caller then calls Read.
	Wait(timeout time.Duration) bool
}

// Buses resolves the names in a Conn to periph buses and pins. A board
// provides one; tests provide fakes.
type Buses interface {
	I2C(name string) (i2c.Bus, error)
	SPI(name string) (spi.Port, error)
	Pin(name string) (gpio.PinIO, error)
	OneWire(name string) (onewire.Bus, error)
}
