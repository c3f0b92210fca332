package hal_test

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"outpost.dev/hal"
)

func TestLookupUnknownListsKnown(t *testing.T) {
	hal.Register("test-null", func(hal.Buses, hal.Conn) (hal.Device, error) { return nil, errors.New("unused") })
	_, err := hal.Open(&hal.BusMap{}, "bme281", hal.Conn{Bus: "I2C1", Addr: 0x76})
	if !errors.Is(err, hal.ErrUnknownDriver) {
		t.Fatalf("got %v", err)
	}
	for _, s := range []string{`"bme281"`, "test-null", "I2C1 addr 0x76"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("%q lacks %q", err, s)
		}
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		err  error
		want error
	}{
		{fmt.Errorf("x: %w", syscall.EREMOTEIO), hal.ErrNACK},
		{fmt.Errorf("x: %w", syscall.ENXIO), hal.ErrNACK},
		{errors.New("bme280: sysfs-i2c: remote I/O error"), hal.ErrNACK},
		{errors.New("ds18b20: device did not respond"), hal.ErrNACK},
		{errors.New("ds18b20: incorrect scratchpad CRC"), hal.ErrCRC},
		{fmt.Errorf("%w: I2C9", hal.ErrNoBus), hal.ErrNoBus},
	}
	for _, tt := range tests {
		err := hal.Wrap("d", "read", hal.Conn{Bus: "I2C1", Addr: 0x44}, tt.err)
		if !errors.Is(err, tt.want) {
			t.Errorf("Wrap(%v) = %v, want %v", tt.err, err, tt.want)
		}
		if !strings.HasPrefix(err.Error(), "d read on I2C1 addr 0x44: ") {
			t.Errorf("message %q", err)
		}
	}
	if hal.Wrap("d", "read", hal.Conn{}, nil) != nil {
		t.Error("Wrap(nil) != nil")
	}
	if errors.Is(hal.Classify(errors.New("timeout")), hal.ErrNACK) {
		t.Error("plain error classified as NACK")
	}
}

func TestConnString(t *testing.T) {
	tests := []struct {
		c    hal.Conn
		want string
	}{
		{hal.Conn{Bus: "I2C1", Addr: 0x76}, "I2C1 addr 0x76"},
		{hal.Conn{Pin: "GPIO17"}, "pin GPIO17"},
		{hal.Conn{Bus: "W1", Addr: 0x5e000000a1b228}, "W1 rom 005e000000a1b228"},
		{hal.Conn{}, "(no connection)"},
	}
	for _, tt := range tests {
		if got := tt.c.String(); got != tt.want {
			t.Errorf("%#v: %q, want %q", tt.c, got, tt.want)
		}
	}
	if got := (hal.Conn{Bus: "SPI0", ChipSelect: 1}).SPIBus(); got != "SPI0.1" {
		t.Error(got)
	}
	if got := (hal.Conn{Bus: "SPI0.0", ChipSelect: 1}).SPIBus(); got != "SPI0.0" {
		t.Error(got)
	}
}

func TestOptions(t *testing.T) {
	c := hal.Conn{Options: map[string]string{"n": "0x10", "f": "2.5", "b": "true", "bad": "x"}}
	if n, err := c.IntOption("n", 0); n != 16 || err != nil {
		t.Error(n, err)
	}
	if f, err := c.FloatOption("f", 0); f != 2.5 || err != nil {
		t.Error(f, err)
	}
	if b, err := c.BoolOption("b", false); !b || err != nil {
		t.Error(b, err)
	}
	if n, err := c.IntOption("missing", 7); n != 7 || err != nil {
		t.Error(n, err)
	}
	for _, f := range []func() error{
		func() error { _, err := c.IntOption("bad", 0); return err },
		func() error { _, err := c.FloatOption("bad", 0); return err },
		func() error { _, err := c.BoolOption("bad", false); return err },
	} {
		if err := f(); !errors.Is(err, hal.ErrBadConn) {
			t.Error(err)
		}
	}
}

func TestBusMapNotFound(t *testing.T) {
	_, err := (&hal.BusMap{}).I2C("I2C3")
	if !errors.Is(err, hal.ErrNoBus) || !strings.Contains(err.Error(), "none") {
		t.Fatal(err)
	}
	_, err = (&hal.BusMap{}).Pin("GPIO3")
	if !errors.Is(err, hal.ErrNoPin) {
		t.Fatal(err)
	}
}

// A driver's declared options pass to it; any other key is refused before
// the driver opens anything, naming the key and the options it has.
func TestOpenRefusesUndeclaredOptions(t *testing.T) {
	opened := 0
	hal.Register("test-opts", func(hal.Buses, hal.Conn) (hal.Device, error) { opened++; return nil, errors.New("opened") }, "rate", "channel")
	tests := []struct {
		opts    map[string]string
		unknown bool
	}{
		{nil, false},
		{map[string]string{"channel": "3", "rate": "8"}, false},
		{map[string]string{"chanel": "3"}, true},
		{map[string]string{"channel": "3", "Rate": "8"}, true},
	}
	for _, tt := range tests {
		before := opened
		_, err := hal.Open(&hal.BusMap{}, "test-opts", hal.Conn{Bus: "I2C1", Options: tt.opts})
		if got := errors.Is(err, hal.ErrUnknownOption); got != tt.unknown {
			t.Errorf("options %v: err %v, unknown option %v, want %v", tt.opts, err, got, tt.unknown)
		}
		if tt.unknown {
			if opened != before {
				t.Errorf("options %v: the driver opened despite an unknown option", tt.opts)
			}
			for _, s := range []string{"test-opts", "it has channel, rate"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%q lacks %q", err, s)
				}
			}
		} else if opened != before+1 {
			t.Errorf("options %v: the driver did not open", tt.opts)
		}
	}
	if got := hal.Options("test-opts"); strings.Join(got, ",") != "channel,rate" {
		t.Errorf("Options = %v", got)
	}
}
