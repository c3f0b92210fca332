package crilog

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"outpost.dev/test/wait"
)

// pipe returns a pipe's read end, blocking (Start makes it non-blocking),
// and its write end.
func pipe(t *testing.T) (int, *os.File) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	return p[0], os.NewFile(uintptr(p[1]), "pipe")
}

// records reads a log's records as "stream tag line", per stream.
func records(t *testing.T, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, rec := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		p := strings.SplitN(rec, " ", 4)
		if len(p) != 4 {
			continue
		}
		out[p[1]] = append(out[p[1]], p[2]+" "+p[3])
	}
	return out
}

func waitDone(t *testing.T, c *PumpCopy) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(time.Minute):
		t.Fatal("copy not done within a minute")
	}
}

func pumpIdle(p *Pump) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.running && len(p.streams) == 0 && p.epfd < 0 && p.wakefd < 0
}

// TestPumpCopies: several containers' streams, written at once, each
// lands whole and in order in its own log; once the writers are gone the
// copies end, their descriptors are closed, the loop's goroutine ends and
// the pump holds no descriptor.
func TestPumpCopies(t *testing.T) {
	p := NewPump()
	dir := t.TempDir()
	const containers, lines = 6, 3000
	var wg sync.WaitGroup
	var copies []*PumpCopy
	var writers []*os.File
	thenCalled := make([]bool, containers)
	for i := range containers {
		w, err := OpenWriter(filepath.Join(dir, fmt.Sprint(i)), 64<<20, 1)
		if err != nil {
			t.Fatal(err)
		}
		outR, outW := pipe(t)
		errR, errW := pipe(t)
		c, err := p.Start(w, func() { thenCalled[i] = true }, outR, errR)
		if err != nil {
			t.Fatal(err)
		}
		copies = append(copies, c)
		writers = append(writers, outW, errW)
	}
	// Every copy runs (no writer has closed its end yet) on one goroutine.
	if n := pumpGoroutines(); n != 1 {
		t.Errorf("%d copies running on %d pump goroutines, want 1", containers, n)
	}
	for i, f := range writers {
		j := i % 2 // 0 stdout, 1 stderr
		wg.Go(func() {
			defer f.Close()
			for n := range lines {
				// some long lines: over maxLine, split into P records
				if n%1000 == 999 {
					fmt.Fprintf(f, "%d-%d %s\n", j, n, strings.Repeat("x", maxLine+100))
					continue
				}
				fmt.Fprintf(f, "%d-%d\n", j, n)
			}
			fmt.Fprint(f, "unterminated")
		})
	}
	wg.Wait()
	for i, c := range copies {
		waitDone(t, c)
		if err := c.Err(); err != nil {
			t.Fatalf("copy %d: %v", i, err)
		}
		if !thenCalled[i] {
			t.Errorf("copy %d: its then was not called before Done", i)
		}
		got := records(t, filepath.Join(dir, fmt.Sprint(i)))
		for j, stream := range []string{"stdout", "stderr"} {
			var want []string
			for n := range lines {
				if n%1000 == 999 {
					long := fmt.Sprintf("%d-%d %s", j, n, strings.Repeat("x", maxLine+100))
					want = append(want, "P "+long[:maxLine], "F "+long[maxLine:])
					continue
				}
				want = append(want, fmt.Sprintf("F %d-%d", j, n))
			}
			want = append(want, "F unterminated")
			if g, w := strings.Join(got[stream], "|"), strings.Join(want, "|"); g != w {
				t.Fatalf("container %d %s: %d records, want %d (first difference at %d)", i, stream, len(got[stream]), len(want), firstDiff(got[stream], want))
			}
		}
	}
	wait.For(t, time.Minute, "the pump's goroutine to end", func() bool { return pumpIdle(p) })

	// An idle pump starts again.
	path := filepath.Join(dir, "again")
	w, err := OpenWriter(path, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	rd, wr := pipe(t)
	c, err := p.Start(w, nil, rd)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(wr, "again\n")
	wr.Close()
	waitDone(t, c)
	if got := strings.Join(records(t, path)["stdout"], "|"); got != "F again" {
		t.Errorf("after idle: records %q", got)
	}
}

// pumpGoroutines counts the goroutines a Pump started, by their creator:
// one not yet scheduled shows the go statement's wrapper, not the loop.
func pumpGoroutines() int {
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
	n := 0
	for _, g := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(g, "created by outpost.dev/agent/crilog.(*Pump).Start ") {
			n++
		}
	}
	return n
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestPumpStop: Stop writes what was read (the line cut short as a
// partial record) and closes the pump's read end; output written after
// stays in the FIFO for its other read end (a shim's, an agent's after a
// restart).
func TestPumpStop(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "out")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	keep, err := unix.Open(fifo, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0) // the shim's read end
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(keep)
	rd, err := unix.Open(fifo, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	wr, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer wr.Close()
	path := filepath.Join(dir, "0.log")
	w, err := OpenWriter(path, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := NewPump()
	c, err := p.Start(w, nil, rd)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(wr, "one\ntwo\nhalf a li")
	wait.For(t, time.Minute, "the pump to read the output", func() bool {
		b, _ := os.ReadFile(path)
		return strings.Contains(string(b), " F two\n")
	})
	// Both read ends share the pipe: once it is empty, the pump holds
	// the cut line.
	wait.For(t, time.Minute, "the pump to read the cut line", func() bool {
		n, err := unix.IoctlGetInt(keep, unix.TIOCINQ) // FIONREAD
		return err == nil && n == 0
	})
	p.Stop(c)
	waitDone(t, c)
	if err := c.Err(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(records(t, path)["stdout"], "|"); got != "F one|F two|P half a li" {
		t.Errorf("records %q", got)
	}
	if err := unix.Fstat(rd, new(unix.Stat_t)); err == nil {
		// The number may have been reused by another descriptor; it must
		// not be the FIFO any more.
		var st, fst unix.Stat_t
		_ = unix.Fstat(rd, &st)
		_ = unix.Stat(fifo, &fst)
		if st.Ino == fst.Ino {
			t.Error("the pump's read end is still open after Stop")
		}
	}
	fmt.Fprint(wr, "ne\nafter\n")
	b := make([]byte, 64)
	n, err := unix.Read(keep, b)
	if err != nil || string(b[:n]) != "ne\nafter\n" {
		t.Errorf("the other read end got %q, %v", b[:max(n, 0)], err)
	}
	wait.For(t, time.Minute, "the pump's goroutine to end", func() bool { return pumpIdle(p) })
}

// TestPumpDrainsWithoutLog: a copy whose log cannot be written (no
// Writer, or a write failing) still reads its streams, so the container
// never blocks on a full pipe.
func TestPumpDrainsWithoutLog(t *testing.T) {
	p := NewPump()
	broken, err := OpenWriter(filepath.Join(t.TempDir(), "0.log"), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	broken.f.Close() // every write fails
	for _, w := range []*Writer{nil, broken} {
		rd, wr := pipe(t)
		c, err := p.Start(w, nil, rd)
		if err != nil {
			t.Fatal(err)
		}
		line := strings.Repeat("y", 1000) + "\n"
		for range 4 << 10 { // 4 MB: many times a pipe's size
			if _, err := wr.WriteString(line); err != nil {
				t.Fatal(err)
			}
		}
		wr.Close()
		waitDone(t, c)
		if (c.Err() != nil) != (w != nil) {
			t.Errorf("writer %v: Err %v", w != nil, c.Err())
		}
	}
}

// TestPumpTurns: a stream that never runs dry does not hold up another
// stream's output.
func TestPumpTurns(t *testing.T) {
	p := NewPump()
	dir := t.TempDir()
	busyR, busyW := pipe(t)
	quietR, quietW := pipe(t)
	wb, _ := OpenWriter(filepath.Join(dir, "busy"), 1<<20, 1)
	wq, _ := OpenWriter(filepath.Join(dir, "quiet"), 0, 0)
	cb, err := p.Start(wb, nil, busyR)
	if err != nil {
		t.Fatal(err)
	}
	cq, err := p.Start(wq, nil, quietR)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var busyWrote sync.WaitGroup
	busyWrote.Go(func() {
		defer busyW.Close()
		line := []byte(strings.Repeat("b", 200) + "\n")
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := busyW.Write(line); err != nil {
				return
			}
		}
	})
	fmt.Fprint(quietW, "hello\n")
	wait.For(t, time.Minute, "the quiet stream's line while the busy one writes", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "quiet"))
		return strings.Contains(string(b), " F hello\n")
	})
	close(stop)
	busyWrote.Wait()
	quietW.Close()
	waitDone(t, cb)
	waitDone(t, cq)
}

// TestPumpStartErrors: a copy of no stream, or of a descriptor epoll
// cannot watch, is refused and its descriptors closed.
func TestPumpStartErrors(t *testing.T) {
	p := NewPump()
	if _, err := p.Start(nil, nil); err == nil {
		t.Error("a copy of no stream was started")
	}
	f, err := os.CreateTemp(t.TempDir(), "regular")
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := p.Start(nil, nil, fd); err == nil {
		t.Error("a regular file was taken as a stream")
	}
	if err := unix.Fstat(fd, new(unix.Stat_t)); err == nil {
		t.Error("the refused descriptor was left open")
	}
	if !pumpIdle(p) {
		t.Error("a refused copy left the pump running or its descriptors open")
	}
}

// TestLineReaderDrained: a non-blocking stream found empty after a long
// line goes back to minLineBuf at once, not at its next output.
func TestLineReaderDrained(t *testing.T) {
	rd, wr := pipe(t)
	defer unix.Close(rd)
	defer wr.Close()
	if err := unix.SetNonblock(rd, true); err != nil {
		t.Fatal(err)
	}
	lr := newLineReader(fdReader(rd))
	fmt.Fprintf(wr, "%s\n", strings.Repeat("z", 10000))
	line, partial, err := lr.next()
	if err != nil || partial || len(line) != 10000 {
		t.Fatalf("got %d bytes, partial %v, %v", len(line), partial, err)
	}
	if len(lr.buf) != maxLine {
		t.Fatalf("buffer %d bytes for a 10000-byte line, want %d", len(lr.buf), maxLine)
	}
	if _, _, err := lr.next(); !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("an empty stream: %v, want EAGAIN", err)
	}
	if len(lr.buf) != minLineBuf {
		t.Fatalf("drained: buffer %d bytes, want %d", len(lr.buf), minLineBuf)
	}
	fmt.Fprint(wr, "more\n")
	if line, _, err := lr.next(); err != nil || string(line) != "more" {
		t.Fatalf("after EAGAIN: %q, %v", line, err)
	}
}
