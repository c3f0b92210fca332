package hal

import (
	"fmt"
	"strconv"
)

// IntOption parses the named option as an integer, with def when unset.
func (c Conn) IntOption(name string, def int) (int, error) {
	s := c.Option(name, "")
	if s == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(s, 0, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: option %s=%q is not an integer", ErrBadConn, name, s)
	}
	return int(n), nil
}

// FloatOption parses the named option as a number, with def when unset.
func (c Conn) FloatOption(name string, def float64) (float64, error) {
	s := c.Option(name, "")
	if s == "" {
		return def, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: option %s=%q is not a number", ErrBadConn, name, s)
	}
	return f, nil
}

// BoolOption parses the named option as a boolean, with def when unset.
func (c Conn) BoolOption(name string, def bool) (bool, error) {
	s := c.Option(name, "")
	if s == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, fmt.Errorf("%w: option %s=%q is not true or false", ErrBadConn, name, s)
	}
	return b, nil
}

// Float returns a Float value of property p.
func (p Property) Float(x float64) Value {
	return Value{Name: p.Name, Type: Float, Unit: p.Unit, Num: x}
}

// Int returns an Int value of property p.
func (p Property) Int(x int64) Value {
	return Value{Name: p.Name, Type: Int, Unit: p.Unit, Num: float64(x)}
}

// Bool returns a Bool value of property p.
func (p Property) Bool(b bool) Value {
	return Value{Name: p.Name, Type: Bool, Unit: p.Unit, Bool: b}
}

// RefuseWrite is the Write of a sensor: ErrReadOnly for one of props,
// ErrUnknownProperty for anything else, as an *Error.
func RefuseWrite(driver string, c Conn, props []Property, v Value) error {
	for _, p := range props {
		if p.Name == v.Name {
			return &Error{Driver: driver, Op: "write", Conn: c, Err: fmt.Errorf("%w: %s", ErrReadOnly, v.Name)}
		}
	}
	return &Error{Driver: driver, Op: "write", Conn: c, Err: fmt.Errorf("%w %q", ErrUnknownProperty, v.Name)}
}
