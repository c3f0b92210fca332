package mcp3008

import (
	"errors"
	"math"
	"testing"

	"periph.io/x/conn/v3/conntest"
	"periph.io/x/conn/v3/spi"
	"periph.io/x/conn/v3/spi/spitest"

	"outpost.dev/hal"
)

func TestPlayback(t *testing.T) {
	// Datasheet figure 6-1: the MCU sends 0x01 (start), then SGL/DIFF and
	// D2–D0 in the high nibble, then a don't-care byte; it receives the null
	// bit and B9–B8 in the low bits of the second byte, B7–B0 in the third.
	tests := []struct {
		opts  map[string]string
		w, r  []byte
		wantV float64
		wantR float64
	}{
		{nil, []byte{0x01, 0x80, 0x00}, []byte{0x00, 0x02, 0x00}, 1.65, 512},
		{map[string]string{"channel": "7"}, []byte{0x01, 0xF0, 0x00}, []byte{0xFF, 0xFB, 0xFF}, 3.3 * 1023 / 1024, 1023},
		{map[string]string{"channel": "2", "differential": "true", "vref": "5"}, []byte{0x01, 0x20, 0x00}, []byte{0x00, 0x00, 0x10}, 5 * 16.0 / 1024, 16},
	}
	for _, tt := range tests {
		p := &spitest.Playback{Playback: conntest.Playback{Ops: []conntest.IO{{W: tt.w, R: tt.r}}}}
		d, err := hal.Open(&hal.BusMap{SPIPorts: map[string]spi.Port{"SPI0.0": p}}, Name, hal.Conn{Bus: "SPI0.0", Options: tt.opts})
		if err != nil {
			t.Fatal(err)
		}
		vs, err := d.Read()
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(vs[0].Num-tt.wantV) > 1e-9 || vs[1].Num != tt.wantR {
			t.Errorf("%v: got %v %v, want %v V raw %v", tt.opts, vs[0], vs[1], tt.wantV, tt.wantR)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestNothingOnMISO(t *testing.T) {
	// A floating, pulled-up MISO reads all ones: the null bit is high.
	p := &spitest.Playback{Playback: conntest.Playback{Ops: []conntest.IO{{W: []byte{0x01, 0x80, 0x00}, R: []byte{0xFF, 0xFF, 0xFF}}}}}
	d, err := hal.Open(&hal.BusMap{SPIPorts: map[string]spi.Port{"SPI0.0": p}}, Name, hal.Conn{Bus: "SPI0.0"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.Read()
	if !errors.Is(err, hal.ErrNACK) {
		t.Fatalf("got %v, want ErrNACK", err)
	}
	t.Log(err)
	if _, err := hal.Open(&hal.BusMap{}, Name, hal.Conn{Bus: "SPI0.0", Options: map[string]string{"channel": "8"}}); !errors.Is(err, hal.ErrBadConn) {
		t.Fatal(err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte{0x00, 0x02, 0x00})
	f.Add([]byte{0xFF, 0xFF, 0xFF})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 3 {
			return
		}
		r := [3]byte{b[0], b[1], b[2]}
		v, err := Decode(r)
		if (r[1]&0x04 != 0) != (err != nil) {
			t.Fatalf("Decode(% x) err=%v", r, err)
		}
		if v > 1023 {
			t.Fatalf("Decode(% x) = %d > 1023", r, v)
		}
	})
}
