// Package tunnel runs the tunnels of one link (wire.TunnelOpen and the
// frames after it) for both sides: the relay opens tunnels, the agent
// accepts them. A Mux holds one link's tunnels; each Stream has a
// buffer per channel it receives, bounded by wire.TunnelWindow through
// the credit the other side is granted with TunnelAck, and writes that
// wait for credit. Handle never blocks on a tunnel: a frame that breaks
// the rules (unknown tunnel, a channel this side does not receive, data
// after the end of its channel, more than the window) ends that tunnel
// with a TunnelClose saying why, and the link keeps serving.
package tunnel

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"outpost.dev/wire"
)

// Send queues one frame on the link. It may block for a bounded time; an
// error means the frame was not sent (the link is gone or congested).
type Send func(t wire.Type, body wire.Body) error

// Mux holds the tunnels of one link connection.
type Mux struct {
	send  Send
	reply Send // Handle's own answers; see ReplyWith
	max   int
	recv  [wire.ChanStderr + 1]bool // channels this side receives

	mu     sync.Mutex
	next   uint32
	m      map[uint32]*Stream
	closed error
}

// New returns a Mux that sends with send, holds at most max tunnels and
// receives data on the channels recv (the relay: stdin for port-forward,
// stdout and stderr; the agent: stdin).
func New(send Send, max int, recv ...uint8) *Mux {
	m := &Mux{send: send, reply: send, max: max, m: map[uint32]*Stream{}}
	for _, c := range recv {
		m.recv[c] = true
	}
	return m
}

// ReplyWith makes Handle send its own answers (the TunnelClose for a
// frame that broke the rules) with reply instead of the Mux's Send: one
// that never waits, when Handle runs on the link's read loop and Send may
// wait out a full queue. Call it before the Mux is used.
func (m *Mux) ReplyWith(reply Send) *Mux {
	m.reply = reply
	return m
}

// ErrTooMany is returned by Open and Accept at the Mux's bound.
var ErrTooMany = errors.New("too many exec, attach and port-forward sessions open to this node")

// Len returns the number of open tunnels.
func (m *Mux) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.m)
}

// Open starts a tunnel (the relay): it numbers o, registers it and sends it.
func (m *Mux) Open(o *wire.TunnelOpen) (*Stream, error) {
	m.mu.Lock()
	if m.closed != nil {
		m.mu.Unlock()
		return nil, m.closed
	}
	if len(m.m) >= m.max {
		m.mu.Unlock()
		return nil, fmt.Errorf("%w (%d); try again later", ErrTooMany, m.max)
	}
	for {
		m.next++
		if m.next != 0 && m.m[m.next] == nil {
			break
		}
	}
	o.ID = m.next
	s := m.newStream(o.ID)
	m.mu.Unlock()
	if err := m.send(wire.TypeTunnelOpen, o); err != nil {
		m.remove(s)
		return nil, err
	}
	return s, nil
}

// Accept registers a tunnel the other side opened (the agent). On an
// error the caller answers with a TunnelClose.
func (m *Mux) Accept(o *wire.TunnelOpen) (*Stream, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed != nil {
		return nil, m.closed
	}
	if m.m[o.ID] != nil {
		return nil, fmt.Errorf("tunnel %d is already open", o.ID)
	}
	if len(m.m) >= m.max {
		return nil, fmt.Errorf("%w (%d); try again later", ErrTooMany, m.max)
	}
	return m.newStream(o.ID), nil
}

func (m *Mux) newStream(id uint32) *Stream {
	s := &Stream{ID: id, m: m, done: make(chan struct{}), heard: make(chan struct{}), resize: make(chan wire.TunnelResize, 4)}
	s.cond = sync.NewCond(&s.mu)
	m.m[id] = s
	return s
}

func (m *Mux) remove(s *Stream) {
	m.mu.Lock()
	if m.m[s.ID] == s {
		delete(m.m, s.ID)
	}
	m.mu.Unlock()
}

func (m *Mux) get(id uint32) *Stream {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.m[id]
}

// Shutdown ends every tunnel with err (the link is gone) and refuses new
// ones.
func (m *Mux) Shutdown(err error) {
	m.mu.Lock()
	m.closed = err
	all := m.m
	m.m = map[uint32]*Stream{}
	m.mu.Unlock()
	for _, s := range all {
		s.finish(nil, err)
	}
}

