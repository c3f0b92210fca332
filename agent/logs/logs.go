// Package logs serves kubectl logs on the agent: the relay opens a stream
// (wire.StreamOpen) for a container's log, the agent reads the log file
// with crilog and sends it back in StreamData chunks of at most
// wire.MaxStreamChunk bytes, never more than wire.StreamWindow bytes ahead
// of what the relay acknowledged (StreamAck.Consumed), and ends with EOF,
// with Error set when there is no such log. An empty StreamData first
// says the log was found (the relay then answers 200). StreamAck.Cancel (kubectl went
// away) and a lost link end a stream.
//
// Memory is bounded: at most Config.MaxStreams streams at once, each with
// one chunk buffer; a file is read as the window allows.
package logs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"outpost.dev/agent/crilog"
	"outpost.dev/wire"
)

// Paths finds a container's log file; the pod reconciler implements it.
// running, if not nil, reports whether the container still runs: a
// follow ends once it does not and the file is read to its end.
type Paths interface {
	LogPath(ctx context.Context, namespace, pod, container string, previous bool) (path string, running func() bool, err error)
}

// Config configures a Server.
type Config struct {
	// Paths finds log files. Nil answers every stream with an error.
	Paths Paths
	// SendWait queues one frame on the link, waiting out a full queue
	// until its context ends (link.Link.SendWait).
	SendWait func(ctx context.Context, t wire.Type, seq uint64, body wire.Body) error
	// MaxStreams bounds concurrent streams; default DefaultMaxStreams.
	MaxStreams int
	// FlushEvery is how long data waits for more before it is sent, while
	// following a log; default 100 ms.
	FlushEvery time.Duration
	Log        *slog.Logger
}

// DefaultMaxStreams is the default bound on concurrent streams.
const DefaultMaxStreams = 8

// Server serves log streams. Handle is called from the link's Handler.
type Server struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	streams map[uint32]*stream
	wg      sync.WaitGroup

	// windowFull, when set (by tests), is called each time a stream
	// waits for the relay's credit with inFlight bytes unacked.
	windowFull func(inFlight uint64)
}

type stream struct {
	id     uint32
	cancel context.CancelFunc

	mu       sync.Mutex
	consumed uint64        // acknowledged by the relay
	credit   chan struct{} // poked when consumed moves
}

// New returns a Server.
func New(cfg Config) *Server {
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	if cfg.FlushEvery <= 0 {
		cfg.FlushEvery = 100 * time.Millisecond
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: cfg.Log, streams: map[uint32]*stream{}}
}

// Handle takes the stream frames (StreamOpen, StreamAck) and reports
// whether f was one. It never blocks.
func (s *Server) Handle(f wire.Frame) bool {
	switch f.Type {
	case wire.TypeStreamOpen:
		var o wire.StreamOpen
		if err := f.DecodeBody(&o); err != nil {
			s.log.Warn("stream-open refused", "err", err)
			return true
		}
		s.open(&o)
		return true
	case wire.TypeStreamAck:
		var a wire.StreamAck
		if err := f.DecodeBody(&a); err != nil {
			s.log.Warn("stream-ack ignored", "err", err)
			return true
		}
		s.mu.Lock()
		st := s.streams[a.ID]
		s.mu.Unlock()
		if st == nil {
			return true
		}
		if a.Cancel {
			st.cancel()
			return true
		}
		st.mu.Lock()
		st.consumed = max(st.consumed, a.Consumed)
		st.mu.Unlock()
		select {
		case st.credit <- struct{}{}:
		default:
		}
		return true
	}
	return false
}

// Disconnected ends every stream: stream IDs belong to one connection.
// Call it from the link's OnDisconnect.
func (s *Server) Disconnected() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.streams {
		st.cancel()
	}
}

// Wait waits for every stream goroutine to end (after Disconnected or the
// context given to them ended).
func (s *Server) Wait() { s.wg.Wait() }

func (s *Server) open(o *wire.StreamOpen) {
	s.mu.Lock()
	if old := s.streams[o.ID]; old != nil {
		// The relay reuses an id only on a new connection; the old one is over.
		old.cancel()
		delete(s.streams, o.ID)
	}
	if len(s.streams) >= s.cfg.MaxStreams {
		s.mu.Unlock()
		s.send(context.Background(), &wire.StreamData{ID: o.ID, EOF: true,
			Error: fmt.Sprintf("too many log streams on this node (%d); try again later", s.cfg.MaxStreams)})
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	st := &stream{id: o.ID, cancel: cancel, credit: make(chan struct{}, 1)}
	s.streams[o.ID] = st
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer func() {
			cancel()
			s.mu.Lock()
			if s.streams[o.ID] == st {
				delete(s.streams, o.ID)
			}
			s.mu.Unlock()
		}()
		s.serve(ctx, st, o)
	}()
}

