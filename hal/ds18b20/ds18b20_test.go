package ds18b20

import (
	"errors"
	"math"
	"testing"

	"periph.io/x/conn/v3/onewire"
	"periph.io/x/conn/v3/onewire/onewiretest"

	"outpost.dev/hal"
)

// rom is 28-0000000ab1c2 with its CRC in the top byte.
var rom = func() onewire.Address {
	a, err := ParseROM("28-0000000ab1c2")
	if err != nil {
		panic(err)
	}
	return a
}()

func match(cmd ...byte) []byte {
	b := []byte{0x55}
	for i := range 8 {
		b = append(b, byte(rom>>(8*i)))
	}
	return append(b, cmd...)
}

// scratchpad is the 9-byte scratchpad (datasheet figure 7): temperature
// LSB/MSB, TH, TL, configuration, 3 reserved bytes, CRC.
func scratchpad(temp uint16, config byte) []byte {
	b := []byte{byte(temp), byte(temp >> 8), 0x4B, 0x46, config, 0xFF, 0x0C, 0x10}
	return append(b, onewire.CalcCRC(b))
}

func TestPlayback(t *testing.T) {
	// Temperature/data relationship, datasheet table 1.
	tests := []struct {
		raw  uint16
		want float64
	}{
		{0x0191, 25.0625},
		{0x00A2, 10.125},
		{0x0008, 0.5},
		{0xFF5E, -10.125},
		{0xFE6F, -25.0625},
	}
	for _, tt := range tests {
		bus := &onewiretest.Playback{Ops: []onewiretest.IO{
			// Open: read the scratchpad; it is at 12 bits (config 0x7F), so
			// write 9 bits (config 0x1F) and copy it to EEPROM.
			{W: match(0xBE), R: scratchpad(0x0550, 0x7F), Pull: onewire.WeakPullup},
			{W: match(0x4E, 0x00, 0x00, 0x1F), Pull: onewire.WeakPullup},
			{W: match(0x48), Pull: onewire.StrongPullup},
			// Read: Convert T, then Read Scratchpad.
			{W: match(0x44), Pull: onewire.StrongPullup},
			{W: match(0xBE), R: scratchpad(tt.raw, 0x1F), Pull: onewire.WeakPullup},
		}}
		d, err := hal.Open(&hal.BusMap{OneWireBuses: map[string]onewire.Bus{"W1": bus}}, Name,
			hal.Conn{Bus: "W1", Options: map[string]string{"rom": "28-0000000ab1c2", "resolution": "9"}})
		if err != nil {
			t.Fatal(err)
		}
		vs, err := d.Read()
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(vs[0].Num-tt.want) > 1e-9 {
			t.Errorf("raw %#04x: got %v, want %v °C", tt.raw, vs[0], tt.want)
		}
		if err := bus.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestErrors(t *testing.T) {
	silent := make([]byte, 9)
	for i := range silent {
		silent[i] = 0xFF
	}
	badCRC := scratchpad(0x0191, 0x1F)
	badCRC[8] ^= 1
	tests := []struct {
		name string
		ops  []onewiretest.IO
		conn hal.Conn
		want error
	}{
		{"no answer", []onewiretest.IO{{W: match(0xBE), R: silent, Pull: onewire.WeakPullup}},
			hal.Conn{Bus: "W1", Addr: uint64(rom)}, hal.ErrNACK},
		{"bad CRC", []onewiretest.IO{{W: match(0xBE), R: badCRC, Pull: onewire.WeakPullup}},
			hal.Conn{Bus: "W1", Addr: uint64(rom)}, hal.ErrCRC},
		{"not a DS18B20", nil, hal.Conn{Bus: "W1", Options: map[string]string{"rom": "10-0000000ab1c2"}}, hal.ErrChipID},
		{"bad rom", nil, hal.Conn{Bus: "W1", Options: map[string]string{"rom": "28-xyz"}}, hal.ErrBadConn},
		{"no bus", nil, hal.Conn{Bus: "W2", Addr: uint64(rom)}, hal.ErrNoBus},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bus := &onewiretest.Playback{Ops: tt.ops}
			_, err := hal.Open(&hal.BusMap{OneWireBuses: map[string]onewire.Bus{"W1": bus}}, Name, tt.conn)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			t.Log(err)
		})
	}
}

func TestROM(t *testing.T) {
	if s := FormatROM(rom); s != "28-0000000ab1c2" {
		t.Fatal(s)
	}
	var b [8]byte
	for i := range b {
		b[i] = byte(rom >> (8 * i))
	}
	if !onewire.CheckCRC(b[:]) {
		t.Fatalf("ParseROM left a bad CRC in %016x", uint64(rom))
	}
	a, err := ParseROM("c2000000000ab128")
	if err != nil || a != 0xc2000000000ab128 {
		t.Fatal(a, err)
	}
}
