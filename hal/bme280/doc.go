// Package bme280 registers the "bme280" driver with hal: a Bosch BME280
// temperature, humidity and pressure sensor on I²C or SPI, read through
// periph.io/x/devices/v3/bmxx80 in forced mode (one measurement per Read).
//
// A Conn whose Bus starts with "SPI" ("SPI0.1") uses SPI; any other bus is
// I²C at Addr 0x76 (SDO low, the default) or 0x77. Properties:
// temperature (°C), humidity (%RH), pressure (hPa). A chip that answers with
// an id other than 0x60 (for example a BMP280, 0x58) is refused with
// hal.ErrChipID.
package bme280
