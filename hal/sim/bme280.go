package sim

import "sync"

// BME280 simulates a Bosch BME280 register file (datasheet section 5.3,
// memory map table 18) on I²C or SPI. Readings are taken from the World when
// ctrl_meas (0xF4) selects forced mode, or on every data read in normal mode.
type BME280 struct {
	w    *World
	mu   sync.Mutex
	regs [256]byte
	cal  bmeCal
	// ChipID is returned from register 0xD0; set it to simulate a BMP280
	// (0x58) or a wrong chip.
	ChipID byte
}

// Register addresses from the datasheet's memory map.
const (
	bmeRegCalib00  = 0x88 // calib00…calib25: dig_T1…dig_H1
	bmeRegID       = 0xD0
	bmeRegReset    = 0xE0
	bmeRegCalib26  = 0xE1 // calib26…calib32: dig_H2…dig_H6
	bmeRegCtrlHum  = 0xF2
	bmeRegStatus   = 0xF3
	bmeRegCtrlMeas = 0xF4
	bmeRegConfig   = 0xF5
	bmeRegData     = 0xF7 // press_msb … hum_lsb
)

// BMECalib is the trimming data the simulator reports: dig_T1…dig_P9 are
// the BMP280 datasheet's worked example (section 3.12), the humidity words
// come from a real BME280.
var BMECalib = [33]byte{
	0x70, 0x6B, 0x43, 0x67, 0x18, 0xFC, // dig_T1 27504, dig_T2 26435, dig_T3 -1000
	0x7D, 0x8E, 0x43, 0xD6, 0xD0, 0x0B, // dig_P1 36477, dig_P2 -10685, dig_P3 3024
	0x27, 0x0B, 0x8C, 0x00, 0xF9, 0xFF, // dig_P4 2855, dig_P5 140, dig_P6 -7
	0x8C, 0x3C, 0xF8, 0xC6, 0x70, 0x17, // dig_P7 15500, dig_P8 -14600, dig_P9 6000
	0x00, 0x4B, // reserved, dig_H1 75
	0x6E, 0x01, 0x00, 0x13, 0x05, 0x00, 0x1E, // dig_H2 366, dig_H3 0, dig_H4 309, dig_H5 0, dig_H6 30
}

// NewBME280 returns a BME280 in sleep mode after power-on.
func NewBME280(w *World) *BME280 {
	d := &BME280{w: w, ChipID: 0x60}
	copy(d.regs[bmeRegCalib00:], BMECalib[:26])
	copy(d.regs[bmeRegCalib26:], BMECalib[26:])
	d.cal = parseBMECal(d.regs[bmeRegCalib00:bmeRegCalib00+26], d.regs[bmeRegCalib26:bmeRegCalib26+7])
	// Power-on values of the data registers: 0x80000 / 0x8000 (skipped).
	copy(d.regs[bmeRegData:], []byte{0x80, 0, 0, 0x80, 0, 0, 0x80, 0})
	return d
}

// Tx implements I2CDevice: writes are (register, value) pairs (datasheet
// 6.2.1); a read returns consecutive registers from the one written.
func (d *BME280) Tx(w, r []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(r) > 0 {
		if len(w) == 0 {
			return nil
		}
		d.read(w[0], r)
		return nil
	}
	for i := 0; i+1 < len(w); i += 2 {
		d.write(w[i], w[i+1])
	}
	return nil
}

// spiTx is one SPI transfer (datasheet 6.3): bit 7 of the control byte is 1
// for a read, 0 for a write of (register, value) pairs with bit 7 cleared.
func (d *BME280) spiTx(w, r []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(w) == 0 {
		return nil
	}
	if w[0]&0x80 != 0 {
		if len(r) > 1 {
			d.read(w[0], r[1:])
		}
		return nil
	}
	for i := 0; i+1 < len(w); i += 2 {
		d.write(w[i]|0x80, w[i+1])
	}
	return nil
}

func (d *BME280) read(reg byte, r []byte) {
	if int(reg) <= bmeRegData && int(reg)+len(r) > bmeRegData && d.regs[bmeRegCtrlMeas]&3 == 3 {
		d.measure() // normal mode: always a fresh sample
	}
	d.regs[bmeRegID] = d.ChipID
	for i := range r {
		r[i] = d.regs[(int(reg)+i)&0xff]
	}
}

func (d *BME280) write(reg, v byte) {
	switch reg {
	case bmeRegReset:
		if v == 0xB6 {
			d.regs[bmeRegCtrlHum], d.regs[bmeRegCtrlMeas], d.regs[bmeRegConfig] = 0, 0, 0
		}
	case bmeRegCtrlHum, bmeRegConfig:
		d.regs[reg] = v
	case bmeRegCtrlMeas:
		d.regs[reg] = v
		if m := v & 3; m == 1 || m == 2 {
			d.measure()
			d.regs[reg] &^= 3 // back to sleep once done
		}
	}
}

