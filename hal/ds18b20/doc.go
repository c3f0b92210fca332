// Package ds18b20 registers the "ds18b20" driver with hal: a Maxim DS18B20
// 1-wire thermometer, read through periph.io/x/devices/v3/ds18b20.
//
// Bus names the 1-wire bus ("W1"). Addr is the 64-bit ROM code, or option
// rom gives it as Linux writes it under /sys/bus/w1/devices ("28-0316a279b1ff");
// with neither, the bus is searched and its only DS18B20 is used. Option
// resolution: 9–12 bits (default 12; a conversion takes 94 ms at 9 bits and
// 750 ms at 12). Property: temperature (°C).
package ds18b20
