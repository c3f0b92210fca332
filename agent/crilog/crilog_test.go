package crilog

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"outpost.dev/test/wait"
)

func TestWriteRotateRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	w, err := OpenWriter(path, 200, 3)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	w.now = func() time.Time { clock = clock.Add(time.Second); return clock }
	var in strings.Builder
	for i := range 20 {
		in.WriteString(strings.Repeat("x", i) + "\n")
	}
	long := strings.Repeat("L", maxLine+10)
	in.WriteString(long + "\nno newline")
	if err := w.Copy("stdout", strings.NewReader(in.String())); err != nil {
		t.Fatal(err)
	}
	w.Close()
	files := Files(path)
	if len(files) != 3 {
		t.Fatalf("files %v, want 3 (rotation keeps max-files)", files)
	}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			if p := strings.SplitN(line, " ", 4); len(p) != 4 || p[1] != "stdout" || (p[2] != "F" && p[2] != "P") {
				t.Fatalf("not a CRI record: %q", line)
			}
		}
	}
	read := func(o Options) string {
		var b bytes.Buffer
		if err := Stream(context.Background(), path, o, &b); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	all := read(Options{Tail: -1})
	if !strings.HasSuffix(all, long+"\nno newline\n") {
		t.Errorf("partial records not joined: ...%q", all[max(0, len(all)-40):])
	}
	if got := read(Options{Tail: 1}); got != "no newline\n" {
		t.Errorf("tail 1 = %q", got)
	}
	if got := read(Options{Tail: 2, Timestamps: true}); !strings.HasPrefix(got, "2026-11-25T") || strings.Count(got, "\n") != 2 {
		t.Errorf("tail 2 with timestamps = %.80q", got)
	}
	if got := read(Options{Tail: -1, LimitBytes: 5}); len(got) != 5 {
		t.Errorf("limit 5 = %q", got)
	}
	if got := read(Options{Tail: -1, Since: clock}); got != "no newline\n" {
		t.Errorf("since the last record = %q", got)
	}
}

func TestFollowAcrossRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	w, err := OpenWriter(path, 120, 2)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var out syncBuffer
	var finished atomic.Bool
	go func() {
		defer close(done)
		_ = Stream(context.Background(), path, Options{Tail: -1, Follow: true, Poll: 5 * time.Millisecond,
			Done: finished.Load}, &out)
	}()
	// Each line is followed before the next is written: with two files of
	// 120 bytes kept, a follower left behind would lose lines to rotation.
	for i := range 10 {
		line := "line-" + string(rune('a'+i))
		_ = w.Record("stderr", []byte(line), false)
		wait.For(t, 5*time.Second, line+" followed", func() bool { return strings.Contains(out.String(), line+"\n") })
	}
	w.Close()
	finished.Store(true)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("follow did not end after Done")
	}
	for i := range 10 {
		if want := "line-" + string(rune('a'+i)) + "\n"; !strings.Contains(out.String(), want) {
			t.Errorf("followed output lacks %q: %q", want, out.String())
		}
	}
}

// syncBuffer is a bytes.Buffer written by one goroutine and read by another.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Raw, as kubectl attach reads: records as they are, partial lines
// included, stdout and stderr apart, none logged before Since.
func TestRawSince(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	w, err := OpenWriter(path, 1<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	_ = w.Record("stdout", []byte("before"), false)
	since := time.Now()
	_ = w.Record("stdout", []byte("out "), true)
	_ = w.Record("stdout", []byte("line"), false)
	_ = w.Record("stderr", []byte("err line"), false)
	w.Close()
	var out, errb bytes.Buffer
	if err := Stream(context.Background(), path, Options{Tail: 10, Since: since, Raw: true, Stderr: &errb}, &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != "out line\n" || errb.String() != "err line\n" {
		t.Fatalf("stdout %q, stderr %q; want the records since, apart", out.String(), errb.String())
	}
}