func (s *Server) serve(ctx context.Context, st *stream, o *wire.StreamOpen) {
	log := s.log.With("stream", o.ID, "pod", o.Namespace+"/"+o.Pod, "container", o.Container)
	fail := func(msg string) { s.send(ctx, &wire.StreamData{ID: o.ID, EOF: true, Error: msg}) }
	if s.cfg.Paths == nil {
		fail("this agent runs no pods")
		return
	}
	path, running, err := s.cfg.Paths.LogPath(ctx, o.Namespace, o.Pod, o.Container, o.Previous)
	if err != nil {
		fail(err.Error())
		return
	}
	// Say the stream is accepted at once, even before any data: the relay
	// then answers kubectl 200, and a quiet followed log is not taken for
	// a dead agent.
	if !s.send(ctx, &wire.StreamData{ID: o.ID}) {
		return
	}
	opt := crilog.Options{Tail: o.TailLines, LimitBytes: o.LimitBytes, Timestamps: o.Timestamps, Follow: o.Follow}
	if o.SinceSeconds > 0 {
		opt.Since = time.Now().Add(-time.Duration(o.SinceSeconds) * time.Second)
	}
	if o.Follow && running != nil {
		opt.Done = func() bool { return !running() }
	}
	if o.Previous {
		opt.Follow = false // a previous instance writes no more
	}
	cw := &chunker{s: s, st: st, ctx: ctx, buf: make([]byte, 0, wire.MaxStreamChunk)}
	var stopFlush func()
	if opt.Follow {
		stopFlush = cw.flushEvery(s.cfg.FlushEvery)
	}
	err = crilog.Stream(ctx, path, opt, cw)
	if stopFlush != nil {
		stopFlush()
	}
	switch {
	case ctx.Err() != nil:
		log.Debug("log stream cancelled")
		return
	case errors.Is(err, fs.ErrNotExist):
		fail(fmt.Sprintf("container %q of pod %s/%s has no log on this node", o.Container, o.Namespace, o.Pod))
		return
	case err != nil && !errors.Is(err, context.Canceled):
		if cw.flush() == nil {
			fail("reading the log: " + err.Error())
		}
		return
	}
	if cw.flush() != nil {
		return
	}
	s.send(ctx, &wire.StreamData{ID: o.ID, EOF: true})
	log.Debug("log stream done", "bytes", cw.sent)
}

// send queues d on the link, waiting out a full queue; false when the
// link is gone or ctx ended.
func (s *Server) send(ctx context.Context, d *wire.StreamData) bool {
	return s.cfg.SendWait(ctx, wire.TypeStreamData, 0, d) == nil
}

// chunker is the io.Writer crilog writes to: it cuts the log into chunks
// and sends each when the window allows.
type chunker struct {
	s    *Server
	st   *stream
	ctx  context.Context
	mu   sync.Mutex
	buf  []byte
	sent uint64
}

var errGone = errors.New("stream ended")

func (c *chunker) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for len(b) > 0 {
		k := min(len(b), cap(c.buf)-len(c.buf))
		c.buf = append(c.buf, b[:k]...)
		b, n = b[k:], n+k
		if len(c.buf) == cap(c.buf) {
			if err := c.flushLocked(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

func (c *chunker) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flushLocked()
}

// flushLocked sends the buffer once the relay's credit covers it.
func (c *chunker) flushLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	for {
		c.st.mu.Lock()
		inFlight := c.sent - c.st.consumed
		c.st.mu.Unlock()
		if inFlight+uint64(len(c.buf)) <= wire.StreamWindow {
			break
		}
		if c.s.windowFull != nil {
			c.s.windowFull(inFlight)
		}
		select {
		case <-c.st.credit:
		case <-c.ctx.Done():
			return errGone
		}
	}
	// The link encodes the frame before Send returns, so buf is reused.
	if !c.s.send(c.ctx, &wire.StreamData{ID: c.st.id, Data: c.buf}) {
		return errGone
	}
	c.sent += uint64(len(c.buf))
	c.buf = c.buf[:0]
	return nil
}

// flushEvery sends buffered data every d, so a followed log shows lines as
// they come; the returned func stops it.
func (c *chunker) flushEvery(d time.Duration) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-c.ctx.Done():
				return
			case <-t.C:
				_ = c.flush()
			}
		}
	}()
	return func() { close(stop); <-done }
}
