package sim

import (
	"math"
	"sync"
	"syscall"
)

// SHT3x simulates a Sensirion SHT3x (SHT3x-DIS datasheet): single-shot
// measurement commands 0x2400/0x240B/0x2416, status 0xF32D, soft reset
// 0x30A2. Reading before a measurement was started is a NACK, as on the
// chip.
type SHT3x struct {
	w       *World
	mu      sync.Mutex
	result  []byte
	status  uint16
	BadCRC  bool // corrupt the CRC of every word, to test the driver's check
	Missing bool // NACK everything, as an unplugged sensor
}

// NewSHT3x returns an SHT3x just after power-on (status 0x8010: alert
// pending, reset detected).
func NewSHT3x(w *World) *SHT3x { return &SHT3x{w: w, status: 0x8010} }

// Tx implements I2CDevice.
func (d *SHT3x) Tx(w, r []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.Missing {
		return syscall.EREMOTEIO
	}
	if len(w) == 2 {
		switch uint16(w[0])<<8 | uint16(w[1]) {
		case 0x2400, 0x240B, 0x2416:
			t := uint16(math.Round((d.w.Temperature() + 45) / 175 * 65535))
			h := uint16(math.Round(d.w.Humidity() / 100 * 65535))
			d.result = append(d.word(t), d.word(h)...)
		case 0xF32D:
			d.result = d.word(d.status)
		case 0x30A2:
			d.status, d.result = 0x0010, nil
		default:
			return syscall.EREMOTEIO // unknown command: the chip NACKs it
		}
	} else if len(w) != 0 {
		return syscall.EREMOTEIO
	}
	if len(r) == 0 {
		return nil
	}
	if d.result == nil {
		return syscall.EREMOTEIO // no data ready
	}
	copy(r, d.result)
	d.result = nil
	return nil
}

func (d *SHT3x) word(v uint16) []byte {
	b := []byte{byte(v >> 8), byte(v), 0}
	b[2] = crc8(b[:2])
	if d.BadCRC {
		b[2] ^= 0x5a
	}
	return b
}

// crc8 is the SHT3x CRC: polynomial 0x31, init 0xFF (datasheet table 19).
func crc8(b []byte) byte {
	c := byte(0xff)
	for _, x := range b {
		c ^= x
		for range 8 {
			if c&0x80 != 0 {
				c = c<<1 ^ 0x31
			} else {
				c <<= 1
			}
		}
	}
	return c
}