// Handle takes the tunnel frames other than TunnelOpen and reports
// whether f was one. It never waits on a tunnel; it may call Send.
func (m *Mux) Handle(f wire.Frame) (bool, error) {
	switch f.Type {
	case wire.TypeTunnelData:
		var d wire.TunnelData
		if err := f.DecodeBody(&d); err != nil {
			return true, m.bad(f, err)
		}
		s := m.get(d.ID)
		if s == nil {
			// Late data for a tunnel that just ended is normal; tell the
			// sender in case it is not.
			_ = m.reply(wire.TypeTunnelClose, &wire.TunnelClose{ID: d.ID, Error: fmt.Sprintf("tunnel %d is not open", d.ID)})
			return true, nil
		}
		s.hear()
		s.data(&d)
	case wire.TypeTunnelAck:
		var a wire.TunnelAck
		if err := f.DecodeBody(&a); err != nil {
			return true, m.bad(f, err)
		}
		if s := m.get(a.ID); s != nil {
			s.hear()
			s.ack(a.Consumed)
		}
	case wire.TypeTunnelResize:
		var r wire.TunnelResize
		if err := f.DecodeBody(&r); err != nil {
			return true, m.bad(f, err)
		}
		if s := m.get(r.ID); s != nil {
			for {
				select {
				case s.resize <- r:
					return true, nil
				default:
				}
				select { // keep the newest sizes
				case <-s.resize:
				default:
				}
			}
		}
	case wire.TypeTunnelClose:
		var c wire.TunnelClose
		if err := f.DecodeBody(&c); err != nil {
			return true, m.bad(f, err)
		}
		if s := m.get(c.ID); s != nil {
			m.remove(s)
			s.hear()
			s.finish(&c, nil)
		}
	default:
		return false, nil
	}
	return true, nil
}

// tunnelID is the one field every tunnel frame has.
type tunnelID struct {
	ID uint32 `cbor:"1,keyasint"`
}

func (*tunnelID) Validate() error { return nil }

// bad ends the tunnel a frame that does not decode or validate names, if
// it names an open one, and returns nil: the link goes on. Without a
// tunnel to blame it returns err for the caller to report.
func (m *Mux) bad(f wire.Frame, err error) error {
	var id tunnelID
	if f.DecodeBody(&id) != nil || id.ID == 0 {
		return err
	}
	if s := m.get(id.ID); s != nil {
		s.fail(fmt.Sprintf("tunnel %d: %v", id.ID, err))
	}
	return nil
}

// Stream is one tunnel.
type Stream struct {
	ID     uint32
	m      *Mux
	resize chan wire.TunnelResize
	done   chan struct{}
	heard  chan struct{} // closed at the first frame from the other side
	once   sync.Once

	mu   sync.Mutex
	cond *sync.Cond
	buf  [wire.ChanStderr + 1][]byte
	eof  [wire.ChanStderr + 1]bool
	// received counts bytes from the other side, consumed what readers
	// took, acked the consumed total last acknowledged; sent counts bytes
	// sent, peerConsumed the other side's last ack.
	received, consumed, acked uint64
	sent, peerConsumed        uint64
	ended                     bool
	peer                      *wire.TunnelClose // the other side's close
	err                       error             // why it ended here
}

// Heard is closed once the other side sent a frame on the tunnel: an
// agent acknowledges a TunnelOpen it took with a TunnelAck of zero.
func (s *Stream) Heard() <-chan struct{} { return s.heard }

func (s *Stream) hear() { s.once.Do(func() { close(s.heard) }) }

// Done is closed when the tunnel has ended.
func (s *Stream) Done() <-chan struct{} { return s.done }

// Resize delivers terminal sizes (the agent).
func (s *Stream) Resize() <-chan wire.TunnelResize { return s.resize }

// Result returns the other side's TunnelClose (nil if it did not send
// one) and the error the tunnel ended with here, once Done.
func (s *Stream) Result() (*wire.TunnelClose, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peer, s.err
}

func (s *Stream) finish(peer *wire.TunnelClose, err error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return false
	}
	s.ended, s.peer, s.err = true, peer, err
	close(s.done)
	s.cond.Broadcast()
	return true
}

// fail ends the tunnel for breaking the rules and tells the other side.
func (s *Stream) fail(why string) {
	s.m.remove(s)
	if s.finish(nil, errors.New(why)) {
		_ = s.m.reply(wire.TypeTunnelClose, &wire.TunnelClose{ID: s.ID, Error: why})
	}
}

func (s *Stream) data(d *wire.TunnelData) {
	s.mu.Lock()
	switch {
	case s.ended:
		s.mu.Unlock()
		return
	case !s.m.recv[d.Channel]:
		s.mu.Unlock()
		s.fail(fmt.Sprintf("tunnel %d: data on channel %d, which this side does not receive", s.ID, d.Channel))
		return
	case s.eof[d.Channel]:
		s.mu.Unlock()
		s.fail(fmt.Sprintf("tunnel %d: data on channel %d after its end", s.ID, d.Channel))
		return
	case s.received+uint64(len(d.Data))-s.acked > wire.TunnelWindow:
		s.mu.Unlock()
		s.fail(fmt.Sprintf("tunnel %d: more than the window (%d bytes) sent ahead of acknowledgement", s.ID, wire.TunnelWindow))
		return
	}
	s.received += uint64(len(d.Data))
	s.buf[d.Channel] = append(s.buf[d.Channel], d.Data...)
	s.eof[d.Channel] = s.eof[d.Channel] || d.EOF
	s.cond.Broadcast()
	s.mu.Unlock()
}

