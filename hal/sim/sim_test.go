package sim_test

import (
	"errors"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"

	"outpost.dev/hal"
	_ "outpost.dev/hal/all"
	"outpost.dev/hal/sim"
)

func values(t *testing.T, d hal.Device) map[string]hal.Value {
	t.Helper()
	vs, err := d.Read()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]hal.Value{}
	for _, v := range vs {
		m[v.Name] = v
	}
	return m
}

// TestDriversReadPlausibleValues runs every sensor driver against the
// simulator and checks each reading against the World it simulates.
func TestDriversReadPlausibleValues(t *testing.T) {
	s := sim.New(nil)
	w := s.World
	near := func(tol float64, want func() float64) func(float64) bool {
		return func(got float64) bool { x := want(); return got > x-tol && got < x+tol }
	}
	tests := []struct {
		driver string
		conn   hal.Conn
		checks map[string]func(float64) bool
	}{
		{"bme280", hal.Conn{Bus: "I2C1", Addr: 0x76}, map[string]func(float64) bool{
			"temperature": near(0.05, w.Temperature),
			"humidity":    near(0.5, w.Humidity),
			"pressure":    near(0.05, w.Pressure),
		}},
		{"bme280", hal.Conn{Bus: "SPI0", ChipSelect: 1}, map[string]func(float64) bool{
			"temperature": near(0.05, w.Temperature),
			"humidity":    near(0.5, w.Humidity),
			"pressure":    near(0.05, w.Pressure),
		}},
		{"sht3x", hal.Conn{Bus: "I2C1"}, map[string]func(float64) bool{
			"temperature": near(0.01, w.Temperature),
			"humidity":    near(0.01, w.Humidity),
		}},
		{"ads1115", hal.Conn{Bus: "I2C1", Options: map[string]string{"channel": "2"}}, map[string]func(float64) bool{
			"voltage": near(0.01, func() float64 { return w.Voltage(2) }),
		}},
		{"mcp3008", hal.Conn{Bus: "SPI0.0", Options: map[string]string{"channel": "5"}}, map[string]func(float64) bool{
			"voltage": near(0.01, func() float64 { return w.Voltage(5) }),
		}},
		{"ds18b20", hal.Conn{Bus: "W1", Options: map[string]string{"resolution": "9"}}, map[string]func(float64) bool{
			"temperature": near(0.5, w.ProbeTemperature),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.driver+"/"+tt.conn.Bus, func(t *testing.T) {
			d, err := hal.Open(s, tt.driver, tt.conn)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			got := values(t, d)
			for name, ok := range tt.checks {
				v, found := got[name]
				if !found || !ok(v.Num) {
					t.Errorf("%s = %v (found %v), not plausible", name, v, found)
				}
			}
			if len(got) != len(d.Properties()) {
				t.Errorf("read %d values for %d properties", len(got), len(d.Properties()))
			}
		})
	}
}

func TestValuesVaryOverTime(t *testing.T) {
	now := time.Unix(1e9, 0)
	s := sim.New(func() time.Time { return now })
	d, err := hal.Open(s, "sht3x", hal.Conn{Bus: "I2C1", Options: map[string]string{"repeatability": "low"}})
	if err != nil {
		t.Fatal(err)
	}
	a := values(t, d)["temperature"].Num
	now = now.Add(2 * time.Minute)
	b := values(t, d)["temperature"].Num
	if a == b || a < 19 || a > 23 || b < 19 || b > 23 {
		t.Fatalf("temperature %v then %v: want a drift around 21 °C", a, b)
	}
}

func TestGPIOOutLatchesAndReadsBack(t *testing.T) {
	s := sim.New(nil)
	d, err := hal.Open(s, "gpio-out", hal.Conn{Pin: "GPIO17"})
	if err != nil {
		t.Fatal(err)
	}
	onProp := d.Properties()[0]
	for _, on := range []bool{true, false, true} {
		if err := d.Write(onProp.Bool(on)); err != nil {
			t.Fatal(err)
		}
		if got := values(t, d)["on"].Bool; got != on {
			t.Fatalf("read back %v after writing %v", got, on)
		}
		if l := s.Pins["GPIO17"].Read(); bool(l) != on || !s.Pins["GPIO17"].IsOutput() {
			t.Fatalf("sim pin is %v, output %v; want latched %v", l, s.Pins["GPIO17"].IsOutput(), on)
		}
	}
	// Closing and reopening keeps the latch until the initial level is driven.
	d.Close()
	if !s.Pins["GPIO17"].Read() {
		t.Fatal("latch lost on close")
	}
}

func TestGPIOInEdges(t *testing.T) {
	s := sim.New(nil)
	d, err := hal.Open(s, "gpio-in", hal.Conn{Pin: "GPIO4", Options: map[string]string{"pull": "up", "edge": "falling"}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if !values(t, d)["level"].Bool {
		t.Fatal("pulled-up input reads low")
	}
	w := d.(hal.Watcher)
	if w.Wait(10 * time.Millisecond) {
		t.Fatal("edge without a change")
	}
	s.Pins["GPIO4"].Drive(gpio.Low) // held until waited for
	if !w.Wait(time.Second) {
		t.Fatal("no falling edge seen")
	}
	if values(t, d)["level"].Bool {
		t.Fatal("reads high after being driven low")
	}
	s.Pins["GPIO4"].Drive(gpio.High) // rising: not asked for
	if w.Wait(10 * time.Millisecond) {
		t.Fatal("rising edge reported on a falling-edge input")
	}
}

func TestPWM(t *testing.T) {
	s := sim.New(nil)
	d, err := hal.Open(s, "pwm", hal.Conn{Pin: "GPIO18", Options: map[string]string{"frequency": "500"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Write(hal.Value{Name: "duty", Type: hal.Float, Num: 25}); err != nil {
		t.Fatal(err)
	}
	duty, f := s.Pins["GPIO18"].PWMState()
	if duty != gpio.DutyMax/4 || f.String() != "500Hz" {
		t.Fatalf("pin PWM %v at %v, want 25%% at 500Hz", duty, f)
	}
	if err := d.Write(hal.Value{Name: "duty", Type: hal.Float, Num: 120}); !errors.Is(err, hal.ErrBadConn) {
		t.Fatalf("duty 120%%: %v", err)
	}
}

func TestNACKWhereNothingIsSimulated(t *testing.T) {
	s := sim.New(nil)
	_, err := hal.Open(s, "bme280", hal.Conn{Bus: "I2C1", Addr: 0x77})
	if !errors.Is(err, hal.ErrNACK) {
		t.Fatalf("got %v, want ErrNACK", err)
	}
	t.Log(err)
	s.SHT3x.Missing = true
	_, err = hal.Open(s, "sht3x", hal.Conn{Bus: "I2C1"})
	if !errors.Is(err, hal.ErrNACK) {
		t.Fatalf("got %v, want ErrNACK", err)
	}
	t.Log(err)
	_, err = hal.Open(s, "sht3x", hal.Conn{Bus: "I2C7"})
	if !errors.Is(err, hal.ErrNoBus) {
		t.Fatalf("got %v, want ErrNoBus", err)
	}
	t.Log(err)
}

func TestWrongChipID(t *testing.T) {
	s := sim.New(nil)
	s.BME280.ChipID = 0x58 // a BMP280
	_, err := hal.Open(s, "bme280", hal.Conn{Bus: "I2C1"})
	if !errors.Is(err, hal.ErrChipID) {
		t.Fatalf("got %v, want ErrChipID", err)
	}
	t.Log(err)
	s.BME280.ChipID = 0x42
	_, err = hal.Open(s, "bme280", hal.Conn{Bus: "I2C1"})
	if !errors.Is(err, hal.ErrChipID) {
		t.Fatalf("got %v, want ErrChipID", err)
	}
	t.Log(err)
}

func TestSHT3xBadCRC(t *testing.T) {
	s := sim.New(nil)
	s.SHT3x.BadCRC = true
	_, err := hal.Open(s, "sht3x", hal.Conn{Bus: "I2C1"})
	if !errors.Is(err, hal.ErrCRC) {
		t.Fatalf("got %v, want ErrCRC", err)
	}
	t.Log(err)
}
