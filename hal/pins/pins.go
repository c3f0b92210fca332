package pins

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/physic"

	"outpost.dev/hal"
)

func init() {
	hal.Register("gpio-in", OpenIn, "pull", "edge", "activeLow")
	hal.Register("gpio-out", OpenOut, "activeLow", "initial")
	hal.Register("pwm", OpenPWM, "frequency")
}

var (
	levelProp = hal.Property{Name: "level", Type: hal.Bool, Access: hal.ReadOnly}
	onProp    = hal.Property{Name: "on", Type: hal.Bool, Access: hal.ReadWrite}
	dutyProp  = hal.Property{Name: "duty", Type: hal.Float, Unit: "%", Access: hal.ReadWrite}
	freqProp  = hal.Property{Name: "frequency", Type: hal.Float, Unit: "Hz", Access: hal.ReadWrite}
)

func pin(b hal.Buses, c hal.Conn) (gpio.PinIO, error) {
	if c.Pin == "" {
		return nil, fmt.Errorf("%w: no pin given", hal.ErrBadConn)
	}
	return b.Pin(c.Pin)
}

// In is an open gpio-in device.
type In struct {
	c   hal.Conn
	p   gpio.PinIO
	inv bool
}

// OpenIn opens a gpio-in device.
func OpenIn(b hal.Buses, c hal.Conn) (hal.Device, error) {
	p, err := pin(b, c)
	if err != nil {
		return nil, err
	}
	pull := gpio.PullNoChange
	switch v := strings.ToLower(c.Option("pull", "")); v {
	case "":
	case "up":
		pull = gpio.PullUp
	case "down":
		pull = gpio.PullDown
	case "float", "none":
		pull = gpio.Float
	default:
		return nil, fmt.Errorf("%w: option pull=%q (want up, down or float)", hal.ErrBadConn, v)
	}
	edge := gpio.BothEdges
	switch v := strings.ToLower(c.Option("edge", "both")); v {
	case "both":
	case "rising":
		edge = gpio.RisingEdge
	case "falling":
		edge = gpio.FallingEdge
	case "none":
		edge = gpio.NoEdge
	default:
		return nil, fmt.Errorf("%w: option edge=%q (want both, rising, falling or none)", hal.ErrBadConn, v)
	}
	inv, err := c.BoolOption("activeLow", false)
	if err != nil {
		return nil, err
	}
	if err := p.In(pull, edge); err != nil {
		return nil, fmt.Errorf("set %s as input: %w", p, err)
	}
	return &In{c: c, p: p, inv: inv}, nil
}

// Properties implements hal.Device.
func (d *In) Properties() []hal.Property { return []hal.Property{levelProp} }

// Read implements hal.Device.
func (d *In) Read() ([]hal.Value, error) {
	return []hal.Value{levelProp.Bool(bool(d.p.Read()) != d.inv)}, nil
}

// Write implements hal.Device.
func (d *In) Write(v hal.Value) error {
	return hal.RefuseWrite("gpio-in", d.c, d.Properties(), v)
}

// Wait implements hal.Watcher.
func (d *In) Wait(timeout time.Duration) bool { return d.p.WaitForEdge(timeout) }

// Close implements hal.Device; it turns edge detection off.
func (d *In) Close() error { return d.p.In(gpio.PullNoChange, gpio.NoEdge) }

// Out is an open gpio-out device.
type Out struct {
	c   hal.Conn
	p   gpio.PinIO
	inv bool
}

// OpenOut opens a gpio-out device and drives it to the initial level.
func OpenOut(b hal.Buses, c hal.Conn) (hal.Device, error) {
	p, err := pin(b, c)
	if err != nil {
		return nil, err
	}
	inv, err := c.BoolOption("activeLow", false)
	if err != nil {
		return nil, err
	}
	on, err := c.BoolOption("initial", false)
	if err != nil {
		return nil, err
	}
	d := &Out{c: c, p: p, inv: inv}
	if err := d.set(on); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *Out) set(on bool) error {
	if err := d.p.Out(gpio.Level(on != d.inv)); err != nil {
		return fmt.Errorf("drive %s: %w", d.p, err)
	}
	return nil
}

// Properties implements hal.Device.
func (d *Out) Properties() []hal.Property { return []hal.Property{onProp} }

// Read implements hal.Device: it reads the level back from the pin.
func (d *Out) Read() ([]hal.Value, error) {
	return []hal.Value{onProp.Bool(bool(d.p.Read()) != d.inv)}, nil
}

// Write implements hal.Device.
func (d *Out) Write(v hal.Value) error {
	if err := writeErr("gpio-out", d.c, v, &onProp); err != nil {
		return err
	}
	return hal.Wrap("gpio-out", "write", d.c, d.set(v.Bool))
}

// Close implements hal.Device. The output stays latched.
func (d *Out) Close() error { return nil }

// PWM is an open pwm device.
type PWM struct {
	c    hal.Conn
	p    gpio.PinIO
	duty float64 // percent
	freq float64 // Hz
}

// OpenPWM opens a pwm device at 0 % duty.
func OpenPWM(b hal.Buses, c hal.Conn) (hal.Device, error) {
	p, err := pin(b, c)
	if err != nil {
		return nil, err
	}
	f, err := c.FloatOption("frequency", 1000)
	if err != nil {
		return nil, err
	}
	d := &PWM{c: c, p: p, freq: f}
	if err := d.apply(0, f); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *PWM) apply(duty, freq float64) error {
	if duty < 0 || duty > 100 || math.IsNaN(duty) {
		return fmt.Errorf("%w: duty %v%% outside 0–100", hal.ErrBadConn, duty)
	}
	if freq <= 0 || freq > 1e9 || math.IsNaN(freq) {
		return fmt.Errorf("%w: frequency %v Hz outside (0, 1 GHz]", hal.ErrBadConn, freq)
	}
	gd := gpio.Duty(math.Round(duty / 100 * float64(gpio.DutyMax)))
	if err := d.p.PWM(gd, physic.Frequency(math.Round(freq*float64(physic.Hertz)))); err != nil {
		return fmt.Errorf("%w: PWM on %s: %w", hal.ErrUnsupported, d.p, err)
	}
	d.duty, d.freq = duty, freq
	return nil
}

// Properties implements hal.Device.
func (d *PWM) Properties() []hal.Property { return []hal.Property{dutyProp, freqProp} }

// Read implements hal.Device; periph cannot read PWM back, so it reports
// the last values set.
func (d *PWM) Read() ([]hal.Value, error) {
	return []hal.Value{dutyProp.Float(d.duty), freqProp.Float(d.freq)}, nil
}

// Write implements hal.Device.
func (d *PWM) Write(v hal.Value) error {
	duty, freq := d.duty, d.freq
	switch v.Name {
	case dutyProp.Name:
		duty = v.Num
	case freqProp.Name:
		freq = v.Num
	default:
		return writeErr("pwm", d.c, v, nil)
	}
	return hal.Wrap("pwm", "write", d.c, d.apply(duty, freq))
}

// Close implements hal.Device; it stops the PWM output (drives low).
func (d *PWM) Close() error { return d.p.Out(gpio.Low) }

// writeErr checks that v names the writable property p.
func writeErr(driver string, c hal.Conn, v hal.Value, p *hal.Property) error {
	switch {
	case p == nil || v.Name != p.Name:
		return hal.Wrap(driver, "write", c, fmt.Errorf("%w %q", hal.ErrUnknownProperty, v.Name))
	case v.Type != p.Type:
		return hal.Wrap(driver, "write", c, errors.New("property "+p.Name+" wants a "+string(p.Type)+" value"))
	}
	return nil
}
