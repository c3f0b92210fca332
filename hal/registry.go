package hal

import (
	"fmt"
	"slices"
	"strings"
	"sync"
)

// OpenFunc opens a device of one driver.
type OpenFunc func(b Buses, c Conn) (Device, error)

var (
	mu      sync.Mutex
	drivers = map[string]OpenFunc{}
)

// Register makes a driver available by name. Drivers call it from init; it
// panics on an empty or duplicate name, as that is a programming error.
func Register(name string, open OpenFunc) {
	mu.Lock()
	defer mu.Unlock()
	if name == "" || open == nil {
		panic("hal: Register with empty name or nil OpenFunc")
	}
	if _, dup := drivers[name]; dup {
		panic("hal: driver " + name + " registered twice")
	}
	drivers[name] = open
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
	open, ok := drivers[name]
	mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknownDriver, name, strings.Join(Drivers(), ", "))
	}
	return open, nil
}

// Open looks up driver and opens a device with it.
func Open(b Buses, driver string, c Conn) (Device, error) {
	open, err := Lookup(driver)
	if err != nil {
		return nil, &Error{Driver: driver, Op: "open", Conn: c, Err: err}
	}
	d, err := open(b, c)
	if err != nil {
		return nil, Wrap(driver, "open", c, err)
	}
	return d, nil
}
