package logs

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"outpost.dev/agent/crilog"
	"outpost.dev/wire"
)

// paths is a fake pod reconciler: one log file per container name.
type paths struct {
	dir     string
	running func() bool
}

func (p paths) LogPath(_ context.Context, ns, pod, container string, previous bool) (string, func() bool, error) {
	name := container
	if previous {
		name += ".prev"
	}
	path := filepath.Join(p.dir, ns+"_"+pod+"_"+name+".log")
	if _, err := os.Stat(path); err != nil {
		return "", nil, fmt.Errorf("container %s of pod %s/%s has no log: %w", container, ns, pod, fs.ErrNotExist)
	}
	return path, p.running, nil
}

// relay collects what the server sends.
type relay struct {
	mu     sync.Mutex
	frames []wire.StreamData
	got    chan struct{}
}

func newRelay() *relay { return &relay{got: make(chan struct{}, 1024)} }

func (r *relay) send(_ context.Context, t wire.Type, _ uint64, body wire.Body) error {
	if t != wire.TypeStreamData {
		return fmt.Errorf("sent %s", t)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// Encode as the link does: the body is not kept.
	b, err := wire.Encode(t, 0, body)
	if err != nil {
		return err
	}
	f, _ := wire.Decode(b)
	var d wire.StreamData
	if err := f.DecodeBody(&d); err != nil {
		return err
	}
	r.frames = append(r.frames, d)
	r.got <- struct{}{}
	return nil
}

func (r *relay) snapshot() []wire.StreamData {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]wire.StreamData(nil), r.frames...)
}

// until waits for a frame of stream id satisfying ok, acking data as a
// relay does when ack is set.
func (r *relay) wait(t *testing.T, what string, ok func([]wire.StreamData) bool) []wire.StreamData {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if fs := r.snapshot(); ok(fs) {
			return fs
		}
		select {
		case <-r.got:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; got %d frames", what, len(r.snapshot()))
		}
	}
}

func data(fs []wire.StreamData, id uint32) (string, bool, string) {
	var b strings.Builder
	eof, errText := false, ""
	for _, f := range fs {
		if f.ID != id {
			continue
		}
		b.Write(f.Data)
		if f.EOF {
			eof, errText = true, f.Error
		}
	}
	return b.String(), eof, errText
}

