package mqtt

import (
	"bufio"
	"bytes"
	"testing"
)

// FuzzReadPacket: whatever an external broker sends, reading it returns a
// packet or an error, never panics, and never takes a packet over the
// limit.
func FuzzReadPacket(f *testing.F) {
	for _, seed := range [][]byte{
		{0x20, 2, 0, 0},                           // CONNACK
		{0x20, 2, 0, 4},                           // CONNACK, refused
		{0x30, 0x80, 0x80, 0x40},                  // PUBLISH of 1 MiB
		{0x32, 7, 0, 3, 'a', '/', 'b', 0, 1, 'x'}, // PUBLISH QoS 1
		{0x90, 3, 0, 1, 0x80},                     // SUBACK, refused
		{0x62, 2, 0, 9},                           // PUBREL
		{0xd0, 0},                                 // PINGRESP
		{0x30, 0xff, 0xff, 0xff, 0xff},            // a length past four bytes
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bufio.NewReader(bytes.NewReader(b))
		for range 8 {
			pk, err := readPacket(r)
			if err != nil {
				return
			}
			if pk.FixedHeader.Remaining > maxIncoming || len(pk.Payload) > maxIncoming {
				t.Fatalf("took a %d-byte packet, over the %d-byte limit", pk.FixedHeader.Remaining, maxIncoming)
			}
		}
	})
}
