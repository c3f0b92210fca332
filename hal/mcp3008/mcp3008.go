package mcp3008

import (
	"fmt"
	"io"

	"periph.io/x/conn/v3/physic"
	"periph.io/x/conn/v3/spi"

	"outpost.dev/hal"
)

// Name is the driver name.
const Name = "mcp3008"

func init() { hal.Register(Name, Open, "channel", "differential", "vref") }

var props = []hal.Property{
	{Name: "voltage", Type: hal.Float, Unit: "V", Access: hal.ReadOnly},
	{Name: "raw", Type: hal.Int, Access: hal.ReadOnly},
}

// Dev is one open MCP3008 channel.
type Dev struct {
	c    hal.Conn
	conn spi.Conn
	port io.Closer
	cmd  [3]byte
	vref float64
}

// Open opens one channel of an MCP3008 on the SPI bus named in c.
func Open(b hal.Buses, c hal.Conn) (hal.Device, error) {
	c.Bus = c.SPIBus()
	ch, err := c.IntOption("channel", 0)
	if err != nil {
		return nil, hal.Wrap(Name, "open", c, err)
	}
	if ch < 0 || ch > 7 {
		return nil, hal.Wrap(Name, "open", c, fmt.Errorf("%w: option channel=%d (want 0–7)", hal.ErrBadConn, ch))
	}
	diff, err := c.BoolOption("differential", false)
	if err != nil {
		return nil, hal.Wrap(Name, "open", c, err)
	}
	vref, err := c.FloatOption("vref", 3.3)
	if err != nil {
		return nil, hal.Wrap(Name, "open", c, err)
	}
	p, err := b.SPI(c.Bus)
	if err != nil {
		return nil, hal.Wrap(Name, "open", c, err)
	}
	closer, _ := p.(io.Closer)
	conn, err := p.Connect(physic.MegaHertz, spi.Mode0, 8)
	if err != nil {
		if closer != nil {
			_ = closer.Close()
		}
		return nil, hal.Wrap(Name, "open", c, err)
	}
	return &Dev{c: c, conn: conn, port: closer, cmd: Command(ch, diff), vref: vref}, nil
}

// Command is the 3-byte transfer that reads channel ch: a start bit, then
// SGL/DIFF and D2–D0 in the high nibble of the second byte (datasheet
// table 5-2), then 8 clocks for the rest of the result.
func Command(ch int, differential bool) [3]byte {
	b := byte(0x80) // SGL/DIFF = 1: single-ended
	if differential {
		b = 0
	}
	return [3]byte{0x01, b | byte(ch&7)<<4, 0x00}
}

// Decode extracts the 10-bit result from the bytes clocked in during
// Command: B9–B8 are the low two bits of r[1], B7–B0 are r[2]. The null bit
// just before B9 (bit 2 of r[1]) is always driven low by the chip; a high
// one means nothing drives MISO.
func Decode(r [3]byte) (uint16, error) {
	if r[1]&0x04 != 0 {
		return 0, fmt.Errorf("%w: null bit is high (% x): is an MCP3008 on this chip select?", hal.ErrNACK, r[:])
	}
	return uint16(r[1]&0x03)<<8 | uint16(r[2]), nil
}

// Properties implements hal.Device.
func (d *Dev) Properties() []hal.Property { return props }

// Read implements hal.Device: one conversion.
func (d *Dev) Read() ([]hal.Value, error) {
	var r [3]byte
	if err := d.conn.Tx(d.cmd[:], r[:]); err != nil {
		return nil, hal.Wrap(Name, "read", d.c, err)
	}
	raw, err := Decode(r)
	if err != nil {
		return nil, hal.Wrap(Name, "read", d.c, err)
	}
	return []hal.Value{props[0].Float(float64(raw) * d.vref / 1024), props[1].Int(int64(raw))}, nil
}

// Write implements hal.Device; an ADC has nothing to write.
func (d *Dev) Write(v hal.Value) error { return hal.RefuseWrite(Name, d.c, props, v) }

// Close implements hal.Device; it closes the SPI port if the board opened
// one for this device.
func (d *Dev) Close() error {
	if d.port != nil {
		return hal.Wrap(Name, "close", d.c, d.port.Close())
	}
	return nil
}
