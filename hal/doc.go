// Package hal is Outpost's hardware access layer: a small driver interface
// for sensors and actuators, and a registry of drivers by name.
//
// A driver opens a Device from a [Conn] (bus, address, pin, chip select,
// options) against [Buses], which a board provides: real Linux buses on a
// gateway, the simulator on a laptop, or periph's recorded-traffic fakes in
// tests. Drivers take periph.io's tiny interfaces (i2c.Bus, spi.Port,
// gpio.PinIO, onewire.Bus), so the same code runs on all three.
//
// Drivers register themselves at init, like periph's i2creg; import
// outpost.dev/hal/all for every driver, or a single driver package for a
// smaller binary. This package itself imports no driver.
//
// Errors returned by Open, Read and Write are *Error values naming the driver,
// the bus, address and pin, and wrap one of the sentinel errors (ErrNACK,
// ErrNoBus, ErrChipID, ...) so callers can tell what went wrong with
// errors.Is.
package hal
