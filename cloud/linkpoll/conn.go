//go:build linux

package linkpoll

import (
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
	h    Handler

	// Owned by the loop goroutine: rd the record layer's read side (its
	// keys, a partial record: nil when idle), in plaintext not parsed
	// yet (nil when idle), msg the fragments of a message being
	// reassembled.
	rd    recordReader
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
	if err := c.raw.writeRecords(recordApplicationData, frame); err != nil {
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
		c.loop.post(c) // what was read already
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
		c.raw.sendAlert(alertCloseNotify)
		c.raw.shut()
		c.h.Closed(c, err)
	})
}

// readable, on the loop goroutine, reads what arrived into buf, opens
// the whole records in place and hands over the complete messages. A
// partial record is kept for the next time (copied out of buf), as are
// the records a pause left unopened.
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
		k := copy(buf, c.rd.partial) // at most a record, or what fit in buf
		c.rd.partial = nil
		var n int
		var err error
		if k < len(buf) {
			n, err = c.raw.Read(buf[k:])
			if n > 0 {
				c.lastRead.Store(time.Now().UnixNano())
			}
		}
		rest, more := c.records(buf[:k+n])
		if c.closed.Load() {
			return
		}
		if c.draining.Load() {
			c.drain(buf)
			return
		}
		if len(rest) > 0 {
			c.rd.partial = append([]byte(nil), rest...)
		}
		if !more {
			return
		}
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			return
		case err == io.EOF && c.rd.partial != nil:
			c.shut(fmt.Errorf("%w: the connection ended inside a record", io.ErrUnexpectedEOF))
			return
		case err != nil:
			c.shut(err)
			return
		}
	}
}

// records opens the whole records at the front of data and handles what
// they carry: the bytes it did not take (a partial record, or the records
// after a pause), and false when the connection paused or ended.
func (c *Conn) records(data []byte) (rest []byte, more bool) {
	for {
		n, app, update, err := c.rd.read(data)
		if err != nil {
			c.tlsFailed(err)
			return nil, false
		}
		if n == 0 {
			return data, true
		}
		data = data[n:]
		if update && c.updateKeys(false) != nil { // RFC 8446 §4.6.3: answer before any more data
			return nil, false
		}
		if len(app) > 0 {
			c.in = append(c.in, app...)
			if !c.frames() {
				return data, false
			}
		}
	}
}

// tlsFailed ends the connection for a record-layer error: io.EOF is the
// peer's close_notify; for an error of ours the peer is sent its alert
// (best effort), for the peer's alert nothing more.
func (c *Conn) tlsFailed(err error) {
	var te *tlsError
	if errors.As(err, &te) {
		if te.remote {
			c.raw.mute()
		} else {
			c.raw.sendAlert(te.alert)
		}
	}
	c.shut(err)
}

// updateKeys sends a KeyUpdate (RFC 8446 §4.6.3), asking the peer to
// update its keys too when requested, and moves to the next write key.
func (c *Conn) updateKeys(requested bool) error {
	if err := c.raw.keyUpdate(requested); err != nil {
		c.shut(err)
		return err
	}
	return nil
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
			c.raw.writeRecords(recordApplicationData, serverFrame(ws.OpClose, ws.NewCloseFrameBody(code, "")))
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
		c.raw.writeRecords(recordApplicationData, serverFrame(ws.OpClose, ws.NewCloseFrameBody(code, reason)))
	}
	c.raw.flushNow()
	if c.draining.Swap(true) {
		return
	}
	c.drainErr = err
	c.in, c.msg, c.msgOp, c.rd.partial = nil, nil, false, nil
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

// rawConn is the TCP connection: under crypto/tls until adoption (which
// capture follows), then, once nonblocking is set, read on the loop and
// written through the record layer (writeRecords) without waiting.
type rawConn struct {
	*net.TCPConn
	rc          syscall.RawConn
	fd          int
	nonblocking atomic.Bool
	loop        *loop
	// watch follows the TLS records until adoption; nil after.
	watch *capture

	mu  sync.Mutex
	wr  trafficKeys // the record layer's write side, from adoption
	out []byte      // queued writes, nil when none
	// muted: an alert that ends the connection went out, or came in:
	// nothing more is written.
	muted   bool
	reading bool // EPOLLIN wanted (not paused)
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
	c := &rawConn{TCPConn: tcp, rc: rc, fd: -1, reading: true, watch: newCapture(true)}
	if err := rc.Control(func(fd uintptr) { c.fd = int(fd) }); err != nil {
		return nil, err
	}
	return c, nil
}

