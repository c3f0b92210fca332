// Package linux opens a gateway's real buses through the Linux kernel's
// user-space interfaces, using only the narrow periph.io/x/host/v3 packages
// that speak them: i2c-dev and spidev (host/v3/sysfs), the GPIO character
// device (host/v3/gpioioctl) and the w1 netlink connector (host/v3/netlink).
// It does not call host.Init, so no SoC register drivers are linked.
//
// A board describes which kernel device each name maps to in a [Layout].
package linux
