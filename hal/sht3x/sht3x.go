package sht3x

import (
	"fmt"
	"strings"
	"time"

	"periph.io/x/conn/v3/i2c"

	"outpost.dev/hal"
)

// Name is the driver name.
const Name = "sht3x"

// DefaultAddr is the I²C address with the ADDR pin low.
const DefaultAddr = 0x44

// Commands from the SHT3x-DIS datasheet, table 9 (single shot, clock
// stretching disabled) and section 4.11 (status register).
const (
	CmdMeasureHigh   = 0x2400
	CmdMeasureMedium = 0x240B
	CmdMeasureLow    = 0x2416
	CmdReadStatus    = 0xF32D
)

func init() { hal.Register(Name, Open, "repeatability") }

var props = []hal.Property{
	{Name: "temperature", Type: hal.Float, Unit: "°C", Access: hal.ReadOnly},
	{Name: "humidity", Type: hal.Float, Unit: "%RH", Access: hal.ReadOnly},
}

// Dev is an open SHT3x.
type Dev struct {
	c     hal.Conn
	d     i2c.Dev
	cmd   [2]byte
	wait  time.Duration
	sleep func(time.Duration)
}

// Open opens an SHT3x on the I²C bus named in c.
func Open(b hal.Buses, c hal.Conn) (hal.Device, error) {
	if c.Addr == 0 {
		c.Addr = DefaultAddr
	}
	if c.Addr != 0x44 && c.Addr != 0x45 {
		return nil, hal.Wrap(Name, "open", c, fmt.Errorf("%w: an SHT3x answers at 0x44 or 0x45 only", hal.ErrBadConn))
	}
	var cmd uint16
	var wait time.Duration
	// Maximum measurement durations, datasheet table 4.
	switch r := strings.ToLower(c.Option("repeatability", "high")); r {
	case "high":
		cmd, wait = CmdMeasureHigh, 15500*time.Microsecond
	case "medium":
		cmd, wait = CmdMeasureMedium, 6500*time.Microsecond
	case "low":
		cmd, wait = CmdMeasureLow, 4500*time.Microsecond
	default:
		return nil, hal.Wrap(Name, "open", c, fmt.Errorf("%w: option repeatability=%q (want high, medium or low)", hal.ErrBadConn, r))
	}
	bus, err := b.I2C(c.Bus)
	if err != nil {
		return nil, hal.Wrap(Name, "open", c, err)
	}
	d := &Dev{c: c, d: i2c.Dev{Bus: bus, Addr: uint16(c.Addr)}, cmd: [2]byte{byte(cmd >> 8), byte(cmd)}, wait: wait, sleep: time.Sleep}
	if _, err := d.Status(); err != nil {
		return nil, err
	}
	return d, nil
}

// Status reads the 16-bit status register (datasheet table 17).
func (d *Dev) Status() (uint16, error) {
	var r [3]byte
	if err := d.d.Tx([]byte{CmdReadStatus >> 8, CmdReadStatus & 0xff}, r[:]); err != nil {
		return 0, hal.Wrap(Name, "read status", d.c, err)
	}
	s, err := Word(r[:])
	if err != nil {
		return 0, hal.Wrap(Name, "read status", d.c, fmt.Errorf("%w (is this an SHT3x?)", err))
	}
	return s, nil
}

// Properties implements hal.Device.
func (d *Dev) Properties() []hal.Property { return props }

// Read implements hal.Device: one single-shot measurement.
func (d *Dev) Read() ([]hal.Value, error) {
	if err := d.d.Tx(d.cmd[:], nil); err != nil {
		return nil, hal.Wrap(Name, "read", d.c, err)
	}
	d.sleep(d.wait)
	var r [6]byte
	if err := d.d.Tx(nil, r[:]); err != nil {
		return nil, hal.Wrap(Name, "read", d.c, err)
	}
	t, h, err := Decode(r)
	if err != nil {
		return nil, hal.Wrap(Name, "read", d.c, err)
	}
	return []hal.Value{props[0].Float(t), props[1].Float(h)}, nil
}

// Write implements hal.Device; an SHT3x has nothing to write.
func (d *Dev) Write(v hal.Value) error { return hal.RefuseWrite(Name, d.c, props, v) }

// Close implements hal.Device. A single-shot SHT3x idles by itself.
func (d *Dev) Close() error { return nil }

// Decode converts a measurement (T MSB, T LSB, CRC, RH MSB, RH LSB, CRC) to
// °C and %RH, datasheet section 4.13.
func Decode(r [6]byte) (celsius, rh float64, err error) {
	st, err := Word(r[0:3])
	if err != nil {
		return 0, 0, fmt.Errorf("temperature word: %w", err)
	}
	srh, err := Word(r[3:6])
	if err != nil {
		return 0, 0, fmt.Errorf("humidity word: %w", err)
	}
	return -45 + 175*float64(st)/65535, 100 * float64(srh) / 65535, nil
}

// Word checks the CRC of a 3-byte word (MSB, LSB, CRC) and returns it.
func Word(b []byte) (uint16, error) {
	if len(b) != 3 {
		return 0, fmt.Errorf("%w: word of %d bytes, want 3", hal.ErrCRC, len(b))
	}
	if c := CRC8(b[:2]); c != b[2] {
		return 0, fmt.Errorf("%w: word %02x%02x has CRC 0x%02x, want 0x%02x", hal.ErrCRC, b[0], b[1], b[2], c)
	}
	return uint16(b[0])<<8 | uint16(b[1]), nil
}

// CRC8 is the SHT3x checksum, datasheet table 19: polynomial 0x31
// (x⁸+x⁵+x⁴+1), initial value 0xFF, no reflection, no final XOR.
// CRC8([]byte{0xBE, 0xEF}) is 0x92.
func CRC8(b []byte) byte {
	crc := byte(0xff)
	for _, x := range b {
		crc ^= x
		for range 8 {
			if crc&0x80 != 0 {
				crc = crc<<1 ^ 0x31
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
