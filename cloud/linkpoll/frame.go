package linkpoll

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/gobwas/ws"
)

// Errors a client's frame can fail with; each closes the connection.
// ErrTooLarge and ErrText are exported for a Refuser to tell them apart.
var (
	errUnmasked  = errors.New("client frame not masked")
	errReserved  = errors.New("frame has reserved bits set (no extension was negotiated)")
	errControl   = errors.New("control frame fragmented or over 125 bytes")
	errLengthMSB = errors.New("frame length has its most significant bit set")
	// ErrTooLarge: a message over Config.MaxMessage (close code 1009).
	ErrTooLarge = errors.New("message too large")
	errOpcode   = errors.New("unknown opcode")
	errSequence = errors.New("continuation frame outside a fragmented message, or a new message inside one")
	// ErrText: a text message (close code 1003).
	ErrText = errors.New("text messages are refused: messages are binary")
)

// frame is one parsed client frame; payload is unmasked, in place in the
// input it was parsed from.
type frame struct {
	fin     bool
	op      ws.OpCode
	payload []byte
}

// parseFrame parses the client frame at the front of in, refusing one
// whose payload would exceed max as soon as its header is in, before
// waiting for the payload. n is the bytes it took; n == 0 with a nil
// error means in holds no complete frame yet. The payload is unmasked in
// place.
func parseFrame(in []byte, max int) (f frame, n int, err error) {
	if len(in) < 2 {
		return f, 0, nil
	}
	b0, b1 := in[0], in[1]
	f.fin = b0&0x80 != 0
	f.op = ws.OpCode(b0 & 0x0f)
	if b0&0x70 != 0 {
		return f, 0, errReserved
	}
	switch f.op {
	case ws.OpContinuation, ws.OpText, ws.OpBinary, ws.OpClose, ws.OpPing, ws.OpPong:
	default:
		return f, 0, fmt.Errorf("%w %#x", errOpcode, byte(f.op))
	}
	if b1&0x80 == 0 {
		return f, 0, errUnmasked
	}
	hdr := 2
	var length uint64
	switch l := b1 & 0x7f; l {
	case 126:
		if len(in) < 4 {
			return f, 0, nil
		}
		length, hdr = uint64(binary.BigEndian.Uint16(in[2:4])), 4
	case 127:
		if len(in) < 10 {
			return f, 0, nil
		}
		length, hdr = binary.BigEndian.Uint64(in[2:10]), 10
		if length>>63 != 0 {
			return f, 0, errLengthMSB
		}
	default:
		length = uint64(l)
	}
	if f.op.IsControl() && (!f.fin || length > 125) {
		return f, 0, errControl
	}
	if length > uint64(max) {
		return f, 0, fmt.Errorf("%w: a frame of %d bytes, the limit is %d", ErrTooLarge, length, max)
	}
	var mask [4]byte
	if len(in) < hdr+4 {
		return f, 0, nil
	}
	copy(mask[:], in[hdr:hdr+4])
	hdr += 4
	end := hdr + int(length)
	if len(in) < end {
		return f, 0, nil
	}
	f.payload = in[hdr:end:end]
	ws.Cipher(f.payload, mask, 0)
	return f, end, nil
}

// serverFrame is payload as one unmasked server frame of opcode op.
func serverFrame(op ws.OpCode, payload []byte) []byte {
	b := make([]byte, 0, 10+len(payload)) // 10: the longest unmasked header
	b = append(b, byte(0x80)|byte(op))
	switch n := len(payload); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}
