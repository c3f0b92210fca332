// Package all registers every hal driver. Import it for its side effect:
//
//	import _ "outpost.dev/hal/all"
//
// Each driver family can be compiled out with a build tag for the smallest
// gateways: outpost_no_bme280, outpost_no_sht3x, outpost_no_ads1115, outpost_no_mcp3008,
// outpost_no_ds18b20, outpost_no_pins.
package all
