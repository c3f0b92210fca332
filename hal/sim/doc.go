// Package sim simulates a gateway's buses and sensors in software, as
// periph.io bus implementations that answer the chips' real register
// protocols: the hal drivers run against it exactly as against hardware.
//
// [New] builds the standard layout used by the "sim" board:
//
//	I2C1    BME280 at 0x76, SHT3x at 0x44, ADS1115 at 0x48
//	SPI0.0  MCP3008
//	SPI0.1  BME280
//	GPIO0…GPIO27  latching outputs; inputs driven with Pin.Drive
//	W1      one DS18B20 (ROM 28-00000000a1b2)
//
// An I²C address where nothing is simulated answers EREMOTEIO, as Linux
// i2c-dev does for a NACK. Readings follow slow sines around plausible room
// values (about 21 °C, 45 %RH, 1013 hPa), computed from a clock that tests
// can replace.
package sim
