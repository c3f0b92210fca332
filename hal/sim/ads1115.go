package sim

import (
	"math"
	"sync"
)

// ADS1115 simulates a TI ADS1115 (datasheet section 8.6): a pointer
// register selecting conversion (0x00), config (0x01), lo_thresh (0x02) and
// hi_thresh (0x03). Writing config with OS=1 converts at once.
type ADS1115 struct {
	w    *World
	mu   sync.Mutex
	ptr  byte
	regs [4]uint16
}

// NewADS1115 returns an ADS1115 with its reset register values.
func NewADS1115(w *World) *ADS1115 {
	return &ADS1115{w: w, regs: [4]uint16{0, 0x8583, 0x8000, 0x7fff}}
}

// fullScale is the PGA range in volts for config bits 11:9 (table 8).
var fullScale = [8]float64{6.144, 4.096, 2.048, 1.024, 0.512, 0.256, 0.256, 0.256}

// Tx implements I2CDevice.
func (d *ADS1115) Tx(w, r []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(w) > 0 {
		d.ptr = w[0] & 3
	}
	if len(w) >= 3 {
		v := uint16(w[1])<<8 | uint16(w[2])
		d.regs[d.ptr] = v
		if d.ptr == 1 && v&0x8000 != 0 {
			d.convert(v)
			d.regs[1] |= 0x8000 // OS reads 1: not converting
		}
	}
	for i := 0; i < len(r); i += 2 {
		v := d.regs[d.ptr]
		r[i] = byte(v >> 8)
		if i+1 < len(r) {
			r[i+1] = byte(v)
		}
	}
	return nil
}

func (d *ADS1115) convert(cfg uint16) {
	var v float64
	switch mux := cfg >> 12 & 7; mux {
	case 0:
		v = d.w.Voltage(0) - d.w.Voltage(1)
	case 1:
		v = d.w.Voltage(0) - d.w.Voltage(3)
	case 2:
		v = d.w.Voltage(1) - d.w.Voltage(3)
	case 3:
		v = d.w.Voltage(2) - d.w.Voltage(3)
	default:
		v = d.w.Voltage(int(mux - 4))
	}
	fs := fullScale[cfg>>9&7]
	code := math.Round(v / fs * 32768)
	code = max(min(code, 32767), -32768)
	d.regs[0] = uint16(int16(code))
}
