package boards_test

import (
	"errors"
	"strings"
	"testing"
	"testing/fstest"

	"outpost.dev/boards"
	"outpost.dev/hal"
	_ "outpost.dev/hal/all"
	"outpost.dev/hal/sim"
)

func TestDetect(t *testing.T) {
	tests := []struct {
		path, model, want string
	}{
		{"proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.4\x00", "rpi4"},
		{"proc/device-tree/model", "Raspberry Pi Compute Module 4 Rev 1.0\x00", "rpi4"},
		{"proc/device-tree/model", "Raspberry Pi 5 Model B Rev 1.0\x00", "rpi5"},
		{"proc/device-tree/model", "Raspberry Pi Zero 2 W Rev 1.0\x00", "rpi-zero2w"},
		{"proc/device-tree/model", "TI AM335x BeagleBone Black\x00", "beaglebone-black"},
		{"proc/device-tree/model", "StarFive VisionFive 2 v1.3B\x00", "visionfive2"},
		{"sys/firmware/devicetree/base/model", "Raspberry Pi 5 Model B Rev 1.0\x00", "rpi5"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			b, err := boards.Detect(fstest.MapFS{tt.path: {Data: []byte(tt.model)}})
			if err != nil {
				t.Fatal(err)
			}
			if b.Name != tt.want {
				t.Fatalf("detected %s, want %s", b.Name, tt.want)
			}
		})
	}
}

func TestDetectUnknown(t *testing.T) {
	for name, fsys := range map[string]fstest.MapFS{
		"other model": {"proc/device-tree/model": {Data: []byte("Raspberry Pi Model B Rev 2\x00")}},
		"no model":    {},
		"blank model": {"proc/device-tree/model": {Data: []byte("\x00")}},
		"long model":  {"proc/device-tree/model": {Data: []byte(strings.Repeat("x", 10000))}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := boards.Detect(fsys)
			if !errors.Is(err, boards.ErrUnknownBoard) || !strings.Contains(err.Error(), "rpi4") {
				t.Fatalf("got %v, want ErrUnknownBoard listing the boards", err)
			}
			if noTree := name == "no model" || name == "blank model"; errors.Is(err, boards.ErrNoDeviceTree) != noTree {
				t.Errorf("ErrNoDeviceTree %v, want %v", errors.Is(err, boards.ErrNoDeviceTree), noTree)
			}
			if len(err.Error()) > 600 {
				t.Errorf("an unbounded model in the error: %d bytes", len(err.Error()))
			}
			t.Log(err)
		})
	}
}

func TestLookup(t *testing.T) {
	want := []string{"beaglebone-black", "rpi-zero2w", "rpi4", "rpi5", "sim", "visionfive2"}
	if got := boards.Names(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	_, err := boards.Lookup("rpi3")
	if !errors.Is(err, boards.ErrUnknownBoard) || !strings.Contains(err.Error(), "visionfive2") {
		t.Fatalf("got %v", err)
	}
}

func TestLayouts(t *testing.T) {
	tests := []struct {
		board, arch string
		buses, pins []string
	}{
		{"rpi4", "arm64", []string{"I2C1", "SPI0.0", "SPI0.1", "W1"}, []string{"GPIO0", "GPIO17", "GPIO27"}},
		{"rpi5", "arm64", []string{"I2C1", "SPI0.0", "SPI0.1", "W1"}, []string{"GPIO17"}},
		{"rpi-zero2w", "arm64", []string{"I2C1", "SPI0.0", "W1"}, []string{"GPIO4", "GPIO17"}},
		{"beaglebone-black", "arm/v7", []string{"I2C2", "SPI0.0", "W1"}, []string{"GPIO1_28", "P9_12", "P8_7"}},
		{"visionfive2", "riscv64", []string{"I2C0", "SPI0.0", "W1"}, []string{"GPIO44", "GPIO63"}},
		{"sim", "", []string{"I2C1", "SPI0.0", "SPI0.1", "W1"}, []string{"GPIO17"}},
	}
	for _, tt := range tests {
		t.Run(tt.board, func(t *testing.T) {
			b, err := boards.Lookup(tt.board)
			if err != nil {
				t.Fatal(err)
			}
			if tt.arch != "" && b.Targets[0].String() != tt.arch {
				t.Errorf("target %v, want %s", b.Targets[0], tt.arch)
			}
			if tt.arch == "" && len(b.Targets) != 0 {
				t.Errorf("sim pins targets %v", b.Targets)
			}
			has := func(list []string, s string) bool {
				for _, x := range list {
					if x == s {
						return true
					}
				}
				return false
			}
			for _, n := range tt.buses {
				if !has(b.BusNames(), n) {
					t.Errorf("no bus %s in %v", n, b.BusNames())
				}
			}
			for _, n := range tt.pins {
				if !has(b.PinNames(), n) {
					t.Errorf("no pin %s", n)
				}
			}
			// An unknown name fails without touching hardware, listing the
			// board's names.
			_, err = b.Open().I2C("I2C9")
			if !errors.Is(err, hal.ErrNoBus) {
				t.Errorf("I2C9: %v", err)
			}
			_, err = b.Open().Pin("GPIO999")
			if !errors.Is(err, hal.ErrNoPin) {
				t.Errorf("GPIO999: %v", err)
			}
		})
	}
}

func TestSimBoard(t *testing.T) {
	b, err := boards.Lookup("sim")
	if err != nil {
		t.Fatal(err)
	}
	buses := b.Open()
	if _, ok := buses.(*sim.Sim); !ok {
		t.Fatalf("sim board opened %T", buses)
	}
	d, err := hal.Open(buses, "bme280", hal.Conn{Bus: "I2C1", Addr: 0x76})
	if err != nil {
		t.Fatal(err)
	}
	vs, err := d.Read()
	if err != nil || len(vs) != 3 {
		t.Fatalf("%v %v", vs, err)
	}
	for _, v := range vs {
		t.Log(v.Name, v)
	}
}