// Read is crypto/tls's until adoption: it never reads past the end of
// the current record while watch follows them. Once non-blocking, it
// returns os.ErrDeadlineExceeded when the socket has nothing.
func (c *rawConn) Read(p []byte) (int, error) {
	if !c.nonblocking.Load() {
		w := c.watch
		if w == nil {
			return c.TCPConn.Read(p)
		}
		if limit := w.readLimit(); limit > 0 && len(p) > limit {
			p = p[:limit]
		}
		n, err := c.TCPConn.Read(p)
		w.feed(dirIn, p[:max(n, 0)])
		return n, err
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

var errWriteAdopted = errors.New("linkpoll: an adopted connection is written through its Conn")

// Write is crypto/tls's, until adoption.
func (c *rawConn) Write(p []byte) (int, error) {
	if c.nonblocking.Load() {
		return 0, errWriteAdopted
	}
	n, err := c.TCPConn.Write(p)
	if w := c.watch; w != nil {
		w.feed(dirOut, p[:max(n, 0)])
	}
	return n, err
}

// writeRecords seals p as records of type typ and writes what the socket
// takes, queueing the rest; it fails with ErrSlowPeer when the queue
// would pass Config.MaxQueued (sealing nothing then, when something was
// queued already).
func (c *rawConn) writeRecords(typ byte, p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writeLocked(typ, p)
}

// writeLocked is writeRecords; c.mu held.
func (c *rawConn) writeLocked(typ byte, p []byte) error {
	if c.closed || c.muted {
		return net.ErrClosed
	}
	size := c.wr.sealedLen(len(p)) + c.wr.sealedLen(len(keyUpdateMsg(false)))
	if len(c.out) > 0 {
		if len(c.out)+size > c.loop.p.cfg.MaxQueued {
			return ErrSlowPeer
		}
		var err error
		c.out, err = c.seal(c.out, typ, p)
		return err
	}
	b, err := c.seal(make([]byte, 0, size), typ, p)
	if err != nil {
		return err
	}
	n, err := c.writeSome(b)
	if err != nil {
		return err
	}
	rest := b[n:]
	if len(rest) == 0 {
		return nil
	}
	if len(rest) > c.loop.p.cfg.MaxQueued {
		return ErrSlowPeer
	}
	c.out = rest
	return c.ctl()
}

// seal appends p as records of at most maxPlaintext bytes, updating the
// write key after writeKeyLimit records under it; c.mu held.
func (c *rawConn) seal(dst []byte, typ byte, p []byte) ([]byte, error) {
	var err error
	for first := true; first || len(p) > 0; first = false {
		if c.wr.seq >= writeKeyLimit {
			if dst, err = c.wr.seal(dst, recordHandshake, keyUpdateMsg(false)); err != nil {
				return dst, err
			}
			if err = c.wr.update(); err != nil {
				return dst, err
			}
		}
		n := min(len(p), maxPlaintext)
		if dst, err = c.wr.seal(dst, typ, p[:n]); err != nil {
			return dst, err
		}
		p = p[n:]
	}
	return dst, nil
}

// keyUpdate sends a KeyUpdate under the current write key, then moves to
// the next (RFC 8446 §4.6.3).
func (c *rawConn) keyUpdate(requested bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.writeLocked(recordHandshake, keyUpdateMsg(requested)); err != nil {
		return err
	}
	return c.wr.update()
}

// sendAlert sends an alert, best effort: close_notify where crypto/tls's
// Close would, or the fatal alert of a record-layer error; nothing is
// written after it.
func (c *rawConn) sendAlert(a alert) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.muted || c.wr.aead == nil {
		return
	}
	level := byte(2) // fatal
	if a == alertCloseNotify {
		level = 1
	}
	c.writeLocked(recordAlert, []byte{level, byte(a)})
	c.muted = true
}

// mute stops writing: the peer ended the connection with an alert.
func (c *rawConn) mute() {
	c.mu.Lock()
	c.muted = true
	c.mu.Unlock()
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