func writeLog(t *testing.T, path string, lines ...string) {
	t.Helper()
	w, err := crilog.OpenWriter(path, 1<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for _, l := range lines {
		if err := w.Record("stdout", []byte(l), false); err != nil {
			t.Fatal(err)
		}
	}
}

func frame(t *testing.T, typ wire.Type, body wire.Body) wire.Frame {
	t.Helper()
	b, err := wire.Encode(typ, 0, body)
	if err != nil {
		t.Fatal(err)
	}
	f, err := wire.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestStreamTailPreviousAndErrors(t *testing.T) {
	dir := t.TempDir()
	writeLog(t, filepath.Join(dir, "default_web_app.log"), "one", "two", "three")
	writeLog(t, filepath.Join(dir, "default_web_app.prev.log"), "before the crash")
	r := newRelay()
	s := New(Config{Paths: paths{dir: dir}, SendWait: r.send})
	defer s.Wait()

	open := func(o wire.StreamOpen) {
		if !s.Handle(frame(t, wire.TypeStreamOpen, &o)) {
			t.Fatal("stream-open not handled")
		}
	}
	open(wire.StreamOpen{ID: 1, Namespace: "default", Pod: "web", Container: "app", TailLines: -1})
	open(wire.StreamOpen{ID: 2, Namespace: "default", Pod: "web", Container: "app", TailLines: 2})
	open(wire.StreamOpen{ID: 3, Namespace: "default", Pod: "web", Container: "app", Previous: true, TailLines: -1})
	open(wire.StreamOpen{ID: 4, Namespace: "default", Pod: "web", Container: "nope", TailLines: -1})
	open(wire.StreamOpen{ID: 5, Namespace: "default", Pod: "web", Container: "app", TailLines: -1, LimitBytes: 6})

	fs := r.wait(t, "five EOFs", func(fs []wire.StreamData) bool {
		n := 0
		for _, f := range fs {
			if f.EOF {
				n++
			}
		}
		return n == 5
	})
	for _, c := range []struct {
		id        uint32
		want, err string
	}{
		{1, "one\ntwo\nthree\n", ""},
		{2, "two\nthree\n", ""},
		{3, "before the crash\n", ""},
		{4, "", "container nope of pod default/web has no log"},
		{5, "one\ntw", ""}, // 6 bytes
	} {
		got, eof, errText := data(fs, c.id)
		if got != c.want || !eof || !strings.HasPrefix(errText, c.err) || (c.err == "") != (errText == "") {
			t.Errorf("stream %d: %q eof %v error %q; want %q error %q", c.id, got, eof, errText, c.want, c.err)
		}
	}
	if s.Handle(wire.Frame{Type: wire.TypeSync}) {
		t.Error("a sync frame was taken as a stream frame")
	}
}

// TestFollowWindowAndCancel: a followed log sends no more than the window
// ahead of the relay's acks, shows new lines as they come, and ends on
// cancel.
func TestFollowWindowAndCancel(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "default_big_app.log")
	line := strings.Repeat("x", 1000)
	var lines []string
	for range 600 { // ~600 KB, more than two windows
		lines = append(lines, line)
	}
	writeLog(t, path, lines...)
	r := newRelay()
	s := New(Config{Paths: paths{dir: dir, running: func() bool { return true }}, SendWait: r.send, FlushEvery: 10 * time.Millisecond})
	full := make(chan uint64, 1)
	s.windowFull = func(inFlight uint64) {
		select {
		case full <- inFlight:
		default:
		}
	}
	defer s.Wait()
	s.Handle(frame(t, wire.TypeStreamOpen, &wire.StreamOpen{ID: 7, Namespace: "default", Pod: "big", Container: "app", Follow: true, TailLines: -1}))

	total := func(fs []wire.StreamData) uint64 {
		n := uint64(0)
		for _, f := range fs {
			if len(f.Data) > wire.MaxStreamChunk {
				t.Fatalf("chunk of %d bytes", len(f.Data))
			}
			n += uint64(len(f.Data))
		}
		return n
	}
	// The stream stops for the relay's credit: what it sent before is all
	// it sends without an ack.
	select {
	case <-full:
	case <-time.After(10 * time.Second):
		t.Fatalf("the stream never waited for credit; %d bytes sent without an ack", total(r.snapshot()))
	}
	if n := total(r.snapshot()); n > wire.StreamWindow || n < wire.StreamWindow-wire.MaxStreamChunk {
		t.Fatalf("%d bytes sent without an ack; window %d", n, wire.StreamWindow)
	}
	// Ack everything as it comes until the whole file arrived.
	want := uint64(600 * 1001)
	for total(r.snapshot()) < want {
		s.Handle(frame(t, wire.TypeStreamAck, &wire.StreamAck{ID: 7, Consumed: total(r.snapshot())}))
		select {
		case <-r.got:
		case <-time.After(10 * time.Second):
			t.Fatalf("stalled at %d of %d bytes", total(r.snapshot()), want)
		}
	}
	s.Handle(frame(t, wire.TypeStreamAck, &wire.StreamAck{ID: 7, Consumed: want}))
	// New lines show up while following.
	w, err := crilog.OpenWriter(path, 1<<30, 2)
	if err != nil {
		t.Fatal(err)
	}
	_ = w.Record("stdout", []byte("fresh"), false)
	w.Close()
	r.wait(t, "the fresh line", func(fs []wire.StreamData) bool {
		got, _, _ := data(fs, 7)
		return strings.HasSuffix(got, "fresh\n")
	})
	s.Handle(frame(t, wire.TypeStreamAck, &wire.StreamAck{ID: 7, Cancel: true}))
	done := make(chan struct{})
	go func() { s.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("stream did not end on cancel")
	}
}

// TestFollowEndsWhenContainerStops and the stream bound.
func TestFollowEndsAndBound(t *testing.T) {
	dir := t.TempDir()
	writeLog(t, filepath.Join(dir, "default_p_app.log"), "last words")
	var mu sync.Mutex
	alive := true
	running := func() bool { mu.Lock(); defer mu.Unlock(); return alive }
	r := newRelay()
	s := New(Config{Paths: paths{dir: dir, running: running}, SendWait: r.send, MaxStreams: 2, FlushEvery: 10 * time.Millisecond})
	defer s.Wait()
	for id := uint32(1); id <= 3; id++ {
		s.Handle(frame(t, wire.TypeStreamOpen, &wire.StreamOpen{ID: id, Namespace: "default", Pod: "p", Container: "app", Follow: true, TailLines: -1}))
	}
	fs := r.wait(t, "the refusal of the third", func(fs []wire.StreamData) bool { _, eof, _ := data(fs, 3); return eof })
	if _, _, e := data(fs, 3); !strings.Contains(e, "too many log streams") {
		t.Errorf("third stream: %q", e)
	}
	mu.Lock()
	alive = false
	mu.Unlock()
	fs = r.wait(t, "both ends", func(fs []wire.StreamData) bool {
		_, a, _ := data(fs, 1)
		_, b, _ := data(fs, 2)
		return a && b
	})
	if got, _, e := data(fs, 1); got != "last words\n" || e != "" {
		t.Errorf("stream 1: %q %q", got, e)
	}
	// Disconnected ends streams at once.
	mu.Lock()
	alive = true
	mu.Unlock()
	s.Handle(frame(t, wire.TypeStreamOpen, &wire.StreamOpen{ID: 9, Namespace: "default", Pod: "p", Container: "app", Follow: true, TailLines: -1}))
	r.wait(t, "data on stream 9", func(fs []wire.StreamData) bool { got, _, _ := data(fs, 9); return got != "" })
	s.Disconnected()
	s.Wait()
}
