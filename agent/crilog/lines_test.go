package crilog

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

type record struct {
	line    string
	partial bool
}

// bufioRecords is the reference: what Copy wrote when it read through a
// bufio.Reader of maxLine bytes.
func bufioRecords(r io.Reader) ([]record, error) {
	br := bufio.NewReaderSize(r, maxLine)
	var out []record
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			out = append(out, record{string(line[:len(line)-1]), false})
		case errors.Is(err, bufio.ErrBufferFull):
			out = append(out, record{string(line), true})
		default:
			if len(line) > 0 {
				out = append(out, record{string(line), err != io.EOF})
			}
			if err == io.EOF {
				return out, nil
			}
			return out, err
		}
	}
}

func lineRecords(r io.Reader) ([]record, error) {
	lr := newLineReader(r)
	var out []record
	for {
		line, partial, err := lr.next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, record{string(line), partial})
	}
}

// chunks reads data in pieces of the given sizes (cycled), then returns
// end (io.EOF or another error).
type chunks struct {
	data  []byte
	sizes []int
	i     int
	end   error
}

func (c *chunks) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, c.end
	}
	n := min(len(p), len(c.data))
	if len(c.sizes) > 0 {
		n = min(n, c.sizes[c.i%len(c.sizes)])
		c.i++
	}
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

func sameRecords(t testing.TB, data []byte, sizes []int, end error) {
	t.Helper()
	want, werr := bufioRecords(&chunks{data: data, sizes: sizes, end: end})
	got, gerr := lineRecords(&chunks{data: data, sizes: sizes, end: end})
	if !errors.Is(gerr, werr) && !errors.Is(werr, gerr) {
		t.Fatalf("error %v, bufio's %v", gerr, werr)
	}
	if len(got) != len(want) {
		t.Fatalf("%d records, bufio's %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("record %d: %d bytes partial=%v, bufio's %d bytes partial=%v", i, len(got[i].line), got[i].partial, len(want[i].line), want[i].partial)
		}
	}
}

// TestLineReaderAsBufio: the records are bufio.Reader's on a maxLine
// buffer, for lines around every size boundary and reads of every size.
func TestLineReaderAsBufio(t *testing.T) {
	closed := errors.New("read on a closed FIFO")
	lines := func(ns ...int) []byte {
		var b bytes.Buffer
		for i, n := range ns {
			b.WriteString(strings.Repeat(string(rune('a'+i%26)), n))
			b.WriteByte('\n')
		}
		return b.Bytes()
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"empty lines", []byte("\n\n\n")},
		{"short lines", lines(0, 1, 5, 80, 200)},
		{"no newline at the end", []byte("one\ntwo")},
		{"around the first buffer", lines(minLineBuf-2, minLineBuf-1, minLineBuf, minLineBuf+1, 3)},
		{"around maxLine", lines(maxLine-2, maxLine-1, maxLine, maxLine+1, 7)},
		{"three maxLines and a bit", lines(3*maxLine + 5)},
		{"unterminated maxLine", bytes.Repeat([]byte("x"), maxLine)},
		{"unterminated past maxLine", bytes.Repeat([]byte("y"), maxLine+3)},
		{"long then short", lines(40000, 1, 2, 3, 20000, 4)},
	}
	sizes := [][]int{nil, {1}, {7}, {minLineBuf}, {3 * minLineBuf}, {maxLine}, {1, 5000, 13, 70000}}
	for _, tt := range tests {
		for _, sz := range sizes {
			for _, end := range []error{io.EOF, closed} {
				t.Run(tt.name, func(t *testing.T) { sameRecords(t, tt.data, sz, end) })
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		var b bytes.Buffer
		for range rng.IntN(40) {
			n := rng.IntN(64)
			if rng.IntN(8) == 0 {
				n = rng.IntN(3 * maxLine)
			}
			b.Write(bytes.Repeat([]byte{'z'}, n))
			if rng.IntN(10) > 0 {
				b.WriteByte('\n')
			}
		}
		sz := []int{1 + rng.IntN(20000), 1 + rng.IntN(300)}
		t.Run("random", func(t *testing.T) {
			if i%2 == 0 {
				sameRecords(t, b.Bytes(), sz, io.EOF)
			} else {
				sameRecords(t, b.Bytes(), sz, closed)
			}
		})
	}
}

// TestLineReaderBuffer: the buffer grows for a long line or a reader
// that keeps it full, and is back to minLineBuf once the stream is quiet.
func TestLineReaderBuffer(t *testing.T) {
	pr, pw := io.Pipe()
	lr := newLineReader(pr)
	writeLines := func(ns ...int) {
		go func() {
			for _, n := range ns {
				_, _ = pw.Write(append(bytes.Repeat([]byte("l"), n), '\n'))
			}
		}()
		for _, n := range ns {
			line, partial, err := lr.next()
			if err != nil || partial || len(line) != n {
				t.Fatalf("line of %d bytes: got %d bytes, partial %v, %v", n, len(line), partial, err)
			}
		}
	}
	writeLines(10, 20, 30)
	if len(lr.buf) != minLineBuf {
		t.Fatalf("short lines: buffer %d bytes, want %d", len(lr.buf), minLineBuf)
	}
	writeLines(10000)
	if len(lr.buf) != maxLine {
		t.Fatalf("a 10000-byte line: buffer %d bytes, want %d", len(lr.buf), maxLine)
	}
	writeLines(5)
	if len(lr.buf) != minLineBuf {
		t.Fatalf("a short line after a long one (the pipe drained): buffer %d bytes, want %d", len(lr.buf), minLineBuf)
	}

	// A reader that fills every read: the buffer grows to maxLine.
	busy := &chunks{data: bytes.Repeat([]byte("0123456789abcde\n"), 4096), end: io.EOF}
	lr = newLineReader(busy)
	biggest := 0
	for {
		_, _, err := lr.next()
		if err != nil {
			break
		}
		biggest = max(biggest, len(lr.buf))
	}
	if biggest != maxLine {
		t.Fatalf("a reader that always fills the buffer: at most %d bytes, want %d", biggest, maxLine)
	}
	if len(lr.buf) != minLineBuf {
		t.Fatalf("a reader that ran dry: %d bytes at its end, want %d", len(lr.buf), minLineBuf)
	}
}

// TestLineReaderNoProgress: a reader that returns nothing, forever,
// ends the copy instead of spinning.
func TestLineReaderNoProgress(t *testing.T) {
	lr := newLineReader(zeroReader{})
	if _, _, err := lr.next(); !errors.Is(err, io.ErrNoProgress) {
		t.Fatalf("got %v, want io.ErrNoProgress", err)
	}
}

type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

// FuzzLineReader: any output, read in any pieces, gives bufio's records.
func FuzzLineReader(f *testing.F) {
	f.Add([]byte("a\nbb\n\nccc"), uint16(3), uint16(1), false)
	f.Add(bytes.Repeat([]byte("x"), maxLine+10), uint16(4096), uint16(7), true)
	f.Fuzz(func(t *testing.T, data []byte, s1, s2 uint16, closed bool) {
		end := io.EOF
		if closed {
			end = io.ErrClosedPipe
		}
		sameRecords(t, data, []int{int(s1) + 1, int(s2) + 1}, end)
	})
}
