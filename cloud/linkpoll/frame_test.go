package linkpoll

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/gobwas/ws"
)

// clientFrame is payload as one masked client frame.
func clientFrame(fin bool, op ws.OpCode, payload []byte) []byte {
	mask := [4]byte{0xa1, 0xb2, 0xc3, 0xd4}
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	b = append(b, mask[:]...)
	masked := append([]byte(nil), payload...)
	ws.Cipher(masked, mask, 0)
	return append(b, masked...)
}

func TestParseFrame(t *testing.T) {
	const max = 70000
	long := bytes.Repeat([]byte{7}, 66000)
	for _, tc := range []struct {
		name    string
		in      []byte
		n       int // 0: incomplete
		payload []byte
		op      ws.OpCode
		fin     bool
		err     error
	}{
		{"empty input", nil, 0, nil, 0, false, nil},
		{"one byte", []byte{0x82}, 0, nil, 0, false, nil},
		{"binary", clientFrame(true, ws.OpBinary, []byte("hi")), 8, []byte("hi"), ws.OpBinary, true, nil},
		{"empty binary", clientFrame(true, ws.OpBinary, nil), 6, []byte{}, ws.OpBinary, true, nil},
		{"16-bit length", clientFrame(true, ws.OpBinary, long[:300]), 308, long[:300], ws.OpBinary, true, nil},
		{"64-bit length", clientFrame(false, ws.OpBinary, long), 66014, long, ws.OpBinary, false, nil},
		{"payload incomplete", clientFrame(true, ws.OpBinary, []byte("hello"))[:9], 0, nil, 0, false, nil},
		{"mask incomplete", clientFrame(true, ws.OpBinary, []byte("hello"))[:4], 0, nil, 0, false, nil},
		{"16-bit length incomplete", clientFrame(true, ws.OpBinary, long[:300])[:3], 0, nil, 0, false, nil},
		{"followed by another", append(clientFrame(true, ws.OpPing, []byte("p")), 0x82), 7, []byte("p"), ws.OpPing, true, nil},
		{"unmasked", []byte{0x82, 0x01, 'x'}, 0, nil, 0, false, errUnmasked},
		{"reserved bit", []byte{0xc2, 0x81, 0, 0, 0, 0, 'x'}, 0, nil, 0, false, errReserved},
		{"unknown opcode", []byte{0x83, 0x80, 0, 0, 0, 0}, 0, nil, 0, false, errOpcode},
		{"fragmented ping", clientFrame(false, ws.OpPing, nil), 0, nil, 0, false, errControl},
		{"long close", clientFrame(true, ws.OpClose, long[:126]), 0, nil, 0, false, errControl},
		// Refused on the header alone: the payload is never waited for.
		{"too large, header only", []byte{0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0x10, 0, 0}, 0, nil, 0, false, ErrTooLarge},
		{"length MSB", []byte{0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1}, 0, nil, 0, false, errLengthMSB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, n, err := parseFrame(tc.in, max)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			if n != tc.n {
				t.Fatalf("took %d bytes, want %d", n, tc.n)
			}
			if n == 0 {
				return
			}
			if f.op != tc.op || f.fin != tc.fin || !bytes.Equal(f.payload, tc.payload) {
				t.Fatalf("got op %v fin %v payload %d bytes, want op %v fin %v payload %d bytes", f.op, f.fin, len(f.payload), tc.op, tc.fin, len(tc.payload))
			}
		})
	}
}

func TestServerFrame(t *testing.T) {
	for _, n := range []int{0, 125, 126, 65535, 65536} {
		p := bytes.Repeat([]byte{1}, n)
		b := serverFrame(ws.OpBinary, p)
		h, err := ws.ReadHeader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if !h.Fin || h.OpCode != ws.OpBinary || h.Masked || h.Length != int64(n) || len(b)-int(h.Length) < 2 || !bytes.Equal(b[len(b)-n:], p) {
			t.Fatalf("%d bytes: header %+v, frame %d bytes", n, h, len(b))
		}
	}
}

// FuzzParseFrame: whatever a peer sends, parsing neither panics nor
// takes more than it was given, and never yields a payload over the
// limit.
func FuzzParseFrame(f *testing.F) {
	f.Add(clientFrame(true, ws.OpBinary, []byte("hello")))
	f.Add(clientFrame(false, ws.OpContinuation, bytes.Repeat([]byte{1}, 300)))
	f.Add([]byte{0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 5})
	f.Add([]byte{0x89, 0x80})
	f.Fuzz(func(t *testing.T, in []byte) {
		const max = 512
		fr, n, err := parseFrame(append([]byte(nil), in...), max)
		if err != nil {
			return
		}
		if n < 0 || n > len(in) {
			t.Fatalf("took %d of %d bytes", n, len(in))
		}
		if n > 0 && (len(fr.payload) > max || len(fr.payload) > n) {
			t.Fatalf("payload of %d bytes from a %d-byte frame (limit %d)", len(fr.payload), n, max)
		}
	})
}
