package bme280

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/bmxx80"

	"outpost.dev/hal"
)

// Name is the driver name.
const Name = "bme280"

// DefaultAddr is the I²C address with SDO tied low.
const DefaultAddr = 0x76

func init() { hal.Register(Name, Open) }

var props = []hal.Property{
	{Name: "temperature", Type: hal.Float, Unit: "°C", Access: hal.ReadOnly},
	{Name: "humidity", Type: hal.Float, Unit: "%RH", Access: hal.ReadOnly},
	{Name: "pressure", Type: hal.Float, Unit: "hPa", Access: hal.ReadOnly},
}

// Dev is an open BME280.
type Dev struct {
	c    hal.Conn
	d    *bmxx80.Dev
	port io.Closer // the SPI port, when the board gave us one to close
}

// Open opens a BME280 on the I²C or SPI bus named in c.
func Open(b hal.Buses, c hal.Conn) (hal.Device, error) {
	opts := bmxx80.DefaultOpts // 4× oversampling of T, P and H: ~26 ms a reading
	var (
		d    *bmxx80.Dev
		err  error
		port io.Closer
	)
	if strings.HasPrefix(strings.ToUpper(c.Bus), "SPI") {
		c.Bus = c.SPIBus()
		p, perr := b.SPI(c.Bus)
		if perr != nil {
			return nil, perr
		}
		port, _ = p.(io.Closer)
		d, err = bmxx80.NewSPI(p, &opts)
	} else {
		if c.Addr == 0 {
			c.Addr = DefaultAddr
		}
		if c.Addr != 0x76 && c.Addr != 0x77 {
			return nil, hal.Wrap(Name, "open", c, fmt.Errorf("%w: a BME280 answers at 0x76 or 0x77 only", hal.ErrBadConn))
		}
		bus, berr := b.I2C(c.Bus)
		if berr != nil {
			return nil, hal.Wrap(Name, "open", c, berr)
		}
		d, err = bmxx80.NewI2C(bus, uint16(c.Addr), &opts)
	}
	if err != nil {
		closeQuietly(port)
		return nil, hal.Wrap(Name, "open", c, chipErr(err))
	}
	if name := d.String(); !strings.HasPrefix(name, "BME280") {
		closeQuietly(port)
		return nil, hal.Wrap(Name, "open", c, fmt.Errorf("%w: register 0xD0 (id) says %s, want a BME280 (0x60)", hal.ErrChipID, name[:strings.IndexByte(name, '{')]))
	}
	return &Dev{c: c, d: d, port: port}, nil
}

// chipErr turns bmxx80's text about the chip id ("bmxx80: unexpected chip
// id 42") into hal.ErrChipID.
func chipErr(err error) error {
	_, hex, ok := strings.Cut(err.Error(), "unexpected chip id ")
	if !ok {
		return err
	}
	id, perr := strconv.ParseUint(hex, 16, 8)
	if perr != nil {
		return fmt.Errorf("%w: %w", hal.ErrChipID, err)
	}
	return fmt.Errorf("%w: register 0xD0 (id) reads 0x%02x, want 0x60 (BME280)", hal.ErrChipID, id)
}

// Properties implements hal.Device.
func (d *Dev) Properties() []hal.Property { return props }

// Read implements hal.Device; it triggers one forced-mode measurement.
func (d *Dev) Read() ([]hal.Value, error) {
	var e physic.Env
	if err := d.d.Sense(&e); err != nil {
		return nil, hal.Wrap(Name, "read", d.c, err)
	}
	return []hal.Value{
		props[0].Float(float64(e.Temperature-physic.ZeroCelsius) / float64(physic.Celsius)),
		props[1].Float(float64(e.Humidity) / float64(physic.PercentRH)),
		props[2].Float(float64(e.Pressure) / float64(100*physic.Pascal)),
	}, nil
}

// Write implements hal.Device; a BME280 has nothing to write.
func (d *Dev) Write(v hal.Value) error { return hal.RefuseWrite(Name, d.c, props, v) }

// Close implements hal.Device; the chip stays in sleep mode.
func (d *Dev) Close() error {
	err := d.d.Halt()
	if d.port != nil {
		if cerr := d.port.Close(); err == nil {
			err = cerr
		}
	}
	return hal.Wrap(Name, "close", d.c, err)
}

func closeQuietly(c io.Closer) {
	if c != nil {
		_ = c.Close()
	}
}
