package sht3x

import (
	"errors"
	"math"
	"testing"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"

	"outpost.dev/hal"
)

// word appends the datasheet CRC to a 16-bit value.
func word(v uint16) []byte { b := []byte{byte(v >> 8), byte(v)}; return append(b, CRC8(b)) }

func TestCRC8(t *testing.T) {
	// Datasheet table 19: CRC(0xBEEF) = 0x92.
	if c := CRC8([]byte{0xBE, 0xEF}); c != 0x92 {
		t.Fatalf("CRC8(BEEF) = %#x, want 0x92", c)
	}
}

func TestPlayback(t *testing.T) {
	tests := []struct {
		repeat   string
		cmd      []byte
		st, srh  uint16
		wantT    float64
		wantRH   float64
		wantWait time.Duration
	}{
		// Datasheet 4.13: T = -45 + 175·S_T/(2¹⁶-1), RH = 100·S_RH/(2¹⁶-1).
		{"high", []byte{0x24, 0x00}, 0x6666, 0x8000, 24.9993, 50.0008, 15500 * time.Microsecond},
		{"medium", []byte{0x24, 0x0B}, 0x0000, 0x0000, -45, 0, 6500 * time.Microsecond},
		{"low", []byte{0x24, 0x16}, 0xFFFF, 0xFFFF, 130, 100, 4500 * time.Microsecond},
	}
	for _, tt := range tests {
		t.Run(tt.repeat, func(t *testing.T) {
			bus := &i2ctest.Playback{Ops: []i2ctest.IO{
				{Addr: 0x45, W: []byte{0xF3, 0x2D}, R: word(0x8010)}, // status after reset
				{Addr: 0x45, W: tt.cmd},
				{Addr: 0x45, R: append(word(tt.st), word(tt.srh)...)},
			}}
			d, err := hal.Open(&hal.BusMap{I2CBuses: map[string]i2c.Bus{"I2C1": bus}}, Name,
				hal.Conn{Bus: "I2C1", Addr: 0x45, Options: map[string]string{"repeatability": tt.repeat}})
			if err != nil {
				t.Fatal(err)
			}
			var slept time.Duration
			d.(*Dev).sleep = func(d time.Duration) { slept += d }
			vs, err := d.Read()
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(vs[0].Num-tt.wantT) > 1e-3 || math.Abs(vs[1].Num-tt.wantRH) > 1e-3 {
				t.Errorf("got %v, %v; want %v °C, %v %%RH", vs[0], vs[1], tt.wantT, tt.wantRH)
			}
			if slept != tt.wantWait {
				t.Errorf("waited %v, want %v", slept, tt.wantWait)
			}
			if err := bus.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	badCRC := word(0x6666)
	badCRC[2] ^= 1
	tests := []struct {
		name string
		ops  []i2ctest.IO
		read bool
		want error
	}{
		{"status CRC", []i2ctest.IO{{Addr: 0x44, W: []byte{0xF3, 0x2D}, R: []byte{0x80, 0x10, 0x00}}}, false, hal.ErrCRC},
		{"measurement CRC", []i2ctest.IO{
			{Addr: 0x44, W: []byte{0xF3, 0x2D}, R: word(0)},
			{Addr: 0x44, W: []byte{0x24, 0x00}},
			{Addr: 0x44, R: append(badCRC, word(0)...)},
		}, true, hal.ErrCRC},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bus := &i2ctest.Playback{Ops: tt.ops}
			d, err := hal.Open(&hal.BusMap{I2CBuses: map[string]i2c.Bus{"I2C1": bus}}, Name, hal.Conn{Bus: "I2C1"})
			if tt.read {
				if err != nil {
					t.Fatal(err)
				}
				d.(*Dev).sleep = func(time.Duration) {}
				_, err = d.Read()
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			t.Log(err)
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte{0x66, 0x66, 0x93, 0x80, 0x00, 0xA2})
	f.Add([]byte{0xBE, 0xEF, 0x92, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 6 {
			return
		}
		var r [6]byte
		copy(r[:], b)
		c, rh, err := Decode(r)
		ok := CRC8(r[0:2]) == r[2] && CRC8(r[3:5]) == r[5]
		if ok != (err == nil) {
			t.Fatalf("Decode(% x) err=%v, CRCs ok=%v", r, err, ok)
		}
		if err != nil {
			if !errors.Is(err, hal.ErrCRC) {
				t.Fatalf("error %v is not ErrCRC", err)
			}
			return
		}
		if c < -45 || c > 130 || rh < 0 || rh > 100 {
			t.Fatalf("Decode(% x) = %v °C %v %%RH out of range", r, c, rh)
		}
		// The word round-trips.
		if w, _ := Word(r[0:3]); byte(w>>8) != r[0] || byte(w) != r[1] {
			t.Fatal("word mangled")
		}
	})
}
