package boards

import (
	"fmt"

	"outpost.dev/hal/linux"
)

func init() {
	Register(&Board{
		Name:    "rpi4",
		Title:   "Raspberry Pi 4 Model B",
		Models:  []string{"Raspberry Pi 4", "Raspberry Pi 400", "Raspberry Pi Compute Module 4"},
		Targets: []Target{{GOARCH: "arm64"}, {GOARCH: "arm", GOARM: "7"}},
		Layout:  func() *linux.Layout { return rpiLayout("pinctrl-bcm2711", "gpiochip0") },
	})
	Register(&Board{
		Name:   "rpi5",
		Title:  "Raspberry Pi 5",
		Models: []string{"Raspberry Pi 5", "Raspberry Pi 500", "Raspberry Pi Compute Module 5"},
		// The header GPIOs are on the RP1 south bridge: gpiochip0 on
		// kernels from 6.6.y on, gpiochip4 before.
		Targets: []Target{{GOARCH: "arm64"}},
		Layout:  func() *linux.Layout { return rpiLayout("pinctrl-rp1", "gpiochip4") },
	})
	Register(&Board{
		Name:    "rpi-zero2w",
		Title:   "Raspberry Pi Zero 2 W",
		Models:  []string{"Raspberry Pi Zero 2"},
		Targets: []Target{{GOARCH: "arm64"}, {GOARCH: "arm", GOARM: "7"}},
		Layout:  func() *linux.Layout { return rpiLayout("pinctrl-bcm2835", "gpiochip0") },
	})
	Register(&Board{
		Name:    "beaglebone-black",
		Title:   "BeagleBone Black",
		Models:  []string{"TI AM335x BeagleBone Black", "TI AM335x BeagleBone Green"},
		Targets: []Target{{GOARCH: "arm", GOARM: "7"}},
		Layout:  bbbLayout,
	})
	Register(&Board{
		Name:    "visionfive2",
		Title:   "StarFive VisionFive 2 (JH7110, RISC-V)",
		Models:  []string{"StarFive VisionFive 2"},
		Targets: []Target{{GOARCH: "riscv64"}},
		Layout:  vf2Layout,
	})
	Register(&Board{
		Name:  "sim",
		Title: "Simulated gateway (no hardware)",
		// Never detected: chosen by name.
	})
}

// rpiLayout is the 40-pin header of a Raspberry Pi: BCM GPIO0–27, I2C1 on
// GPIO2/3 (dtparam=i2c_arm=on), SPI0 on GPIO7–11 with two chip selects
// (dtparam=spi=on), 1-wire on GPIO4 (dtoverlay=w1-gpio).
func rpiLayout(chip, alt string) *linux.Layout {
	l := &linux.Layout{
		I2C:     map[string]int{"I2C0": 0, "I2C1": 1},
		SPI:     map[string]linux.SPIDev{"SPI0.0": {Bus: 0, CS: 0}, "SPI0.1": {Bus: 0, CS: 1}, "SPI1.0": {Bus: 1, CS: 0}},
		OneWire: map[string]uint32{"W1": 1},
		GPIO:    map[string]linux.Line{},
	}
	for i := range 28 {
		l.GPIO[fmt.Sprintf("GPIO%d", i)] = linux.Line{Chips: []string{chip, alt}, Offset: i}
	}
	return l
}

// bbbLayout is the BeagleBone Black: four 32-line GPIO banks named
// GPIOb_n, the common P8/P9 header pins as aliases, I2C1 and I2C2 (P9_17/18
// and P9_19/20), SPI0 and SPI1.
func bbbLayout() *linux.Layout {
	// Bank labels on kernels 5.x and later, then the 4.x device names.
	banks := [4][]string{
		{"gpio-0-31", "44e07000.gpio"},
		{"gpio-32-63", "4804c000.gpio"},
		{"gpio-64-95", "481ac000.gpio"},
		{"gpio-96-127", "481ae000.gpio"},
	}
	l := &linux.Layout{
		I2C:     map[string]int{"I2C1": 1, "I2C2": 2},
		SPI:     map[string]linux.SPIDev{"SPI0.0": {Bus: 0, CS: 0}, "SPI1.0": {Bus: 1, CS: 0}},
		OneWire: map[string]uint32{"W1": 1},
		GPIO:    map[string]linux.Line{},
	}
	for b, chips := range banks {
		for n := range 32 {
			l.GPIO[fmt.Sprintf("GPIO%d_%d", b, n)] = linux.Line{Chips: chips, Offset: n}
		}
	}
	header := map[string][2]int{
		"P8_7": {2, 2}, "P8_8": {2, 3}, "P8_9": {2, 5}, "P8_10": {2, 4},
		"P8_11": {1, 13}, "P8_12": {1, 12}, "P8_14": {0, 26}, "P8_15": {1, 15},
		"P8_16": {1, 14}, "P8_17": {0, 27}, "P8_18": {2, 1}, "P8_26": {1, 29},
		"P9_11": {0, 30}, "P9_12": {1, 28}, "P9_13": {0, 31}, "P9_14": {1, 18},
		"P9_15": {1, 16}, "P9_16": {1, 19}, "P9_23": {1, 17}, "P9_27": {3, 19},
		"P9_30": {3, 16}, "P9_41": {0, 20}, "P9_42": {0, 7},
	}
	for name, bn := range header {
		l.GPIO[name] = linux.Line{Chips: banks[bn[0]], Offset: bn[1]}
	}
	return l
}

// vf2Layout is the StarFive VisionFive 2 40-pin header: SoC GPIO0–63 on the
// sys pinctrl, I2C0 on GPIO57/58, SPI0 on GPIO48–52 (spidev1.0 in
// StarFive's kernels).
func vf2Layout() *linux.Layout {
	l := &linux.Layout{
		I2C:     map[string]int{"I2C0": 0, "I2C2": 2},
		SPI:     map[string]linux.SPIDev{"SPI0.0": {Bus: 1, CS: 0}},
		OneWire: map[string]uint32{"W1": 1},
		GPIO:    map[string]linux.Line{},
	}
	for i := range 64 {
		l.GPIO[fmt.Sprintf("GPIO%d", i)] = linux.Line{Chips: []string{"13040000.pinctrl", "gpiochip0"}, Offset: i}
	}
	return l
}
