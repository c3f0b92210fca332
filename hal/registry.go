package hal

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// OpenFunc opens a device of one driver.
type OpenFunc func(b Buses, c Conn) (Device, error)

// driver is a registered driver: how to open it and the connection
// options it reads.
type driver struct {
	open    OpenFunc
	options []string
}

var (
	mu      sync.Mutex
	drivers = map[string]driver{}
)

// Register makes a driver available by name, declaring the names of the
// connection options it reads (as a device declares its properties): Open
// refuses any other option, so a misspelt one is an error, not a default.
// Drivers call it from init; it panics on an empty or duplicate name, as
// that is a programming error.
func Register(name string, open OpenFunc, options ...string) {
	mu.Lock()
	defer mu.Unlock()
	if name == "" || open == nil {
		panic("hal: Register with empty name or nil OpenFunc")
	}
	if _, dup := drivers[name]; dup {
		panic("hal: driver " + name + " registered twice")
	}
	drivers[name] = driver{open: open, options: slices.Sorted(slices.Values(options))}
}

// Options returns the connection options driver declared, sorted, or nil
// for a driver that is not registered.
func Options(name string) []string {
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(drivers[name].options)
}

// Drivers returns the registered driver names, sorted.
func Drivers() []string {
	mu.Lock()
	defer mu.Unlock()
	names := make([]string, 0, len(drivers))
	for n := range drivers {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Lookup returns the driver registered as name, or an error wrapping
// ErrUnknownDriver that lists the known ones.
func Lookup(name string) (OpenFunc, error) {
	mu.Lock()
	d, ok := drivers[name]
	mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknownDriver, name, strings.Join(Drivers(), ", "))
	}
	return d.open, nil
}

// Open looks up driver and opens a device with it, after checking that c
// sets only options the driver declared.
func Open(b Buses, driver string, c Conn) (Device, error) {
	open, err := Lookup(driver)
	if err != nil {
		return nil, &Error{Driver: driver, Op: "open", Conn: c, Err: err}
	}
	if err := checkOptions(driver, c); err != nil {
		return nil, &Error{Driver: driver, Op: "open", Conn: c, Err: err}
	}
	d, err := open(b, c)
	if err != nil {
		return nil, Wrap(driver, "open", c, err)
	}
	return d, nil
}

// checkOptions refuses the options of c that driver did not declare,
// naming them and the ones it has.
func checkOptions(driver string, c Conn) error {
	known := Options(driver)
	var unknown []string
	for k := range c.Options {
		if !slices.Contains(known, k) {
			unknown = append(unknown, strconv.Quote(k))
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	has := "it has none"
	if len(known) > 0 {
		has = "it has " + strings.Join(known, ", ")
	}
	return fmt.Errorf("%w %s for driver %s (%s)", ErrUnknownOption, strings.Join(unknown, ", "), driver, has)
}
