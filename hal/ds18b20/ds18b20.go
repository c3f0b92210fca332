package ds18b20

import (
	"fmt"
	"strconv"
	"strings"

	"periph.io/x/conn/v3/onewire"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/ds18b20"

	"outpost.dev/hal"
)

// Name is the driver name.
const Name = "ds18b20"

// Family is the ROM family code of the DS18B20.
const Family = 0x28

func init() { hal.Register(Name, Open, "resolution", "rom") }

var props = []hal.Property{
	{Name: "temperature", Type: hal.Float, Unit: "°C", Access: hal.ReadOnly},
}

// Dev is an open DS18B20.
type Dev struct {
	c hal.Conn
	d *ds18b20.Dev
}

// Open opens a DS18B20 on the 1-wire bus named in c.
func Open(b hal.Buses, c hal.Conn) (hal.Device, error) {
	bits, err := c.IntOption("resolution", 12)
	if err != nil {
		return nil, hal.Wrap(Name, "open", c, err)
	}
	if bits < 9 || bits > 12 {
		return nil, hal.Wrap(Name, "open", c, fmt.Errorf("%w: option resolution=%d (want 9–12)", hal.ErrBadConn, bits))
	}
	if s := c.Option("rom", ""); s != "" && c.Addr == 0 {
		a, err := ParseROM(s)
		if err != nil {
			return nil, hal.Wrap(Name, "open", c, err)
		}
		c.Addr = uint64(a)
	}
	bus, err := b.OneWire(c.Bus)
	if err != nil {
		return nil, hal.Wrap(Name, "open", c, err)
	}
	if c.Addr == 0 {
		a, err := searchOne(bus)
		if err != nil {
			return nil, hal.Wrap(Name, "open", c, err)
		}
		c.Addr = uint64(a)
	}
	if c.Addr&0xff != Family {
		return nil, hal.Wrap(Name, "open", c, fmt.Errorf("%w: ROM family 0x%02x, want 0x28 (DS18B20)", hal.ErrChipID, c.Addr&0xff))
	}
	d, err := ds18b20.New(bus, onewire.Address(c.Addr), bits)
	if err != nil {
		return nil, hal.Wrap(Name, "open", c, err)
	}
	return &Dev{c: c, d: d}, nil
}

func searchOne(bus onewire.Bus) (onewire.Address, error) {
	all, err := bus.Search(false)
	if err != nil {
		return 0, fmt.Errorf("search: %w", err)
	}
	var found []onewire.Address
	for _, a := range all {
		if a&0xff == Family {
			found = append(found, a)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return 0, fmt.Errorf("%w: search found no DS18B20 (%d other devices)", hal.ErrNACK, len(all))
	default:
		roms := make([]string, len(found))
		for i, a := range found {
			roms[i] = FormatROM(a)
		}
		return 0, fmt.Errorf("%w: %d DS18B20 on the bus (%s): set option rom", hal.ErrBadConn, len(found), strings.Join(roms, ", "))
	}
}

// ParseROM parses a ROM code as Linux names it ("28-0316a279b1ff": family,
// then the 48-bit serial) or as 16 hex digits (the 64-bit Address).
func ParseROM(s string) (onewire.Address, error) {
	if fam, serial, ok := strings.Cut(s, "-"); ok {
		f, err1 := strconv.ParseUint(fam, 16, 8)
		n, err2 := strconv.ParseUint(serial, 16, 48)
		if err1 != nil || err2 != nil {
			return 0, fmt.Errorf("%w: rom %q is not family-serial in hex", hal.ErrBadConn, s)
		}
		// The CRC byte is not in the Linux name; periph's Address carries it
		// in the top byte but Match ROM needs it, so compute it.
		a := onewire.Address(n<<8 | f)
		var b [7]byte
		for i := range b {
			b[i] = byte(a >> (8 * i))
		}
		return a | onewire.Address(onewire.CalcCRC(b[:]))<<56, nil
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: rom %q is not 16 hex digits", hal.ErrBadConn, s)
	}
	return onewire.Address(n), nil
}

// FormatROM formats a ROM code as Linux names it: "28-0316a279b1ff".
func FormatROM(a onewire.Address) string {
	return fmt.Sprintf("%02x-%012x", uint64(a)&0xff, uint64(a)>>8&0xffffffffffff)
}

// Properties implements hal.Device.
func (d *Dev) Properties() []hal.Property { return props }

// Read implements hal.Device: one conversion, then the scratchpad.
func (d *Dev) Read() ([]hal.Value, error) {
	var e physic.Env
	if err := d.d.Sense(&e); err != nil {
		return nil, hal.Wrap(Name, "read", d.c, err)
	}
	return []hal.Value{props[0].Float(float64(e.Temperature-physic.ZeroCelsius) / float64(physic.Celsius))}, nil
}

// Write implements hal.Device; a thermometer has nothing to write.
func (d *Dev) Write(v hal.Value) error { return hal.RefuseWrite(Name, d.c, props, v) }

// Close implements hal.Device.
func (d *Dev) Close() error { return nil }
