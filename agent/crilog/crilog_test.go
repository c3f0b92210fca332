package crilog

import (
	"bytes"
	"context"
	"errors"
	"io"
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

// errAfter reads s, then fails with err instead of io.EOF.
type errAfter struct {
	s   string
	err error
}

func (r *errAfter) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, r.err
	}
	n := copy(p, r.s)
	r.s = r.s[n:]
	return n, nil
}

func TestCopyStreams(t *testing.T) {
	closed := errors.New("file already closed")
	for _, tc := range []struct {
		name           string
		stdout, stderr io.Reader
		want           []string // stream, tag and line of each record, in order per stream
		wantErr        bool
	}{
		{name: "both streams, last line without newline", stdout: strings.NewReader("a\nb"), stderr: strings.NewReader("e\n"),
			want: []string{"stdout F a", "stdout F b", "stderr F e"}},
		{name: "terminal: stdout only", stdout: strings.NewReader("t\n"), want: []string{"stdout F t"}},
		{name: "reader closed mid-line: the part is a P record", stdout: &errAfter{"x\npart", closed}, stderr: strings.NewReader(""),
			want: []string{"stdout F x", "stdout P part"}, wantErr: true},
		{name: "empty", stdout: strings.NewReader(""), stderr: strings.NewReader("")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "0.log")
			w, err := OpenWriter(path, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			err = w.CopyStreams(tc.stdout, tc.stderr)
			w.Close()
			if (err != nil) != tc.wantErr {
				t.Errorf("CopyStreams: %v, want an error %v", err, tc.wantErr)
			}
			b, _ := os.ReadFile(path)
			var got []string
			for _, rec := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
				if _, rest, ok := strings.Cut(rec, " "); ok {
					got = append(got, rest)
				}
			}
			per := func(recs []string, stream string) (out []string) {
				for _, r := range recs {
					if strings.HasPrefix(r, stream+" ") {
						out = append(out, r)
					}
				}
				return out
			}
			for _, s := range []string{"stdout", "stderr"} {
				if g, w := strings.Join(per(got, s), "|"), strings.Join(per(tc.want, s), "|"); g != w {
					t.Errorf("%s records %q, want %q", s, g, w)
				}
			}
		})
	}
}
