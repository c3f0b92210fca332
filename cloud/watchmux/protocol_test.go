package watchmux

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"k8s.io/apimachinery/pkg/watch"

	"outpost.dev/test/wait"
)

// fakeServer is the server side of a connection, frame by frame.
type fakeServer struct {
	t    *testing.T
	fr   *http2.Framer
	hbuf bytes.Buffer
	henc *hpack.Encoder
}

// pipeConn is a connection to a fake server over loopback TCP: the
// server sends settings first, as an HTTP/2 server does.
func pipeConn(t *testing.T, m *Mux, settings ...http2.Setting) (*conn, *fakeServer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cl, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close(); sv.Close() })
	fs := &fakeServer{t: t, fr: http2.NewFramer(sv, bufio.NewReader(sv))}
	fs.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fs.henc = hpack.NewEncoder(&fs.hbuf)
	errc := make(chan error, 1)
	go func() {
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(sv, preface); err != nil || string(preface) != http2.ClientPreface {
			errc <- errors.New("no preface")
			return
		}
		errc <- fs.fr.WriteSettings(settings...)
	}()
	var c *conn
	done := make(chan error, 1)
	go func() {
		var err error
		c, err = m.handshake(cl)
		done <- err
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// The client's SETTINGS, WINDOW_UPDATE, and the ack of ours.
	for range 3 {
		if _, err := fs.fr.ReadFrame(); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	m.conns = append(m.conns, c)
	go c.read()
	return c, fs
}

// expect reads frames until one of type T for which ok holds.
func expect[T http2.Frame](fs *fakeServer, ok func(T) bool) T {
	fs.t.Helper()
	for {
		f, err := fs.fr.ReadFrame()
		if err != nil {
			fs.t.Fatal(err)
		}
		if x, is := f.(T); is && ok(x) {
			return x
		}
	}
}

func (fs *fakeServer) respond(id uint32, status, contentType string) {
	fs.t.Helper()
	fs.hbuf.Reset()
	fs.henc.WriteField(hpack.HeaderField{Name: ":status", Value: status})
	fs.henc.WriteField(hpack.HeaderField{Name: "content-type", Value: contentType})
	if err := fs.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: fs.hbuf.Bytes(), EndHeaders: true}); err != nil {
		fs.t.Fatal(err)
	}
}

const protoWatch = "application/vnd.kubernetes.protobuf;stream=watch"

// The multiplexing itself against a fake server: MAX_CONCURRENT_STREAMS,
// the request's headers, PING, window updates as events are consumed,
// RST_STREAM on cancel, a stream whose headers are over the limit ending
// alone, and GOAWAY ending the streams it cut off.
func TestProtocol(t *testing.T) {
	m := &Mux{host: "api:6443", userAgent: "ua", maxEvent: 1 << 20, bearer: "secret"}
	c, fs := pipeConn(t, m, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 3})

	r1, r2, r3 := &recorder{}, &recorder{}, &recorder{}
	opened := make(chan *Stream, 3)
	go func() {
		for i, r := range []*recorder{r1, r2, r3} {
			s, err := c.open("/api/v1/pods?watch=true", "system:node:n"+string(rune('0'+i)), r)
			if err != nil {
				t.Error(err)
			}
			opened <- s
		}
	}()
	h1 := expect(fs, func(*http2.MetaHeadersFrame) bool { return true })
	fields := map[string]string{}
	for _, f := range h1.Fields {
		fields[f.Name] = f.Value
	}
	for k, v := range map[string]string{":method": "GET", ":path": "/api/v1/pods?watch=true", ":authority": "api:6443",
		"authorization": "Bearer secret", "impersonate-user": "system:node:n0", "accept": acceptHeader} {
		if fields[k] != v {
			t.Errorf("header %s: %q, want %q", k, fields[k], v)
		}
	}
	if !h1.StreamEnded() {
		t.Error("a watch request has a body")
	}
	expect(fs, func(*http2.MetaHeadersFrame) bool { return true })
	expect(fs, func(*http2.MetaHeadersFrame) bool { return true })
	s1, s2, _ := <-opened, <-opened, <-opened
	if c.hasRoom() {
		t.Fatal("room for a fourth stream past the server's MAX_CONCURRENT_STREAMS of 3")
	}

	// PING is answered.
	fs.fr.WritePing(false, [8]byte{1, 2, 3})
	if p := expect(fs, func(p *http2.PingFrame) bool { return p.IsAck() }); p.Data != [8]byte{1, 2, 3} {
		t.Fatalf("PING answered with %v", p.Data)
	}

	// Events are consumed as they arrive and the window given back.
	fs.respond(1, "200", protoWatch)
	ev := framed(t, watch.Added, pod("a"))
	sent := 0
	for sent < streamWindow/2+1 {
		fs.fr.WriteData(1, false, ev)
		sent += len(ev)
	}
	wu := expect(fs, func(w *http2.WindowUpdateFrame) bool { return w.StreamID == 1 })
	if wu.Increment < streamWindow/2 {
		t.Fatalf("window update of %d", wu.Increment)
	}
	if n, ended, err := r1.state(); ended || n == 0 {
		t.Fatalf("stream 1: %d events, ended %v %v", n, ended, err)
	}

	// Cancel resets the stream at the server.
	s2.Cancel()
	expect(fs, func(r *http2.RSTStreamFrame) bool { return r.StreamID == 3 && r.ErrCode == http2.ErrCodeCancel })

	// Headers over the limit: that stream ends, the others go on.
	fs.hbuf.Reset()
	fs.henc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	fs.henc.WriteField(hpack.HeaderField{Name: "x-big", Value: strings.Repeat("x", maxHeaderList)})
	block := fs.hbuf.Bytes()
	fs.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: block[:maxFrameSize], EndHeaders: false})
	for block = block[maxFrameSize:]; len(block) > 0; {
		n := min(len(block), maxFrameSize)
		fs.fr.WriteContinuation(5, n == len(block), block[:n])
		block = block[n:]
	}
	expect(fs, func(r *http2.RSTStreamFrame) bool { return r.StreamID == 5 })
	wait.For(t, 10*time.Second, "stream 5 ends", func() bool { _, ended, _ := r3.state(); return ended })
	if _, _, err := r3.state(); err == nil || !strings.Contains(err.Error(), "over the limit") {
		t.Fatalf("stream 5 ended with %v", err)
	}

	// GOAWAY keeps the streams it let through and takes no new ones.
	r4 := &recorder{}
	s4, err := c.open("/api/v1/pods?watch=true", "", r4)
	if err != nil {
		t.Fatal(err)
	}
	expect(fs, func(h *http2.MetaHeadersFrame) bool { return h.StreamID == 7 })
	fs.fr.WriteGoAway(1, http2.ErrCodeNo, nil)
	wait.For(t, 10*time.Second, "stream 7 ends", func() bool { _, ended, _ := r4.state(); return ended })
	if _, _, err := r4.state(); err == nil || !strings.Contains(err.Error(), "GOAWAY") {
		t.Fatalf("stream 7 ended with %v", err)
	}
	_ = s4
	if c.hasRoom() {
		t.Fatal("a connection going away takes new streams")
	}
	if _, ended, _ := r1.state(); ended {
		t.Fatal("stream 1, below GOAWAY's last stream, ended")
	}
	// The server ends stream 1: the connection, now empty, closes.
	fs.fr.WriteData(1, true, nil)
	wait.For(t, 10*time.Second, "stream 1 ends cleanly", func() bool { _, ended, err := r1.state(); return ended && err == nil })
	wait.For(t, 10*time.Second, "the connection closes", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.err != nil
	})
	_ = s1
}
