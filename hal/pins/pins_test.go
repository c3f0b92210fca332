package pins_test

import (
	"errors"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/conn/v3/physic"

	"outpost.dev/hal"
	_ "outpost.dev/hal/pins"
)

func open(t *testing.T, driver string, p gpio.PinIO, opts map[string]string) hal.Device {
	t.Helper()
	d, err := hal.Open(&hal.BusMap{GPIOPins: map[string]gpio.PinIO{"GPIO5": p}}, driver, hal.Conn{Pin: "GPIO5", Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func read(t *testing.T, d hal.Device) hal.Value {
	t.Helper()
	vs, err := d.Read()
	if err != nil {
		t.Fatal(err)
	}
	return vs[0]
}

func TestOut(t *testing.T) {
	tests := []struct {
		activeLow bool
		on        bool
		level     gpio.Level
	}{
		{false, true, gpio.High},
		{false, false, gpio.Low},
		{true, true, gpio.Low},
		{true, false, gpio.High},
	}
	for _, tt := range tests {
		p := &gpiotest.Pin{N: "GPIO5", L: !tt.level}
		opts := map[string]string{}
		if tt.activeLow {
			opts["activeLow"] = "true"
		}
		d := open(t, "gpio-out", p, opts)
		if err := d.Write(hal.Value{Name: "on", Type: hal.Bool, Bool: tt.on}); err != nil {
			t.Fatal(err)
		}
		if p.Read() != tt.level {
			t.Errorf("%+v: pin at %v", tt, p.Read())
		}
		if v := read(t, d); v.Bool != tt.on {
			t.Errorf("%+v: read back %v", tt, v)
		}
	}
}

func TestOutInitialAndErrors(t *testing.T) {
	p := &gpiotest.Pin{N: "GPIO5"}
	d := open(t, "gpio-out", p, map[string]string{"initial": "true"})
	if !p.Read() {
		t.Fatal("initial level not driven")
	}
	if err := d.Write(hal.Value{Name: "level", Type: hal.Bool}); !errors.Is(err, hal.ErrUnknownProperty) {
		t.Fatal(err)
	}
	if err := d.Write(hal.Value{Name: "on", Type: hal.Float, Num: 1}); err == nil {
		t.Fatal("float accepted for a bool")
	}
	_, err := hal.Open(&hal.BusMap{}, "gpio-out", hal.Conn{Pin: "GPIO99"})
	if !errors.Is(err, hal.ErrNoPin) {
		t.Fatal(err)
	}
	_, err = hal.Open(&hal.BusMap{}, "gpio-out", hal.Conn{})
	if !errors.Is(err, hal.ErrBadConn) {
		t.Fatal(err)
	}
}

func TestInEdges(t *testing.T) {
	p := &gpiotest.Pin{N: "GPIO5", EdgesChan: make(chan gpio.Level, 1)}
	d := open(t, "gpio-in", p, map[string]string{"pull": "down"})
	if v := read(t, d); v.Bool || p.P != gpio.PullDown {
		t.Fatalf("pulled-down input: %v, pull %v", v, p.P)
	}
	w := d.(hal.Watcher)
	p.EdgesChan <- gpio.High
	if !w.Wait(time.Second) {
		t.Fatal("edge missed")
	}
	if v := read(t, d); !v.Bool {
		t.Fatal("level after rising edge")
	}
	if w.Wait(time.Millisecond) {
		t.Fatal("edge without a change")
	}
	if err := d.Write(hal.Value{Name: "level", Type: hal.Bool}); !errors.Is(err, hal.ErrReadOnly) {
		t.Fatal(err)
	}
	if _, err := hal.Open(&hal.BusMap{GPIOPins: map[string]gpio.PinIO{"GPIO5": p}}, "gpio-in", hal.Conn{Pin: "GPIO5", Options: map[string]string{"edge": "sideways"}}); !errors.Is(err, hal.ErrBadConn) {
		t.Fatal(err)
	}
}

func TestPWM(t *testing.T) {
	p := &gpiotest.Pin{N: "GPIO5"}
	d := open(t, "pwm", p, map[string]string{"frequency": "25000"})
	for _, tt := range []struct {
		v    hal.Value
		duty gpio.Duty
		f    physic.Frequency
	}{
		{hal.Value{Name: "duty", Type: hal.Float, Num: 50}, gpio.DutyHalf, 25 * physic.KiloHertz},
		{hal.Value{Name: "frequency", Type: hal.Float, Num: 100}, gpio.DutyHalf, 100 * physic.Hertz},
		{hal.Value{Name: "duty", Type: hal.Float, Num: 100}, gpio.DutyMax, 100 * physic.Hertz},
	} {
		if err := d.Write(tt.v); err != nil {
			t.Fatal(err)
		}
		if p.D != tt.duty || p.F != tt.f {
			t.Errorf("after %v: pin %v at %v", tt.v, p.D, p.F)
		}
	}
	vs, _ := d.Read()
	if vs[0].Num != 100 || vs[1].Num != 100 {
		t.Errorf("read %v", vs)
	}
	if err := d.Write(hal.Value{Name: "duty", Type: hal.Float, Num: -1}); !errors.Is(err, hal.ErrBadConn) {
		t.Fatal(err)
	}
	_, err := hal.Open(&hal.BusMap{GPIOPins: map[string]gpio.PinIO{"GPIO5": gpio.INVALID}}, "pwm", hal.Conn{Pin: "GPIO5"})
	if !errors.Is(err, hal.ErrUnsupported) {
		t.Fatalf("PWM on a pin without it: %v", err)
	}
	t.Log(err)
}
