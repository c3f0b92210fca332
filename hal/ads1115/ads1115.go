package ads1115

import (
	"fmt"
	"math"

	"periph.io/x/conn/v3/analog"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/ads1x15"

	"outpost.dev/hal"
)

// Name is the driver name.
const Name = "ads1115"

// DefaultAddr is the I²C address with ADDR tied to GND.
const DefaultAddr = 0x48

func init() { hal.Register(Name, Open, "channel", "range", "rate") }

var props = []hal.Property{
	{Name: "voltage", Type: hal.Float, Unit: "V", Access: hal.ReadOnly},
	{Name: "raw", Type: hal.Int, Access: hal.ReadOnly},
}

var channels = map[string]ads1x15.Channel{
	"0": ads1x15.Channel0, "1": ads1x15.Channel1, "2": ads1x15.Channel2, "3": ads1x15.Channel3,
	"0-1": ads1x15.Channel0Minus1, "0-3": ads1x15.Channel0Minus3,
	"1-3": ads1x15.Channel1Minus3, "2-3": ads1x15.Channel2Minus3,
}

// Dev is one open ADS1115 channel.
type Dev struct {
	c hal.Conn
	p ads1x15.PinADC
}

// Open opens one channel of an ADS1115 on the I²C bus named in c.
func Open(b hal.Buses, c hal.Conn) (hal.Device, error) {
	if c.Addr == 0 {
		c.Addr = DefaultAddr
	}
	if c.Addr < 0x48 || c.Addr > 0x4b {
		return nil, hal.Wrap(Name, "open", c, fmt.Errorf("%w: an ADS1115 answers at 0x48–0x4b only", hal.ErrBadConn))
	}
	ch, ok := channels[c.Option("channel", "0")]
	if !ok {
		return nil, hal.Wrap(Name, "open", c, fmt.Errorf("%w: option channel=%q (want 0–3, 0-1, 0-3, 1-3 or 2-3)", hal.ErrBadConn, c.Option("channel", "")))
	}
	fullScale, err := c.FloatOption("range", 4.096)
	if err != nil {
		return nil, hal.Wrap(Name, "open", c, err)
	}
	rate, err := c.IntOption("rate", 128)
	if err != nil {
		return nil, hal.Wrap(Name, "open", c, err)
	}
	bus, err := b.I2C(c.Bus)
	if err != nil {
		return nil, hal.Wrap(Name, "open", c, err)
	}
	adc, err := ads1x15.NewADS1115(bus, &ads1x15.Opts{I2cAddress: uint16(c.Addr)})
	if err != nil {
		return nil, hal.Wrap(Name, "open", c, err)
	}
	mv := physic.ElectricPotential(math.Round(fullScale*1000)) * physic.MilliVolt
	p, err := adc.PinForChannel(ch, mv, physic.Frequency(rate)*physic.Hertz, ads1x15.BestQuality)
	if err != nil {
		return nil, hal.Wrap(Name, "open", c, fmt.Errorf("%w: %w", hal.ErrBadConn, err))
	}
	d := &Dev{c: c, p: p}
	// The chip has no id register: one conversion proves it is there.
	if _, err := d.sample(); err != nil {
		return nil, hal.Wrap(Name, "open", c, err)
	}
	return d, nil
}

func (d *Dev) sample() (analog.Sample, error) { return d.p.Read() }

// Properties implements hal.Device.
func (d *Dev) Properties() []hal.Property { return props }

// Read implements hal.Device: one single-shot conversion.
func (d *Dev) Read() ([]hal.Value, error) {
	s, err := d.sample()
	if err != nil {
		return nil, hal.Wrap(Name, "read", d.c, err)
	}
	return []hal.Value{props[0].Float(float64(s.V) / float64(physic.Volt)), props[1].Int(int64(s.Raw))}, nil
}

// Write implements hal.Device; an ADC has nothing to write.
func (d *Dev) Write(v hal.Value) error { return hal.RefuseWrite(Name, d.c, props, v) }

// Close implements hal.Device. In single-shot mode the chip powers down
// after each conversion by itself.
func (d *Dev) Close() error { return nil }
