// Package sht3x registers the "sht3x" driver with hal: a Sensirion SHT30,
// SHT31 or SHT35 temperature and humidity sensor on I²C, read with
// single-shot measurements (no clock stretching) and a CRC check on every
// word, as in the SHT3x-DIS datasheet.
//
// Addr is 0x44 (ADDR pin low, the default) or 0x45. Option repeatability:
// high (default, 15.5 ms), medium (6.5 ms) or low (4.5 ms). Properties:
// temperature (°C), humidity (%RH). Open reads the status register, so a
// missing sensor fails at open with hal.ErrNACK and a chip that does not
// speak the SHT3x protocol with hal.ErrCRC.
package sht3x
