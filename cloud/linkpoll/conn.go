//go:build linux

package linkpoll

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// Conn is an adopted connection.
type Conn struct {
	loop *loop
	raw  *rawConn
	tls  *tls.Conn
	h    Handler

	// Owned by the loop goroutine: in is plaintext not parsed yet (nil
	// when idle), msg the fragments of a message being reassembled.
	in    []byte
	msg   []byte
	msgOp bool

	lastRead atomic.Int64 // unix nanoseconds
	paused   atomic.Bool
	closing  atomic.Bool // a close frame went out
	closed   atomic.Bool
	once     sync.Once
	// draining: the connection failed (end); what arrives is dropped
	// until the peer closes, and Closed is told drainErr. Set and read
	// on the loop goroutine.
	draining atomic.Bool
	drainErr error
}

// ConnectionState is the connection's TLS state (the peer's
// certificates among it).
func (c *Conn) ConnectionState() tls.ConnectionState { return c.tls.ConnectionState() }

// RemoteAddr is the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }

// WriteMessage sends msg as one binary message. It never waits for the
// peer: what the socket does not take is queued; past Config.MaxQueued
// the connection is closed with ErrSlowPeer. Safe from any goroutine.
func (c *Conn) WriteMessage(msg []byte) error {
	return c.write(serverFrame(ws.OpBinary, msg))
}

func (c *Conn) write(frame []byte) error {
	if c.closed.Load() {
		return ErrClosed
	}
	if _, err := c.tls.Write(frame); err != nil {
		if errors.Is(err, ErrSlowPeer) {
			c.shut(ErrSlowPeer)
			return ErrSlowPeer
		}
		c.shut(err)
		return err
	}
	return nil
}

// Close sends a close frame with code and reason (cut to the 123 bytes a
// close frame holds) and closes the connection when the peer answers,
// or after Config.CloseGrace. No message is handed to the handler after
// it.
func (c *Conn) Close(code ws.StatusCode, reason string) {
	if c.closing.Swap(true) || c.closed.Load() {
		return
	}
	if len(reason) > 123 {
		reason = reason[:123]
	}
	if c.write(serverFrame(ws.OpClose, ws.NewCloseFrameBody(code, reason))) != nil {
		return
	}
	time.AfterFunc(c.loop.p.cfg.CloseGrace, func() { c.shut(ErrClosed) })
}

// Queued is the number of bytes waiting to be written to the peer.
func (c *Conn) Queued() int {
	c.raw.mu.Lock()
	defer c.raw.mu.Unlock()
	return len(c.raw.out)
}

// WaitQueued waits, at most timeout, until at most n bytes wait to be
// written (the peer took the rest): for a writer that has its own
// goroutine and more to send than the queue should hold, such as a burst
// of large messages. It returns ErrClosed once the connection is closed,
// and ErrSlowPeer after the timeout (the connection stays open: the
// caller decides).
func (c *Conn) WaitQueued(n int, timeout time.Duration) error {
	var timer *time.Timer
	for {
		c.raw.mu.Lock()
		if c.raw.closed {
			c.raw.mu.Unlock()
			return ErrClosed
		}
		if len(c.raw.out) <= n {
			c.raw.mu.Unlock()
			return nil
		}
		if c.raw.progress == nil {
			c.raw.progress = make(chan struct{})
		}
		progress := c.raw.progress
		c.raw.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(timeout)
			defer timer.Stop()
		}
		select {
		case <-progress:
		case <-timer.C:
			return ErrSlowPeer
		}
	}
}

// PauseReading stops reading the connection: the peer's bytes wait in
// the kernel, and then in the peer (TCP flow control), until
// ResumeReading. A Message in progress may call it; the messages already
// read after it wait too. A paused connection is not closed as silent.
func (c *Conn) PauseReading() {
	if !c.paused.Swap(true) {
		c.raw.rearm(false)
	}
}

// ResumeReading undoes PauseReading.
func (c *Conn) ResumeReading() {
	if c.paused.Swap(false) {
		c.lastRead.Store(time.Now().UnixNano())
		c.raw.rearm(true)
		c.loop.post(c) // what was read already, and what waits in crypto/tls
	}
}

// shut ends the connection once, without a close frame, and tells the
// handler why.
func (c *Conn) shut(err error) {
	c.once.Do(func() {
		c.closed.Store(true)
		l := c.loop
		l.mu.Lock()
		delete(l.conns, c.raw.fd)
		l.mu.Unlock()
		unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, c.raw.fd, nil)
		c.raw.shut()
		c.h.Closed(c, err)
	})
}

