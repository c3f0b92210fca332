package wire

import (
	"errors"
	"fmt"
	"math"
)

// Device is a sensor or actuator wired to the gateway, as the Device
// custom resource (outpost.dev/v1alpha1) describes it: which driver, how it
// is connected, which properties to read or write, and the desired values
// of the writable ones.
type Device struct {
	Driver string `cbor:"1,keyasint"`
	// Bus, Address, Pin and ChipSelect name the connection with the
	// board's names (I2C1, SPI0.0, GPIO17). Address is the I²C address or
	// a 1-wire ROM code.
	Bus        string            `cbor:"2,keyasint,omitempty"`
	Address    uint64            `cbor:"3,keyasint,omitempty"`
	Pin        string            `cbor:"4,keyasint,omitempty"`
	ChipSelect int32             `cbor:"5,keyasint,omitempty"`
	Options    map[string]string `cbor:"6,keyasint,omitempty"`
	Properties []DeviceProperty  `cbor:"7,keyasint,omitempty"`
	Desired    []TwinValue       `cbor:"8,keyasint,omitempty"`
}

// Validate implements Body.
func (d *Device) Validate() error {
	if err := checkText("device: driver", d.Driver, 64, true); err != nil {
		return err
	}
	for _, f := range []struct{ what, v string }{{"bus", d.Bus}, {"pin", d.Pin}} {
		if err := checkText("device: "+f.what, f.v, 64, false); err != nil {
			return err
		}
	}
	if len(d.Options) > 64 || len(d.Properties) > 64 || len(d.Desired) > 64 {
		return errors.New("device: too many options, properties or desired values")
	}
	for k, v := range d.Options {
		if len(k) > 64 || len(v) > 256 {
			return fmt.Errorf("device: option %.64q too long", k)
		}
	}
	for i := range d.Properties {
		if err := d.Properties[i].Validate(); err != nil {
			return err
		}
	}
	for i := range d.Desired {
		if err := d.Desired[i].Validate(); err != nil {
			return err
		}
	}
	return nil
}

// DeviceProperty is one value a device has.
type DeviceProperty struct {
	Name string `cbor:"1,keyasint"`
	// Type is float, int or bool; bools travel as 0 and 1.
	Type string `cbor:"2,keyasint,omitempty"`
	Unit string `cbor:"3,keyasint,omitempty"`
	// Access is ReadOnly or ReadWrite.
	Access string `cbor:"4,keyasint,omitempty"`
	// PollMillis is how often to read; ReportMillis how often at most to
	// report upstream; a change smaller than Deadband is not reported.
	PollMillis   int64   `cbor:"5,keyasint,omitempty"`
	ReportMillis int64   `cbor:"6,keyasint,omitempty"`
	Deadband     float64 `cbor:"7,keyasint,omitempty"`
}

// Validate reports a missing name or an impossible setting.
func (p *DeviceProperty) Validate() error {
	if err := checkText("device property: name", p.Name, 64, true); err != nil {
		return err
	}
	switch p.Type {
	case "", "float", "int", "bool":
	default:
		return fmt.Errorf("device property %s: type %q is not float, int or bool", p.Name, p.Type)
	}
	switch p.Access {
	case "", "ReadOnly", "ReadWrite":
	default:
		return fmt.Errorf("device property %s: access %q is not ReadOnly or ReadWrite", p.Name, p.Access)
	}
	if p.PollMillis < 0 || p.ReportMillis < 0 || p.Deadband < 0 || math.IsNaN(p.Deadband) {
		return fmt.Errorf("device property %s: negative interval or deadband", p.Name)
	}
	return checkText("device property "+p.Name+": unit", p.Unit, 32, false)
}

// TwinValue is one property's value; At is unix milliseconds (0: unset).
type TwinValue struct {
	Name string  `cbor:"1,keyasint"`
	Num  float64 `cbor:"2,keyasint"`
	At   int64   `cbor:"3,keyasint,omitempty"`
}

