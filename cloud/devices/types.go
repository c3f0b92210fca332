package devices

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"

	"outpost.dev/cloud/crd"
	"outpost.dev/wire"
)

// The Device API: kind Device of crd.APIVersion.
const (
	Kind     = "Device"
	Resource = "devices"
)

// GVR is the Devices' resource.
var GVR = crd.GVR(Resource)

// Condition types the relay writes.
const (
	ConditionConnected = "Connected"
	ConditionError     = "Error"
)

// Device is a sensor or actuator wired to an edge node.
type Device = crd.Object[Spec, Status]

// Spec is what the user asks for.
type Spec struct {
	NodeName   string     `json:"nodeName"`
	Driver     string     `json:"driver"`
	Connection Connection `json:"connection,omitempty"`
	Properties []Property `json:"properties,omitempty"`
	// Desired maps a ReadWrite property to its value: a number or a bool.
	Desired map[string]any `json:"desired,omitempty"`
}

// Connection names how the device is wired, with the board's names.
type Connection struct {
	Bus string `json:"bus,omitempty"`
	// Address is an integer or a string in Go syntax ("0x76").
	Address    *intstr.IntOrString `json:"address,omitempty"`
	Pin        string              `json:"pin,omitempty"`
	ChipSelect int32               `json:"chipSelect,omitempty"`
	Options    map[string]string   `json:"options,omitempty"`
}

// Property is one value of the device.
type Property struct {
	Name   string `json:"name"`
	Type   string `json:"type,omitempty"`
	Unit   string `json:"unit,omitempty"`
	Access string `json:"access,omitempty"`
	// PollInterval and ReportInterval are durations ("1s").
	PollInterval   string  `json:"pollInterval,omitempty"`
	ReportInterval string  `json:"reportInterval,omitempty"`
	Deadband       float64 `json:"deadband,omitempty"`
}

// Status is what the relay writes from the agent's reports.
type Status struct {
	// Summary is the reported values in one line, for kubectl get.
	Summary    string              `json:"summary,omitempty"`
	Reported   map[string]Reported `json:"reported,omitempty"`
	Conditions []metav1.Condition  `json:"conditions,omitempty"`
}

// Reported is one property's last reported value.
type Reported struct {
	// Value is a float64, int64 or bool, as the property's type says.
	Value any         `json:"value"`
	Unit  string      `json:"unit,omitempty"`
	At    metav1.Time `json:"at,omitempty"`
}

// FromUnstructured converts a Device read with the dynamic client.
func FromUnstructured(u *unstructured.Unstructured) (*Device, error) {
	return crd.FromUnstructured[Device](Kind, u)
}

// ParseAddress reads spec.connection.address.
func ParseAddress(a *intstr.IntOrString) (uint64, error) {
	if a == nil {
		return 0, nil
	}
	if a.Type == intstr.Int {
		if a.IntVal < 0 {
			return 0, fmt.Errorf("address %d is negative", a.IntVal)
		}
		return uint64(a.IntVal), nil
	}
	n, err := strconv.ParseUint(a.StrVal, 0, 64)
	if err != nil {
		return 0, fmt.Errorf("address %q is not a number (write 118 or \"0x76\")", a.StrVal)
	}
	return n, nil
}

// Object translates d into the agent's type. Version is the generation, so
// status writes do not count as changes. A Device that cannot be translated
// (a bad address, duration or desired value) is an error naming the field.
func Object(d *Device) (wire.Object, error) {
	addr, err := ParseAddress(d.Spec.Connection.Address)
	if err != nil {
		return wire.Object{}, fmt.Errorf("spec.connection.address: %w", err)
	}
	wd := &wire.Device{
		Driver:     d.Spec.Driver,
		Bus:        d.Spec.Connection.Bus,
		Address:    addr,
		Pin:        d.Spec.Connection.Pin,
		ChipSelect: d.Spec.Connection.ChipSelect,
		Options:    d.Spec.Connection.Options,
	}
	for i, p := range d.Spec.Properties {
		wp := wire.DeviceProperty{Name: p.Name, Type: p.Type, Unit: p.Unit, Access: p.Access, Deadband: p.Deadband}
		if wp.PollMillis, err = millis(p.PollInterval); err != nil {
			return wire.Object{}, fmt.Errorf("spec.properties[%d].pollInterval: %w", i, err)
		}
		if wp.ReportMillis, err = millis(p.ReportInterval); err != nil {
			return wire.Object{}, fmt.Errorf("spec.properties[%d].reportInterval: %w", i, err)
		}
		wd.Properties = append(wd.Properties, wp)
	}
	names := make([]string, 0, len(d.Spec.Desired))
	for k := range d.Spec.Desired {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		n, err := number(d.Spec.Desired[k])
		if err != nil {
			return wire.Object{}, fmt.Errorf("spec.desired.%s: %w", k, err)
		}
		wd.Desired = append(wd.Desired, wire.TwinValue{Name: k, Num: n})
	}
	o := wire.Object{
		Kind: wire.KindDevice, UID: string(d.UID), Namespace: d.Namespace, Name: d.Name,
		Version: strconv.FormatInt(d.Generation, 10), Device: wd,
	}
	if err := o.Validate(); err != nil {
		return wire.Object{}, err
	}
	return o, nil
}

func millis(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration like 500ms or 1s", s)
	}
	if d > 0 && d < time.Millisecond {
		d = time.Millisecond
	}
	return d.Milliseconds(), nil
}

// number turns a desired JSON value into the wire's number.
func number(v any) (float64, error) {
	switch x := v.(type) {
	case bool:
		if x {
			return 1, nil
		}
		return 0, nil
	case int64:
		return float64(x), nil
	case int:
		return float64(x), nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return 0, errors.New("not a finite number")
		}
		return x, nil
	}
	return 0, fmt.Errorf("%v is not a number or a bool", v)
}

// value renders a reported number as the property's type.
func value(typ string, n float64) any {
	switch typ {
	case "bool":
		return n != 0
	case "int":
		return int64(math.Round(n))
	}
	return n
}