// measure stores raw ADC values that the datasheet compensation turns back
// into the World's values. Oversampling "skipped" leaves 0x80000 / 0x8000.
func (d *BME280) measure() {
	t, p, h := d.w.Temperature(), d.w.Pressure()*100, d.w.Humidity()
	adcT := searchRaw(0, 1<<20-1, func(raw int32) bool { _, tc := d.cal.temp(raw); return tc >= t*100 })
	tFine, _ := d.cal.temp(adcT)
	// Pressure falls as adc_P rises.
	adcP := searchRaw(0, 1<<20-1, func(raw int32) bool { return float64(d.cal.press(raw, tFine))/256 <= p })
	adcH := searchRaw(0, 1<<16-1, func(raw int32) bool { return float64(d.cal.hum(raw, tFine))/1024 >= h })
	b := d.regs[bmeRegData:]
	if d.regs[bmeRegCtrlMeas]>>2&7 != 0 {
		b[0], b[1], b[2] = byte(adcP>>12), byte(adcP>>4), byte(adcP<<4)
	}
	if d.regs[bmeRegCtrlMeas]>>5 != 0 {
		b[3], b[4], b[5] = byte(adcT>>12), byte(adcT>>4), byte(adcT<<4)
	}
	if d.regs[bmeRegCtrlHum]&7 != 0 {
		b[6], b[7] = byte(adcH>>8), byte(adcH)
	}
}

// searchRaw returns the smallest raw in [lo, hi] for which ok holds (ok
// must be monotonic), or hi.
func searchRaw(lo, hi int32, ok func(int32) bool) int32 {
	for lo < hi {
		mid := lo + (hi-lo)/2
		if ok(mid) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

type bmeCal struct {
	t1                             uint16
	t2, t3                         int16
	p1                             uint16
	p2, p3, p4, p5, p6, p7, p8, p9 int16
	h1, h3                         uint8
	h2, h4, h5                     int16
	h6                             int8
}

func parseBMECal(a, h []byte) bmeCal {
	u := func(i int) uint16 { return uint16(a[i]) | uint16(a[i+1])<<8 }
	s := func(i int) int16 { return int16(u(i)) }
	return bmeCal{
		t1: u(0), t2: s(2), t3: s(4),
		p1: u(6), p2: s(8), p3: s(10), p4: s(12), p5: s(14), p6: s(16), p7: s(18), p8: s(20), p9: s(22),
		h1: a[25],
		h2: int16(h[0]) | int16(h[1])<<8, h3: h[2],
		h4: int16(int8(h[3]))<<4 | int16(h[4]&0x0f),
		h5: int16(int8(h[5]))<<4 | int16(h[4]>>4),
		h6: int8(h[6]),
	}
}

// temp is BME280_compensate_T_int32 (datasheet 4.2.3): t_fine and 0.01 °C.
func (c *bmeCal) temp(raw int32) (tFine int32, centi float64) {
	v1 := ((raw>>3 - int32(c.t1)<<1) * int32(c.t2)) >> 11
	v2 := (((raw>>4 - int32(c.t1)) * (raw>>4 - int32(c.t1)) >> 12) * int32(c.t3)) >> 14
	tFine = v1 + v2
	return tFine, float64((tFine*5 + 128) >> 8)
}

// press is BME280_compensate_P_int64 (datasheet 4.2.3): Pa in Q24.8.
func (c *bmeCal) press(raw, tFine int32) uint32 {
	v1 := int64(tFine) - 128000
	v2 := v1 * v1 * int64(c.p6)
	v2 += (v1 * int64(c.p5)) << 17
	v2 += int64(c.p4) << 35
	v1 = (v1*v1*int64(c.p3))>>8 + (v1*int64(c.p2))<<12
	v1 = ((int64(1)<<47 + v1) * int64(c.p1)) >> 33
	if v1 == 0 {
		return 0
	}
	p := 1048576 - int64(raw)
	p = ((p<<31 - v2) * 3125) / v1
	v1 = (int64(c.p9) * (p >> 13) * (p >> 13)) >> 25
	v2 = (int64(c.p8) * p) >> 19
	return uint32((p+v1+v2)>>8 + int64(c.p7)<<4)
}

// hum is bme280_compensate_H_int32 (datasheet 4.2.3): %RH in Q22.10.
func (c *bmeCal) hum(raw, tFine int32) uint32 {
	v := tFine - 76800
	x1 := (raw<<14 - int32(c.h4)<<20 - int32(c.h5)*v + 16384) >> 15
	x2 := ((((v*int32(c.h6))>>10)*(((v*int32(c.h3))>>11)+32768))>>10 + 2097152) * int32(c.h2)
	v = x1 * ((x2 + 8192) >> 14)
	v -= ((((v >> 15) * (v >> 15)) >> 7) * int32(c.h1)) >> 4
	v = max(v, 0)
	v = min(v, 419430400)
	return uint32(v >> 12)
}
