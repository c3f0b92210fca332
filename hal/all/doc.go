// Package all registers every hal driver. Import it for its side effect:
//
//	import _ "outpost.dev/hal/all"
//
// Each driver family can be compiled out with a build tag for the smallest
// gateways: hal_no_bme280, hal_no_sht3x, hal_no_ads1115, hal_no_mcp3008,
// hal_no_ds18b20, hal_no_pins.
package all