// readable, on the loop goroutine, decrypts what arrived through buf and
// hands over the complete messages.
func (c *Conn) readable(buf []byte) {
	if c.closed.Load() {
		return
	}
	if c.draining.Load() {
		c.drain(buf)
		return
	}
	if !c.frames() { // what a pause left
		return
	}
	for !c.paused.Load() {
		n, err := c.tls.Read(buf)
		if n > 0 {
			c.lastRead.Store(time.Now().UnixNano())
			c.in = append(c.in, buf[:n]...)
			if !c.frames() {
				if c.draining.Load() {
					c.drain(buf)
				}
				return
			}
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
		if err != nil {
			c.shut(err)
			return
		}
	}
}

// frames handles the complete frames in c.in; false when the connection
// ended or paused.
func (c *Conn) frames() bool {
	max := c.loop.p.cfg.MaxMessage
	for len(c.in) > 0 && !c.paused.Load() && !c.closed.Load() && !c.draining.Load() {
		f, n, err := parseFrame(c.in, max)
		if err != nil {
			code := ws.StatusProtocolError
			if errors.Is(err, ErrTooLarge) {
				code = ws.StatusMessageTooBig
			}
			c.fail(code, err)
			return false
		}
		if n == 0 {
			break
		}
		c.in = c.in[n:]
		if !c.frame(f) {
			return false
		}
	}
	switch {
	case len(c.in) == 0:
		c.in = nil
	case cap(c.in) > 2*len(c.in)+4096:
		c.in = append([]byte(nil), c.in...) // keep the partial frame only
	}
	return !c.paused.Load() && !c.closed.Load() && !c.draining.Load()
}

// frame handles one frame; false when the connection ended.
func (c *Conn) frame(f frame) bool {
	switch f.op {
	case ws.OpPing:
		return c.write(serverFrame(ws.OpPong, f.payload)) == nil
	case ws.OpPong:
		return true
	case ws.OpClose:
		if !c.closing.Swap(true) {
			code, _ := ws.ParseCloseFrameData(f.payload)
			if code.Empty() {
				code = ws.StatusNormalClosure
			}
			c.tls.Write(serverFrame(ws.OpClose, ws.NewCloseFrameBody(code, "")))
		}
		c.shut(io.EOF)
		return false
	case ws.OpText:
		c.fail(ws.StatusUnsupportedData, ErrText)
		return false
	case ws.OpBinary:
		if c.msgOp {
			c.fail(ws.StatusProtocolError, errSequence)
			return false
		}
		if f.fin {
			return c.deliver(f.payload)
		}
		c.msgOp = true
		c.msg = append([]byte(nil), f.payload...)
		return true
	default: // continuation
		if !c.msgOp {
			c.fail(ws.StatusProtocolError, errSequence)
			return false
		}
		if len(c.msg)+len(f.payload) > c.loop.p.cfg.MaxMessage {
			c.fail(ws.StatusMessageTooBig, fmt.Errorf("%w: over %d bytes in fragments", ErrTooLarge, c.loop.p.cfg.MaxMessage))
			return false
		}
		c.msg = append(c.msg, f.payload...)
		if !f.fin {
			return true
		}
		msg := c.msg
		c.msg, c.msgOp = nil, false
		return c.deliver(msg)
	}
}

// deliver hands msg to the handler, unless a close frame went out (what
// the peer sent before it read that is dropped). A handler that panics
// (a bug) closes its connection with 1011, not the loop's others nor the
// process; the panic and its stack are in the error Closed is told, not
// in the close frame.
func (c *Conn) deliver(msg []byte) (ok bool) {
	if c.closing.Load() {
		return true
	}
	defer func() {
		if r := recover(); r != nil {
			c.end(ws.StatusInternalServerError, "internal error", fmt.Errorf("%w: %v\n%s", ErrPanic, r, debug.Stack()))
			ok = false
		}
	}()
	c.h.Message(c, msg)
	return !c.closed.Load() && !c.draining.Load()
}

// Refuser is implemented by a Handler that wants to answer a message
// refused at the WebSocket layer (ErrTooLarge, ErrText, a protocol
// error) before the close frame goes out: Refused runs on the loop
// goroutine and may write one last message (an error of the
// application's protocol). It must not block.
type Refuser interface {
	Refused(c *Conn, err error)
}

// fail closes the connection for a protocol error of the peer: the
// handler's last word (Refuser), a close frame saying why, then the
// socket at once.
func (c *Conn) fail(code ws.StatusCode, err error) {
	if r, ok := c.h.(Refuser); ok && !c.closing.Load() {
		func() {
			defer func() { recover() }() // closing anyway
			r.Refused(c, err)
		}()
	}
	c.end(code, err.Error(), err)
}

// end sends a close frame with code and reason and stops handling the
// connection's messages; what the peer still sends is read and dropped
// until it closes, or for Config.CloseGrace, and then the socket is
// closed, telling the handler err. (Closing a socket with unread bytes
// resets it, and the peer may lose the close frame and what came
// before.) On the loop goroutine.
func (c *Conn) end(code ws.StatusCode, reason string, err error) {
	if !c.closing.Swap(true) {
		if len(reason) > 123 {
			reason = reason[:123]
		}
		c.tls.Write(serverFrame(ws.OpClose, ws.NewCloseFrameBody(code, reason)))
	}
	c.raw.flushNow()
	if c.draining.Swap(true) {
		return
	}
	c.drainErr = err
	c.in, c.msg, c.msgOp = nil, nil, false
	time.AfterFunc(c.loop.p.cfg.CloseGrace, func() { c.shut(err) })
	if c.paused.Swap(false) {
		c.raw.rearm(true)
	}
	c.loop.post(c)
}

// drain reads and drops what the peer sends after end, on the loop
// goroutine, and closes the connection at its end.
func (c *Conn) drain(buf []byte) {
	for {
		_, err := c.raw.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
		if err != nil {
			c.shut(c.drainErr)
			return
		}
	}
}

// rawConn is the connection under crypto/tls: the TCP connection itself
// until nonblocking is set, then reads and writes that never wait.
type rawConn struct {
	*net.TCPConn
	rc          syscall.RawConn
	fd          int
	nonblocking atomic.Bool
	loop        *loop

	mu      sync.Mutex
	out     []byte // queued writes, nil when none
	reading bool   // EPOLLIN wanted (not paused)
	closed  bool
	// progress, when someone waits (WaitQueued), is closed and cleared
	// when the queue shrank or the connection closed.
	progress chan struct{}
}

// progressed wakes the WaitQueued callers; c.mu held.
func (c *rawConn) progressed() {
	if c.progress != nil {
		close(c.progress)
		c.progress = nil
	}
}

func newRawConn(tcp *net.TCPConn) (*rawConn, error) {
	rc, err := tcp.SyscallConn()
	if err != nil {
		return nil, err
	}
	c := &rawConn{TCPConn: tcp, rc: rc, fd: -1, reading: true}
	if err := rc.Control(func(fd uintptr) { c.fd = int(fd) }); err != nil {
		return nil, err
	}
	return c, nil
}

// Read, once non-blocking, returns os.ErrDeadlineExceeded when the socket
// has nothing: crypto/tls keeps the connection usable after a timeout.
func (c *rawConn) Read(p []byte) (int, error) {
	if !c.nonblocking.Load() {
		return c.TCPConn.Read(p)
	}
	var n int
	var err error
	if cerr := c.rc.Read(func(fd uintptr) bool {
		n, err = unix.Read(int(fd), p)
		return true
	}); cerr != nil {
		return 0, cerr
	}
	switch {
	case errors.Is(err, unix.EAGAIN):
		return 0, os.ErrDeadlineExceeded
	case err != nil:
		return 0, err
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write, once non-blocking, writes what the socket takes and queues the
// rest; it fails (and so does every later write: crypto/tls holds a
// write error against the connection) when the queue would pass
// Config.MaxQueued.
func (c *rawConn) Write(p []byte) (int, error) {
	if !c.nonblocking.Load() {
		return c.TCPConn.Write(p)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	rest := p
	if len(c.out) == 0 {
		n, err := c.writeSome(rest)
		if err != nil {
			return 0, err
		}
		if rest = rest[n:]; len(rest) == 0 {
			return len(p), nil
		}
	}
	if len(c.out)+len(rest) > c.loop.p.cfg.MaxQueued {
		return 0, ErrSlowPeer
	}
	wasEmpty := len(c.out) == 0
	c.out = append(c.out, rest...)
	if wasEmpty {
		if err := c.ctl(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// writeSome writes what the socket takes of p now.
func (c *rawConn) writeSome(p []byte) (int, error) {
	var n int
	var err error
	if cerr := c.rc.Write(func(fd uintptr) bool {
		n, err = unix.Write(int(fd), p)
		return true
	}); cerr != nil {
		return 0, cerr
	}
	if errors.Is(err, unix.EAGAIN) {
		return 0, nil
	}
	return max(n, 0), err
}

// flush writes the queue, on EPOLLOUT.
func (c *rawConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.out) == 0 || c.closed {
		return nil
	}
	n, err := c.writeSome(c.out)
	if err != nil {
		return err
	}
	if n > 0 {
		c.progressed()
	}
	if c.out = c.out[n:]; len(c.out) > 0 {
		return nil
	}
	c.out = nil
	return c.ctl()
}

// flushNow writes what the socket takes of the queue (a closing frame),
// without waiting.
func (c *rawConn) flushNow() { c.flush() }

// events is the epoll interest; c.mu held (or not yet shared).
func (c *rawConn) events() uint32 {
	var ev uint32
	if c.reading {
		ev |= unix.EPOLLIN | unix.EPOLLRDHUP
	}
	if len(c.out) > 0 {
		ev |= unix.EPOLLOUT
	}
	return ev
}

// ctl sets the epoll interest; c.mu held.
func (c *rawConn) ctl() error {
	return unix.EpollCtl(c.loop.epfd, unix.EPOLL_CTL_MOD, c.fd, &unix.EpollEvent{Events: c.events(), Fd: int32(c.fd)})
}

func (c *rawConn) rearm(reading bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.reading = reading
	c.ctl()
}

func (c *rawConn) shut() {
	c.mu.Lock()
	c.closed = true
	c.out = nil
	c.progressed()
	c.mu.Unlock()
	c.TCPConn.Close()
}
