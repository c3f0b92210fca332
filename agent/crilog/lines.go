package crilog

import (
	"bytes"
	"errors"
	"io"
	"syscall"
)

// minLineBuf is what a stream's line reader holds while its container's
// lines are short and slow: a container that never logs, or logs a short
// line now and then, costs its log copy this much a stream, not maxLine.
const minLineBuf = 1 << 10

// lineReader splits a stream into lines of at most maxLine bytes (the
// newline counted), as bufio.Reader.ReadSlice('\n') on a maxLine buffer
// does, in a buffer sized by what the stream needs. The buffer starts at
// minLineBuf; it grows (×4, up to maxLine) when a line does not fit in
// it, or when a read filled it (output arriving faster than the buffer
// drains); it goes back to minLineBuf once it is empty and the last read
// did not fill it, or a non-blocking read found the stream drained. So a
// copy waiting on a quiet container holds minLineBuf bytes, and one that
// keeps up with a busy container reads in big chunks.
type lineReader struct {
	r          io.Reader
	buf        []byte
	start, end int   // buf[start:end] is read and not yet returned
	scanned    int   // buf[start:start+scanned] holds no newline
	err        error // the read error after buf[start:end]
	lastFull   bool  // the last read filled the buffer
	total      int64 // bytes read
}

func newLineReader(r io.Reader) *lineReader { return &lineReader{r: r} }

// next returns the next record: a line without its newline (whole), the
// first maxLine bytes of a longer line (partial), or, when the stream
// ends, what is left of an unterminated line: whole at io.EOF, partial on
// any other error, which the following call returns. A reader of a
// non-blocking descriptor that has nothing now returns syscall.EAGAIN: next
// returns it once, keeping what it holds of an unfinished line, and reads
// again on the following call. The line is valid until the next call.
func (l *lineReader) next() (line []byte, partial bool, err error) {
	for empty := 0; ; {
		if i := bytes.IndexByte(l.buf[l.start+l.scanned:l.end], '\n'); i >= 0 {
			i += l.scanned
			line = l.buf[l.start : l.start+i]
			l.start += i + 1
			l.scanned = 0
			return line, false, nil
		}
		l.scanned = l.end - l.start
		if l.end-l.start >= maxLine {
			line = l.buf[l.start : l.start+maxLine]
			l.start += maxLine
			l.scanned = 0
			return line, true, nil
		}
		if l.err != nil {
			if errors.Is(l.err, syscall.EAGAIN) {
				l.err = nil
				if l.start == l.end && len(l.buf) > minLineBuf {
					// drained: a quiet stream holds minLineBuf
					l.buf, l.start, l.end, l.scanned = make([]byte, minLineBuf), 0, 0, 0
				}
				return nil, false, syscall.EAGAIN
			}
			if l.start < l.end {
				line = l.buf[l.start:l.end]
				l.start = l.end
				l.scanned = 0
				return line, l.err != io.EOF, nil
			}
			return nil, false, l.err
		}
		n := l.fill()
		if n > 0 {
			empty = 0
		} else if empty++; empty >= 100 && l.err == nil {
			l.err = io.ErrNoProgress
		}
	}
}

// fill reads once into the buffer's free space, first moving what is
// left to its front and resizing it as the type's comment says.
func (l *lineReader) fill() int {
	pending := l.end - l.start
	size := len(l.buf)
	switch {
	case size == 0 || (pending == 0 && !l.lastFull):
		size = minLineBuf
	case pending == size || l.lastFull:
		size = min(4*size, maxLine)
	}
	if size != len(l.buf) {
		b := make([]byte, size)
		copy(b, l.buf[l.start:l.end])
		l.buf = b
	} else if l.start > 0 {
		copy(l.buf, l.buf[l.start:l.end])
	}
	l.start, l.end = 0, pending
	n, err := l.r.Read(l.buf[l.end:])
	if n < 0 || n > len(l.buf)-l.end {
		n, err = 0, io.ErrShortBuffer // a broken Reader: stop, keep what is buffered
	}
	l.lastFull = l.end+n == len(l.buf)
	l.end += n
	l.total += int64(n)
	l.err = err
	return n
}
