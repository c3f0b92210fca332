// Package ads1115 registers the "ads1115" driver with hal: a TI ADS1115
// 16-bit ADC on I²C, read in single-shot mode through
// periph.io/x/devices/v3/ads1x15.
//
// Addr is 0x48 (ADDR to GND, the default) to 0x4B. Options: channel (0–3
// single-ended, or 0-1, 0-3, 1-3, 2-3 differential; default 0), range (full
// scale in volts, rounded up to 0.256, 0.512, 1.024, 2.048, 4.096 or 6.144;
// default 4.096) and rate (samples per second, default 128). Properties:
// voltage (V) and raw (the signed 16-bit conversion result).
//
// The ADS1115 has no id register: a missing chip shows as hal.ErrNACK.
// Two Devices on the same chip must not be read at the same time.
package ads1115
