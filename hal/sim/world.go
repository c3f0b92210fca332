package sim

import (
	"math"
	"time"
)

// World is the simulated environment every chip measures.
type World struct {
	start time.Time
	now   func() time.Time
}

// NewWorld returns a World on the given clock (time.Now when nil).
func NewWorld(now func() time.Time) *World {
	if now == nil {
		now = time.Now
	}
	return &World{start: now(), now: now}
}

func (w *World) wave(period time.Duration, phase float64) float64 {
	t := w.now().Sub(w.start).Seconds()
	return math.Sin(2*math.Pi*t/period.Seconds() + phase)
}

// Temperature is the air temperature in °C: 21 ± 1.5 over 10 minutes.
func (w *World) Temperature() float64 { return 21 + 1.5*w.wave(10*time.Minute, 0) }

// Humidity is the relative humidity in %RH: 45 ± 5 over 15 minutes.
func (w *World) Humidity() float64 { return 45 + 5*w.wave(15*time.Minute, 1) }

// Pressure is the air pressure in hPa: 1013.25 ± 2 over an hour.
func (w *World) Pressure() float64 { return 1013.25 + 2*w.wave(time.Hour, 2) }

// ProbeTemperature is the temperature of the 1-wire probe in °C:
// 19.5 ± 1 over 5 minutes.
func (w *World) ProbeTemperature() float64 { return 19.5 + w.wave(5*time.Minute, 3) }

// Voltage is the analog input ch (0–7) in volts: 1.65 ± 1.2 over a minute,
// each channel out of phase.
func (w *World) Voltage(ch int) float64 { return 1.65 + 1.2*w.wave(time.Minute, float64(ch)) }
