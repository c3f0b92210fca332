// Package mcp3008 registers the "mcp3008" driver with hal: a Microchip
// MCP3008 8-channel 10-bit ADC on SPI (mode 0, 1 MHz), using the 3-byte
// transfer of datasheet section 6.1 (figure 6-1).
//
// Bus is "SPI0.0" (or "SPI0" with ChipSelect). Options: channel (0–7,
// default 0), differential (true pairs CH0/CH1, CH2/CH3, …; default false)
// and vref (volts, default 3.3). Properties: voltage (V), raw (0–1023).
package mcp3008
