package linux

import (
	"errors"
	"strings"
	"testing"

	"outpost.dev/hal"
)

func TestUnknownAndMissing(t *testing.T) {
	b := New(Layout{
		I2C: map[string]int{"I2C1": 1, "I2C250": 250},
		SPI: map[string]SPIDev{"SPI250.0": {Bus: 250}},
	})
	_, err := b.I2C("I2C7")
	if !errors.Is(err, hal.ErrNoBus) || !strings.Contains(err.Error(), "I2C1, I2C250") {
		t.Fatalf("unknown name: %v", err)
	}
	// No machine running the tests has /dev/i2c-250 or /dev/spidev250.0.
	_, err = b.I2C("I2C250")
	if !errors.Is(err, hal.ErrNoBus) || !strings.Contains(err.Error(), "/dev/i2c-250") {
		t.Fatalf("missing device: %v", err)
	}
	t.Log(err)
	_, err = b.SPI("SPI250.0")
	if !errors.Is(err, hal.ErrNoBus) || !strings.Contains(err.Error(), "/dev/spidev250.0") {
		t.Fatalf("missing device: %v", err)
	}
	_, err = b.Pin("GPIO17")
	if !errors.Is(err, hal.ErrNoPin) {
		t.Fatalf("unknown pin: %v", err)
	}
	_, err = b.OneWire("W1")
	if !errors.Is(err, hal.ErrNoBus) {
		t.Fatalf("unknown 1-wire bus: %v", err)
	}
}
