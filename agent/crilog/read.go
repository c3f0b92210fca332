package crilog

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"strconv"
	"time"
)

// Options select what Stream returns, as kubectl logs' flags do.
type Options struct {
	// Tail, if ≥ 0, starts at the last Tail lines; < 0 is all.
	Tail int64
	// Since skips lines logged before it (zero: none skipped).
	Since time.Time
	// LimitBytes stops after this many bytes of output (0: no limit).
	LimitBytes int64
	// Timestamps prefixes each line with its RFC 3339 timestamp.
	Timestamps bool
	// Follow keeps reading as the file grows (and across rotation) until
	// ctx ends or Done returns true and everything written is read.
	Follow bool
	// Done reports that nothing more will be written (the container
	// exited); nil means never, with Follow.
	Done func() bool
	// Poll is how often Follow looks for new data; default 250 ms.
	Poll time.Duration
	// Raw writes each record as soon as it is read, a partial line
	// included, as an attached terminal would show it (kubectl attach);
	// Since applies to each record, Timestamps does not.
	Raw bool
	// Stderr, with Raw, receives the stderr records; stdout's go to the
	// writer Stream is given. Nil: both go there.
	Stderr io.Writer
}

// Files returns the existing files of the log at path, oldest first
// (path.N … path.1, path).
func Files(path string) []string {
	var out []string
	for i := 64; i >= 1; i-- {
		p := path + "." + strconv.Itoa(i)
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	if _, err := os.Stat(path); err == nil {
		out = append(out, path)
	}
	return out
}

// Stream writes the log at path (with its rotated files) to w as the
// container wrote it: records decoded, partial lines joined, optionally
// with timestamps. It returns fs.ErrNotExist if there is no log.
func Stream(ctx context.Context, path string, opt Options, w io.Writer) error {
	files := Files(path)
	if len(files) == 0 {
		return &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
	}
	out := &limited{w: w, left: opt.LimitBytes}
	if opt.Tail >= 0 {
		start, off := tailStart(files, opt.Tail)
		files = files[start:]
		return stream(ctx, files, off, opt, out, path)
	}
	return stream(ctx, files, 0, opt, out, path)
}

var errLimit = errors.New("limit reached")

type limited struct {
	w    io.Writer
	left int64 // 0: unlimited
	on   bool
}

func (l *limited) Write(b []byte) (int, error) {
	if l.left == 0 && !l.on {
		return l.w.Write(b)
	}
	l.on = true
	if l.left <= 0 {
		return 0, errLimit
	}
	if int64(len(b)) > l.left {
		b = b[:l.left]
	}
	n, err := l.w.Write(b)
	l.left -= int64(n)
	if err == nil && l.left <= 0 {
		err = errLimit
	}
	return n, err
}

// tailStart finds the file and offset where the last n full lines
// (F records) begin, reading the files backwards.
func tailStart(files []string, n int64) (int, int64) {
	if n == 0 {
		// Start at the end of the newest file.
		st, err := os.Stat(files[len(files)-1])
		if err != nil {
			return len(files) - 1, 0
		}
		return len(files) - 1, st.Size()
	}
	var count int64
	for i := len(files) - 1; i >= 0; i-- {
		b, err := os.ReadFile(files[i]) // bounded: one rotated file is at most MaxSize
		if err != nil {
			continue
		}
		end := len(b)
		for end > 0 {
			j := bytes.LastIndexByte(b[:end-1], '\n')
			rec := b[j+1 : end]
			if isFull(rec) {
				count++
				if count > n {
					return i, int64(end)
				}
			}
			end = j + 1
			if j < 0 {
				break
			}
		}
	}
	return 0, 0
}

// isFull reports whether a record ends a line (tag F).
func isFull(rec []byte) bool {
	_, rest, ok := bytes.Cut(rec, []byte(" "))
	if !ok {
		return false
	}
	_, rest, ok = bytes.Cut(rest, []byte(" "))
	return ok && len(rest) > 0 && rest[0] == 'F'
}

func stream(ctx context.Context, files []string, off int64, opt Options, w io.Writer, path string) error {
	poll := opt.Poll
	if poll == 0 {
		poll = 250 * time.Millisecond
	}
	var partial []byte
	var lineTS []byte
	emit := func(rec []byte) error {
		ts, rest, ok := bytes.Cut(rec, []byte(" "))
		if !ok {
			return nil
		}
		stream, rest, ok := bytes.Cut(rest, []byte(" "))
		if !ok || len(rest) < 2 {
			return nil
		}
		tag, msg := rest[0], rest[2:]
		if opt.Raw {
			if !opt.Since.IsZero() {
				if t, err := time.Parse(time.RFC3339Nano, string(ts)); err == nil && t.Before(opt.Since) {
					return nil
				}
			}
			to := w
			if opt.Stderr != nil && string(stream) == "stderr" {
				to = opt.Stderr
			}
			out := msg
			if tag == 'F' {
				out = append(msg[:len(msg):len(msg)], '\n')
			}
			_, err := to.Write(out)
			return err
		}
		if len(partial) == 0 {
			lineTS = append(lineTS[:0], ts...)
		}
		partial = append(partial, msg...)
		if tag != 'F' {
			return nil
		}
		defer func() { partial = partial[:0] }()
		if !opt.Since.IsZero() {
			if t, err := time.Parse(time.RFC3339Nano, string(lineTS)); err == nil && t.Before(opt.Since) {
				return nil
			}
		}
		var line []byte
		if opt.Timestamps {
			line = append(append(line, lineTS...), ' ')
		}
		line = append(append(line, partial...), '\n')
		_, err := w.Write(line)
		return err
	}
	for i, name := range files {
		f, err := os.Open(name)
		if err != nil {
			continue // rotated away meanwhile
		}
		if i == 0 && off > 0 {
			_, _ = f.Seek(off, io.SeekStart)
		}
		last := i == len(files)-1
		if err := readRecords(ctx, f, emit, last && opt.Follow, opt, poll, path); err != nil {
			f.Close()
			if errors.Is(err, errLimit) {
				return nil
			}
			return err
		}
		f.Close()
	}
	return nil
}

// readRecords reads records from f; with follow it waits for more at EOF
// and moves to the new file when path was rotated away from f.
func readRecords(ctx context.Context, f *os.File, emit func([]byte) error, follow bool, opt Options, poll time.Duration, path string) error {
	br := bufio.NewReaderSize(f, 64<<10)
	var pending []byte
	for {
		chunk, err := br.ReadSlice('\n')
		pending = append(pending, chunk...)
		if err == nil {
			if e := emit(pending[:len(pending)-1]); e != nil {
				return e
			}
			pending = pending[:0]
			continue
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != io.EOF {
			return err
		}
		if !follow {
			return nil
		}
		// At EOF: rotated? then continue with the new file.
		if st, err1 := os.Stat(path); err1 == nil {
			if cur, err2 := f.Stat(); err2 == nil && !os.SameFile(st, cur) {
				nf, err := os.Open(path)
				if err == nil {
					// Drain what was written to the old file before the rename.
					rest, _ := io.ReadAll(br)
					pending = append(pending, rest...)
					for _, rec := range bytes.SplitAfter(pending, []byte("\n")) {
						if len(rec) > 0 && rec[len(rec)-1] == '\n' {
							if e := emit(rec[:len(rec)-1]); e != nil {
								nf.Close()
								return e
							}
						}
					}
					pending = pending[:0]
					f.Close()
					*f = *nf
					br.Reset(f)
					continue
				}
			}
		}
		if opt.Done != nil && opt.Done() {
			// One more read for what was written before it ended.
			rest, _ := io.ReadAll(br)
			if len(rest) == 0 {
				return nil
			}
			pending = append(pending, rest...)
			for _, rec := range bytes.SplitAfter(pending, []byte("\n")) {
				if len(rec) > 0 && rec[len(rec)-1] == '\n' {
					if e := emit(rec[:len(rec)-1]); e != nil {
						return e
					}
				}
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(poll):
		}
	}
}
