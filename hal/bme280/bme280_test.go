package bme280_test

import (
	"errors"
	"fmt"
	"math"
	"syscall"
	"testing"

	"periph.io/x/conn/v3/conntest"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/conn/v3/spi"
	"periph.io/x/conn/v3/spi/spitest"

	"outpost.dev/hal"
	_ "outpost.dev/hal/bme280"
)

// calib is calib00…calib25 (registers 0x88–0xA1): dig_T1…dig_P9 from the
// worked example in the BMP280 datasheet (section 3.12), then dig_H1.
var calib = []byte{
	0x70, 0x6B, 0x43, 0x67, 0x18, 0xFC, 0x7D, 0x8E, 0x43, 0xD6, 0xD0, 0x0B,
	0x27, 0x0B, 0x8C, 0x00, 0xF9, 0xFF, 0x8C, 0x3C, 0xF8, 0xC6, 0x70, 0x17,
	0x00, 0x4B,
}

// calibH is calib26…calib32 (registers 0xE1–0xE7): dig_H2…dig_H6.
var calibH = []byte{0x6E, 0x01, 0x00, 0x13, 0x05, 0x00, 0x1E}

// data is press_msb…hum_lsb (0xF7–0xFE): adc_P 415148 and adc_T 519888
// from the datasheet example, adc_H 0x6A00.
var data = []byte{0x65, 0x5A, 0xC0, 0x7E, 0xED, 0x00, 0x6A, 0x00}

// openOps is what bmxx80 sends at open with 4× oversampling.
func openOps(addr uint16) []i2ctest.IO {
	return []i2ctest.IO{
		{Addr: addr, W: []byte{0xD0}, R: []byte{0x60}}, // id
		{Addr: addr, W: []byte{0x88}, R: calib},
		{Addr: addr, W: []byte{0xE1}, R: calibH},
		// ctrl_meas sleep (osrs_t=osrs_p=4×), ctrl_hum 4×, config t_sb=1 s,
		// ctrl_meas again (datasheet 5.4.3: ctrl_hum takes effect after it).
		{Addr: addr, W: []byte{0xF4, 0x6C, 0xF2, 0x03, 0xF5, 0xA0, 0xF4, 0x6C}},
	}
}

var readOps = []i2ctest.IO{
	{Addr: 0x76, W: []byte{0xF4, 0x6D}},            // ctrl_meas: forced mode
	{Addr: 0x76, W: []byte{0xF3}, R: []byte{0x08}}, // status: measuring
	{Addr: 0x76, W: []byte{0xF3}, R: []byte{0x00}}, // status: done
	{Addr: 0x76, W: []byte{0xF7}, R: data},
}

func TestI2CPlayback(t *testing.T) {
	bus := &i2ctest.Playback{Ops: append(openOps(0x76), readOps...)}
	d, err := hal.Open(&hal.BusMap{I2CBuses: map[string]i2c.Bus{"I2C1": bus}}, "bme280", hal.Conn{Bus: "I2C1"})
	if err != nil {
		t.Fatal(err)
	}
	vs, err := d.Read()
	if err != nil {
		t.Fatal(err)
	}
	// Datasheet: T = 25.08 °C, p = 100653.27 Pa (int64 path: 100653.26).
	want := map[string]float64{"temperature": 25.08, "pressure": 1006.53, "humidity": math.NaN()}
	for _, v := range vs {
		w := want[v.Name]
		if math.IsNaN(w) {
			if v.Num < 20 || v.Num > 80 {
				t.Errorf("humidity %v", v)
			}
			continue
		}
		if math.Abs(v.Num-w) > 0.01 {
			t.Errorf("%s = %v, want %v", v.Name, v.Num, w)
		}
	}
	if err := bus.Close(); err != nil {
		t.Fatal(err)
	}
}

// spiPort wraps spitest.Playback to check the SPI mode bmxx80 asks for.
type spiPort struct{ spitest.Playback }

func (p *spiPort) Connect(f physic.Frequency, m spi.Mode, bits int) (spi.Conn, error) {
	if m != spi.Mode3 && m != spi.Mode0 {
		return nil, fmt.Errorf("mode %v", m)
	}
	return p.Playback.Connect(f, m, bits)
}

func TestSPIPlayback(t *testing.T) {
	// SPI (datasheet 6.3): reads send the register with bit 7 set and one
	// dummy byte per byte read; writes clear bit 7 of each register.
	spiRead := func(reg byte, r []byte) conntest.IO {
		return conntest.IO{W: append([]byte{reg}, make([]byte, len(r))...), R: append([]byte{0}, r...)}
	}
	p := &spiPort{Playback: spitest.Playback{Playback: conntest.Playback{Ops: []conntest.IO{
		spiRead(0xD0, []byte{0x60}),
		spiRead(0x88, calib),
		spiRead(0xE1, calibH),
		{W: []byte{0x74, 0x6C, 0x72, 0x03, 0x75, 0xA0, 0x74, 0x6C}},
		{W: []byte{0x74, 0x6D}},
		spiRead(0xF3, []byte{0x00}),
		spiRead(0xF7, data),
	}}}}
	d, err := hal.Open(&hal.BusMap{SPIPorts: map[string]spi.Port{"SPI0.1": p}}, "bme280", hal.Conn{Bus: "SPI0", ChipSelect: 1})
	if err != nil {
		t.Fatal(err)
	}
	vs, err := d.Read()
	if err != nil {
		t.Fatal(err)
	}
	if vs[0].Name != "temperature" || math.Abs(vs[0].Num-25.08) > 0.01 {
		t.Fatalf("got %v", vs)
	}
	if err := d.Close(); err != nil { // closes the port: all ops consumed
		t.Fatal(err)
	}
}

type nackBus struct{ i2ctest.Playback }

func (*nackBus) Tx(addr uint16, w, r []byte) error {
	return fmt.Errorf("sysfs-i2c: %v", syscall.EREMOTEIO) // text only, as periph reports it
}

func TestOpenErrors(t *testing.T) {
	tests := []struct {
		name string
		bus  i2c.Bus
		conn hal.Conn
		want error
	}{
		{"nack", &nackBus{}, hal.Conn{Bus: "I2C1"}, hal.ErrNACK},
		{"bmp280", &i2ctest.Playback{Ops: append([]i2ctest.IO{{Addr: 0x77, W: []byte{0xD0}, R: []byte{0x58}}},
			i2ctest.IO{Addr: 0x77, W: []byte{0x88}, R: calib},
			i2ctest.IO{Addr: 0x77, W: []byte{0xF4, 0x6C, 0xF5, 0xA0, 0xF4, 0x6C}})}, hal.Conn{Bus: "I2C1", Addr: 0x77}, hal.ErrChipID},
		{"not a bosch chip", &i2ctest.Playback{Ops: []i2ctest.IO{{Addr: 0x76, W: []byte{0xD0}, R: []byte{0x00}}}}, hal.Conn{Bus: "I2C1"}, hal.ErrChipID},
		{"bad address", &nackBus{}, hal.Conn{Bus: "I2C1", Addr: 0x40}, hal.ErrBadConn},
		{"no bus", &nackBus{}, hal.Conn{Bus: "I2C4"}, hal.ErrNoBus},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := hal.Open(&hal.BusMap{I2CBuses: map[string]i2c.Bus{"I2C1": tt.bus}}, "bme280", tt.conn)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			var he *hal.Error
			if !errors.As(err, &he) || he.Driver != "bme280" || he.Op != "open" {
				t.Fatalf("not a hal.Error naming the driver: %#v", err)
			}
			t.Log(err)
		})
	}
}
