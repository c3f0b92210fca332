package ads1115_test

import (
	"errors"
	"math"
	"testing"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"

	"outpost.dev/hal"
	_ "outpost.dev/hal/ads1115"
)

func TestPlayback(t *testing.T) {
	// Config register (pointer 0x01, datasheet table 8): OS=1 (start a
	// single conversion), MUX, PGA, MODE=1 (single-shot), DR, COMP_QUE=11
	// (comparator off). The result is read from pointer 0x00.
	tests := []struct {
		name   string
		opts   map[string]string
		config []byte
		result []byte
		wantV  float64
		wantR  float64
	}{
		// MUX=100 (AIN0), PGA=001 (±4.096 V), DR=100 (128 SPS): 0xC383.
		{"ain0 4.096V", nil, []byte{0x01, 0xC3, 0x83}, []byte{0x40, 0x00}, 2.048, 16384},
		// MUX=111 (AIN3), PGA=010 (±2.048 V), DR=111 (860 SPS): 0xF5E3.
		{"ain3 2.048V 860sps", map[string]string{"channel": "3", "range": "2", "rate": "860"}, []byte{0x01, 0xF5, 0xE3}, []byte{0x7F, 0xFF}, 2.048 * 32767 / 32768, 32767},
		// MUX=000 (AIN0−AIN1), PGA=101 (±0.256 V), DR=000 (8 SPS): 0x8B03.
		{"diff 0-1 0.256V", map[string]string{"channel": "0-1", "range": "0.25", "rate": "8"}, []byte{0x01, 0x8B, 0x03}, []byte{0xC0, 0x00}, -0.128, -16384},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conv := []i2ctest.IO{{Addr: 0x49, W: tt.config}, {Addr: 0x49, W: []byte{0x00}, R: tt.result}}
			bus := &i2ctest.Playback{Ops: append(append([]i2ctest.IO{}, conv...), conv...)} // open probes once, then Read
			d, err := hal.Open(&hal.BusMap{I2CBuses: map[string]i2c.Bus{"I2C1": bus}}, "ads1115",
				hal.Conn{Bus: "I2C1", Addr: 0x49, Options: tt.opts})
			if err != nil {
				t.Fatal(err)
			}
			vs, err := d.Read()
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(vs[0].Num-tt.wantV) > 1e-4 || vs[1].Num != tt.wantR {
				t.Errorf("got %v, %v; want %v V, raw %v", vs[0], vs[1], tt.wantV, tt.wantR)
			}
			if err := bus.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

type nackBus struct{ i2ctest.Playback }

func (*nackBus) Tx(uint16, []byte, []byte) error {
	return errors.New("sysfs-i2c: no such device or address")
}

func TestErrors(t *testing.T) {
	buses := &hal.BusMap{I2CBuses: map[string]i2c.Bus{"I2C1": &nackBus{}}}
	for _, tt := range []struct {
		conn hal.Conn
		want error
	}{
		{hal.Conn{Bus: "I2C1"}, hal.ErrNACK},
		{hal.Conn{Bus: "I2C1", Options: map[string]string{"channel": "4"}}, hal.ErrBadConn},
		{hal.Conn{Bus: "I2C1", Options: map[string]string{"range": "10"}}, hal.ErrBadConn},
		{hal.Conn{Bus: "I2C1", Options: map[string]string{"chanel": "3"}}, hal.ErrUnknownOption},
		{hal.Conn{Bus: "I2C1", Addr: 0x50}, hal.ErrBadConn},
	} {
		_, err := hal.Open(buses, "ads1115", tt.conn)
		if !errors.Is(err, tt.want) {
			t.Errorf("%v: got %v, want %v", tt.conn, err, tt.want)
		}
		t.Log(err)
	}
}