func (s *Stream) ack(consumed uint64) {
	s.mu.Lock()
	if consumed > s.sent {
		s.mu.Unlock()
		s.fail(fmt.Sprintf("tunnel %d: acknowledged %d bytes of %d sent", s.ID, consumed, s.sent))
		return
	}
	s.peerConsumed = max(s.peerConsumed, consumed)
	s.cond.Broadcast()
	s.mu.Unlock()
}

// Reader returns the data received on channel ch. It ends with io.EOF
// when the other side ended the channel or closed the tunnel without an
// error, and with an error otherwise.
func (s *Stream) Reader(ch uint8) io.Reader { return reader{s, ch} }

type reader struct {
	s  *Stream
	ch uint8
}

func (r reader) Read(p []byte) (int, error) {
	s := r.s
	s.mu.Lock()
	for len(s.buf[r.ch]) == 0 && !s.eof[r.ch] && !s.ended {
		s.cond.Wait()
	}
	if len(s.buf[r.ch]) == 0 {
		defer s.mu.Unlock()
		switch {
		case s.eof[r.ch]:
			return 0, io.EOF
		case s.err != nil:
			return 0, s.err
		case s.peer != nil && s.peer.Error != "":
			return 0, errors.New(s.peer.Error)
		}
		return 0, io.EOF
	}
	n := copy(p, s.buf[r.ch])
	s.buf[r.ch] = s.buf[r.ch][n:]
	if len(s.buf[r.ch]) == 0 {
		s.buf[r.ch] = nil // let the backing array go
	}
	s.consumed += uint64(n)
	var ack uint64
	if s.consumed-s.acked >= wire.TunnelWindow/4 && !s.ended {
		s.acked = s.consumed
		ack = s.acked
	}
	s.mu.Unlock()
	if ack != 0 {
		_ = s.m.send(wire.TypeTunnelAck, &wire.TunnelAck{ID: s.ID, Consumed: ack})
	}
	return n, nil
}

// ErrEnded is returned by writes to a tunnel that has ended.
var ErrEnded = errors.New("the session has ended")

// Write sends p on channel ch, waiting for credit as needed.
func (s *Stream) Write(ch uint8, p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), wire.MaxStreamChunk)
		s.mu.Lock()
		for !s.ended && s.sent-s.peerConsumed+uint64(k) > wire.TunnelWindow {
			s.cond.Wait()
		}
		if s.ended {
			s.mu.Unlock()
			return n, ErrEnded
		}
		s.sent += uint64(k)
		s.mu.Unlock()
		if err := s.m.send(wire.TypeTunnelData, &wire.TunnelData{ID: s.ID, Channel: ch, Data: p[:k]}); err != nil {
			s.Close(&wire.TunnelClose{Error: "the link failed: " + err.Error()})
			return n, err
		}
		p, n = p[k:], n+k
	}
	return n, nil
}

// Writer returns an io.Writer for channel ch.
func (s *Stream) Writer(ch uint8) io.Writer { return writer{s, ch} }

type writer struct {
	s  *Stream
	ch uint8
}

func (w writer) Write(p []byte) (int, error) { return w.s.Write(w.ch, p) }

// CloseWrite ends channel ch in this side's direction.
func (s *Stream) CloseWrite(ch uint8) error {
	s.mu.Lock()
	ended := s.ended
	s.mu.Unlock()
	if ended {
		return ErrEnded
	}
	return s.m.send(wire.TypeTunnelData, &wire.TunnelData{ID: s.ID, Channel: ch, EOF: true})
}

// SendResize asks the other side to resize the terminal (the relay).
func (s *Stream) SendResize(width, height uint16) error {
	return s.m.send(wire.TypeTunnelResize, &wire.TunnelResize{ID: s.ID, Width: width, Height: height})
}

// Close ends the tunnel and sends c (its ID is set here) unless it had
// already ended. Readers then see io.EOF after what is buffered.
func (s *Stream) Close(c *wire.TunnelClose) {
	s.m.remove(s)
	if s.finish(nil, nil) {
		cc := *c
		cc.ID = s.ID
		_ = s.m.send(wire.TypeTunnelClose, &cc)
	}
}