// Validate reports a missing name or a value that is not a number.
func (v *TwinValue) Validate() error {
	if err := checkText("twin value: name", v.Name, 64, true); err != nil {
		return err
	}
	if math.IsNaN(v.Num) || math.IsInf(v.Num, 0) {
		return fmt.Errorf("twin value %s: not a finite number", v.Name)
	}
	return nil
}

// TwinReport reports a device's values and state (TypeTwinReport). It is
// durable and keyed by device in the outbox, so during an outage only the
// latest values of each device wait.
//
// A report names its Device either by Device (namespace/name, what the
// outbox stores) or, on the link, by ID: the link id the relay gave the
// Device object in this connection's sync (Object.LinkID). With an ID,
// values of the Device's listed properties may travel as Short values
// (property index instead of name, age instead of time), and Conditions
// may be left out when they equal the last ones sent with the same ID on
// the same connection: the relay fills them in from those.
type TwinReport struct {
	// Device is namespace/name of the Device; empty when ID is set.
	Device string      `cbor:"1,keyasint,omitempty"`
	Values []TwinValue `cbor:"2,keyasint,omitempty"`
	// Conditions are Connected and Error, as the agent sees them.
	Conditions []Condition `cbor:"3,keyasint,omitempty"`
	// ID is the Device's link id on this connection (0: none).
	ID uint32 `cbor:"4,keyasint,omitempty"`
	// Short are values of the properties the Device lists, by index into
	// its spec's property list as synced with ID.
	Short []ShortValue `cbor:"5,keyasint,omitempty"`
}

// Bounds of the compact twin report fields.
const (
	// MaxLinkID bounds a link id; a relay that would need a larger one
	// sends none (the agent then names the Device).
	MaxLinkID = 1<<24 - 1
	// MaxAgeMillis bounds a short value's age: about 34 years.
	MaxAgeMillis = 1 << 40
	// MaxTwinValues bounds the values of one report.
	MaxTwinValues = 64
)

// ShortValue is a property's value by index into the Device's property
// list. Age is how many milliseconds before the frame was sent the value
// was read; the relay dates it from the frame's arrival, so the gateway's
// clock does not matter.
type ShortValue struct {
	_     struct{} `cbor:",toarray"`
	Index uint8
	Num   float64
	Age   uint64
}

// Validate reports a value that is not a finite number or an impossible
// index or age.
func (v *ShortValue) Validate() error {
	if v.Index >= MaxTwinValues {
		return fmt.Errorf("short value: property index %d out of range", v.Index)
	}
	if math.IsNaN(v.Num) || math.IsInf(v.Num, 0) {
		return fmt.Errorf("short value %d: not a finite number", v.Index)
	}
	if v.Age > MaxAgeMillis {
		return fmt.Errorf("short value %d: age %d ms out of range", v.Index, v.Age)
	}
	return nil
}

// Validate implements Body.
func (r *TwinReport) Validate() error {
	switch {
	case r.ID > MaxLinkID:
		return fmt.Errorf("twin report: link id %d out of range", r.ID)
	case r.ID != 0 && r.Device != "":
		return errors.New("twin report: both a device name and a link id")
	case r.ID == 0 && len(r.Short) > 0:
		return errors.New("twin report: short values without a link id")
	case r.ID == 0:
		if err := checkText("twin report: device", r.Device, 2*maxNameLen, true); err != nil {
			return err
		}
	}
	if len(r.Values)+len(r.Short) > MaxTwinValues || len(r.Conditions) > maxConditions {
		return errors.New("twin report: too many values or conditions")
	}
	for i := range r.Values {
		if err := r.Values[i].Validate(); err != nil {
			return err
		}
	}
	for i := range r.Short {
		if err := r.Short[i].Validate(); err != nil {
			return err
		}
	}
	for i := range r.Conditions {
		if err := r.Conditions[i].Validate(); err != nil {
			return err
		}
	}
	return nil
}
