package sim

import (
	"fmt"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/onewire"
	"periph.io/x/conn/v3/spi"

	"outpost.dev/hal"
)

// Sim is a simulated gateway with the standard layout; it implements
// hal.Buses. Its fields let tests reach the simulated chips.
type Sim struct {
	World *World

	I2C1    *I2C
	BME280  *BME280 // I2C1 0x76
	SHT3x   *SHT3x  // I2C1 0x44
	ADS1115 *ADS1115
	MCP3008 *MCP3008 // SPI0.0
	SPIBME  *BME280  // SPI0.1
	W1      *OneWire
	DS18B20 *DS18B20
	Pins    map[string]*Pin // GPIO0…GPIO27

	spi map[string]SPIDevice
}

// NumPins is the number of simulated GPIO pins.
const NumPins = 28

// New returns the standard simulated gateway on the given clock (time.Now
// when nil).
func New(now func() time.Time) *Sim {
	w := NewWorld(now)
	s := &Sim{
		World:   w,
		I2C1:    NewI2C("I2C1"),
		BME280:  NewBME280(w),
		SHT3x:   NewSHT3x(w),
		ADS1115: NewADS1115(w),
		MCP3008: NewMCP3008(w),
		SPIBME:  NewBME280(w),
		W1:      NewOneWire("W1"),
		DS18B20: NewDS18B20(w, 0xa1b2),
		Pins:    map[string]*Pin{},
	}
	s.I2C1.Attach(0x76, s.BME280)
	s.I2C1.Attach(0x44, s.SHT3x)
	s.I2C1.Attach(0x48, s.ADS1115)
	s.W1.Attach(s.DS18B20)
	s.spi = map[string]SPIDevice{"SPI0.0": s.MCP3008, "SPI0.1": s.SPIBME}
	for i := range NumPins {
		n := fmt.Sprintf("GPIO%d", i)
		s.Pins[n] = NewPin(n, i)
	}
	return s
}

// I2C implements hal.Buses.
func (s *Sim) I2C(name string) (i2c.Bus, error) {
	if name != "I2C1" {
		return nil, hal.NotFound(hal.ErrNoBus, "I²C", name, []string{"I2C1"})
	}
	return s.I2C1, nil
}

// SPI implements hal.Buses; each call returns a new port to the chip, like
// opening /dev/spidevB.C again.
func (s *Sim) SPI(name string) (spi.Port, error) {
	d, ok := s.spi[name]
	if !ok {
		return nil, hal.NotFound(hal.ErrNoBus, "SPI", name, []string{"SPI0.0", "SPI0.1"})
	}
	return &SPIPort{name: name, dev: d}, nil
}

// Pin implements hal.Buses.
func (s *Sim) Pin(name string) (gpio.PinIO, error) {
	p, ok := s.Pins[name]
	if !ok {
		names := make([]string, 0, len(s.Pins))
		for n := range s.Pins {
			names = append(names, n)
		}
		return nil, hal.NotFound(hal.ErrNoPin, "GPIO", name, names)
	}
	return p, nil
}

// OneWire implements hal.Buses.
func (s *Sim) OneWire(name string) (onewire.Bus, error) {
	if name != "W1" {
		return nil, hal.NotFound(hal.ErrNoBus, "1-wire", name, []string{"W1"})
	}
	return s.W1, nil
}

var _ hal.Buses = (*Sim)(nil)
