package sim

import (
	"fmt"
	"math"
	"slices"
	"sync"

	"periph.io/x/conn/v3/onewire"
)

// OneWire is a simulated 1-wire bus; it implements onewire.Bus. Each Tx
// starts with a reset, then a ROM command: Skip ROM (0xCC) or Match ROM
// (0x55 and 8 address bytes). Nobody selected reads as all ones, like an
// idle bus.
type OneWire struct {
	name string
	mu   sync.Mutex
	devs map[onewire.Address]*DS18B20
}

// NewOneWire returns an empty bus.
func NewOneWire(name string) *OneWire {
	return &OneWire{name: name, devs: map[onewire.Address]*DS18B20{}}
}

// Attach puts a DS18B20 on the bus.
func (b *OneWire) Attach(d *DS18B20) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.devs[d.Addr] = d
}

// String implements onewire.Bus.
func (b *OneWire) String() string { return b.name }

// Search implements onewire.Bus.
func (b *OneWire) Search(alarmOnly bool) ([]onewire.Address, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var all []onewire.Address
	for a := range b.devs {
		if !alarmOnly {
			all = append(all, a)
		}
	}
	slices.Sort(all)
	return all, nil
}

// Tx implements onewire.Bus.
func (b *OneWire) Tx(w, r []byte, _ onewire.Pullup) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range r {
		r[i] = 0xff
	}
	if len(w) == 0 {
		return nil
	}
	var sel []*DS18B20
	switch w[0] {
	case 0xCC: // Skip ROM: every device
		for _, d := range b.devs {
			sel = append(sel, d)
		}
		w = w[1:]
	case 0x55: // Match ROM
		if len(w) < 9 {
			return fmt.Errorf("sim %s: short Match ROM", b.name)
		}
		var a onewire.Address
		for i := range 8 {
			a |= onewire.Address(w[1+i]) << (8 * i)
		}
		if d, ok := b.devs[a]; ok {
			sel = append(sel, d)
		}
		w = w[9:]
	default:
		return fmt.Errorf("sim %s: ROM command 0x%02x not simulated", b.name, w[0])
	}
	for _, d := range sel {
		d.function(w, r)
	}
	return nil
}

// DS18B20 simulates a Maxim DS18B20 (datasheet: function commands table,
// memory map figure 7): Convert T (0x44), Read Scratchpad (0xBE), Write
// Scratchpad (0x4E), Copy Scratchpad (0x48).
type DS18B20 struct {
	Addr onewire.Address
	w    *World
	spad [9]byte
}

// NewDS18B20 returns a DS18B20 with the given 48-bit serial, in its
// power-on state (85 °C, 12-bit resolution).
func NewDS18B20(w *World, serial uint64) *DS18B20 {
	a := onewire.Address(serial&0xffffffffffff)<<8 | 0x28
	var rom [7]byte
	for i := range rom {
		rom[i] = byte(a >> (8 * i))
	}
	a |= onewire.Address(onewire.CalcCRC(rom[:])) << 56
	d := &DS18B20{Addr: a, w: w}
	d.spad = [9]byte{0x50, 0x05, 0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10}
	d.spad[8] = onewire.CalcCRC(d.spad[:8])
	return d
}

func (d *DS18B20) function(w, r []byte) {
	if len(w) == 0 {
		return
	}
	switch w[0] {
	case 0x44: // Convert T at the configured resolution
		bits := 9 + int(d.spad[4]>>5&3)
		raw := int16(math.Round(d.w.ProbeTemperature() * 16))
		raw &^= int16(1)<<(12-bits) - 1 // undefined low bits read 0
		d.spad[0], d.spad[1] = byte(raw), byte(uint16(raw)>>8)
	case 0xBE: // Read Scratchpad
		d.spad[8] = onewire.CalcCRC(d.spad[:8])
		copy(r, d.spad[:])
	case 0x4E: // Write Scratchpad: TH, TL, config
		if len(w) >= 4 {
			d.spad[2], d.spad[3], d.spad[4] = w[1], w[2], (w[3]|0x1F)&^0x80
		}
	case 0x48: // Copy Scratchpad to EEPROM: nothing to keep
	}
}
