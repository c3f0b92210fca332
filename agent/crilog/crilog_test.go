package crilog

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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
	rd, wr := pipe(t)
	c, err := NewPump().Start(w, nil, rd) // closes w when wr is closed and drained
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer wr.Close()
		_, _ = io.WriteString(wr, in.String())
	}()
	waitDone(t, c)
	if err := c.Err(); err != nil {
		t.Fatal(err)
	}
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

// TestMain lets the test binary be containerd's binary logger
// (OUTPOST_TEST_LOGGER=path): Run on fds 3, 4 and 5 as the shim passes them.
func TestMain(m *testing.M) {
	if path := os.Getenv("OUTPOST_TEST_LOGGER"); path != "" {
		if err := Run(path, 0, 0); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestRun runs the logger as a shim does: it says it is ready by closing
// fd 5 before the container writes, copies stdout (fd 3) and stderr (fd 4)
// until both end, and reads, and drops, the output of a log it cannot open.
func TestRun(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name           string
		path           string
		stdout, stderr string
		want           map[string][]string
		wantErr        string
		term           bool // SIGTERM once the writers closed, as the shim does at task delete
	}{
		{name: "both streams, last line without newline", path: filepath.Join(dir, "both.log"),
			stdout: "a\nb", stderr: "e\n",
			want: map[string][]string{"stdout": {"F a", "F b"}, "stderr": {"F e"}}},
		{name: "terminal: stdout only", path: filepath.Join(dir, "tty.log"), stdout: "t\n",
			want: map[string][]string{"stdout": {"F t"}}},
		{name: "long line", path: filepath.Join(dir, "long.log"), stdout: strings.Repeat("L", maxLine+1) + "\n",
			want: map[string][]string{"stdout": {"P " + strings.Repeat("L", maxLine), "F L"}}},
		{name: "the shim's SIGTERM: what is left in the pipes is still written", path: filepath.Join(dir, "term.log"),
			stdout: numbered(10000), want: map[string][]string{"stdout": numberedRecords(10000)}, term: true},
		{name: "log cannot be opened: drained", path: filepath.Join(dir, "missing", "x.log"),
			stdout: strings.Repeat("x\n", 200000), stderr: "e\n", wantErr: "logger: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var parent, child []*os.File
			for range 3 {
				r, w, err := os.Pipe()
				if err != nil {
					t.Fatal(err)
				}
				parent, child = append(parent, w), append(child, r) // fds 3, 4: the logger reads
			}
			// fd 5 is the ready pipe's write end, which the logger closes.
			child[2], parent[2] = parent[2], child[2]
			cmd := exec.Command(self, "-test.run=^$")
			cmd.Env = append(os.Environ(), "OUTPOST_TEST_LOGGER="+tc.path)
			cmd.ExtraFiles = child
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// A logger that stops reading would block the writes below.
			stuck := time.AfterFunc(time.Minute, func() { _ = cmd.Process.Kill() })
			defer stuck.Stop()
			for _, f := range child {
				f.Close()
			}
			// Ready: every write end of fd 5 is closed, so the read sees EOF.
			if n, err := parent[2].Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("ready pipe read %d, %v; want EOF", n, err)
			}
			var wg sync.WaitGroup
			for i, data := range []string{tc.stdout, tc.stderr} {
				wg.Go(func() {
					defer parent[i].Close()
					_, _ = io.WriteString(parent[i], data) // blocks if the logger stops reading
				})
			}
			wg.Wait()
			if tc.term {
				// About 49 KB, which the pipe holds: the writes may end
				// before the logger read much of it.
				if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
			}
			err := cmd.Wait()
			parent[2].Close()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(out.String(), tc.wantErr) {
					t.Fatalf("exit %v, output %q; want a failure saying %q", err, out.String(), tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("logger: %v: %s", err, out.String())
			}
			got := records(t, tc.path)
			for _, stream := range []string{"stdout", "stderr"} {
				if g, w := strings.Join(got[stream], "|"), strings.Join(tc.want[stream], "|"); g != w {
					t.Errorf("%s records %q, want %q", stream, g, w)
				}
			}
		})
	}
}

// numbered is the lines 0 to n-1; numberedRecords their CRI records.
func numbered(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "%d\n", i)
	}
	return b.String()
}

func numberedRecords(n int) []string {
	r := make([]string, n)
	for i := range r {
		r[i] = fmt.Sprintf("F %d", i)
	}
	return r
}

// TestRunByHand: started with no shim's descriptors, Run says so.
func TestRunByHand(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), "OUTPOST_TEST_LOGGER="+filepath.Join(t.TempDir(), "x.log"))
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "fd 3 is not a pipe") {
		t.Fatalf("exit %v, output %q; want a refusal naming fd 3", err, out)
	}
}
