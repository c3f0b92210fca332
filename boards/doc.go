// Package boards defines the gateways Outpost supports: for each, the Go
// target to build for, the names of buses and pins a Device may use ("I2C1",
// "SPI0.0", "GPIO17", "W1"), how those map to kernel devices, and how the
// board is recognised from /proc/device-tree/model.
//
// Boards register by name like hal drivers do: Lookup("rpi4"), or Detect to
// recognise the machine the agent runs on. The "sim" board opens the
// software simulator of outpost.dev/hal/sim instead of kernel devices.
package boards
