package sim

import (
	"fmt"
	"sync"
	"syscall"

	"periph.io/x/conn/v3/physic"
)

// I2CDevice is a simulated chip on an I²C bus: one combined write-then-read
// transaction, as i2c.Bus.Tx issues it.
type I2CDevice interface {
	Tx(w, r []byte) error
}

// I2C is a simulated I²C bus; it implements i2c.Bus.
type I2C struct {
	name string
	mu   sync.Mutex
	devs map[uint16]I2CDevice
}

// NewI2C returns an empty bus.
func NewI2C(name string) *I2C { return &I2C{name: name, devs: map[uint16]I2CDevice{}} }

// Attach puts a chip at addr, replacing any there.
func (b *I2C) Attach(addr uint16, d I2CDevice) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.devs[addr] = d
}

// Detach removes the chip at addr: it NACKs from then on.
func (b *I2C) Detach(addr uint16) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.devs, addr)
}

// String implements i2c.Bus.
func (b *I2C) String() string { return b.name }

// SetSpeed implements i2c.Bus.
func (b *I2C) SetSpeed(physic.Frequency) error { return nil }

// Tx implements i2c.Bus. Nobody at addr is a NACK, reported as Linux
// i2c-dev reports it.
func (b *I2C) Tx(addr uint16, w, r []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	d, ok := b.devs[addr]
	if !ok {
		return nack(b.name, addr)
	}
	return d.Tx(w, r)
}

func nack(bus string, addr uint16) error {
	return fmt.Errorf("sim %s: address 0x%02x: %w", bus, addr, syscall.EREMOTEIO)
}
