package hal_test

import (
	"errors"
	"fmt"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"outpost.dev/hal"
	_ "outpost.dev/hal/pins" // registers gpio-in, gpio-out and pwm
)

// A Device's spec.driver is looked up in the registry and opened on the
// board's buses; here a fake pin stands in for the board.
func Example() {
	buses := &hal.BusMap{GPIOPins: map[string]gpio.PinIO{"GPIO17": &gpiotest.Pin{N: "GPIO17"}}}

	relay, err := hal.Open(buses, "gpio-out", hal.Conn{Pin: "GPIO17"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer relay.Close()
	on := relay.Properties()[0]
	if err := relay.Write(on.Bool(true)); err != nil {
		fmt.Println(err)
		return
	}
	vs, _ := relay.Read()
	fmt.Println(vs[0].Name, vs[0])

	_, err = hal.Open(buses, "gpio-outt", hal.Conn{Pin: "GPIO17"})
	fmt.Println(errors.Is(err, hal.ErrUnknownDriver))
	// Output:
	// on true
	// true
}
