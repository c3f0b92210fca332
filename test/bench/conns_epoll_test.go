package bench

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"outpost.dev/wire"
)

// epollConns is the event-driven design that keeps the standard
// library's crypto/tls: the TLS handshake and the WebSocket upgrade
// (github.com/gobwas/ws) run on a transient goroutine, bounded as the
// relay bounds its handshakes; the connection is then handed to an epoll
// loop (golang.org/x/sys/unix), whose goroutine decrypts whatever
// arrived without blocking (crypto/tls keeps a partial record across a
// read that ends in a timeout error, which nbConn returns when the socket
// has nothing more) and parses the frames itself. Writes that the socket
// does not take at once wait in the connection's queue, flushed on
// EPOLLOUT. One sweep a heartbeat interval closes silent connections.
type epollConns struct {
	connCounters
	ln    net.Listener
	tc    *tls.Config
	loops []*epollLoop
	// handshakes bounds the transient handshake goroutines, as the
	// relay's Config.MaxHandshakes.
	handshakes chan struct{}
	stop       chan struct{}
	wg         sync.WaitGroup
}

// epollMaxQueued bounds a connection's queued writes; a peer that lets
// more pile up is closed.
const epollMaxQueued = 1 << 20

type epollLoop struct {
	s    *epollConns
	epfd int
	// wake is an eventfd in the epoll set, written to stop the loop.
	wake int
	mu   sync.Mutex
	fds  map[int]*epConn
	buf  [32 << 10]byte // the loop's plaintext scratch
}

// epConn is one connection once upgraded.
type epConn struct {
	loop *epollLoop
	nb   *nbConn
	tls  *tls.Conn
	// in holds the plaintext of a frame not complete yet; nil when idle.
	in       []byte
	lastRead atomic.Int64 // unix nanoseconds
	once     sync.Once
}

func startEpollConns(b *testing.B, serving tls.Certificate, verify func([]*x509.Certificate) error) connServer {
	s := &epollConns{handshakes: make(chan struct{}, 64), stop: make(chan struct{})}
	var err error
	if s.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	s.tc = &tls.Config{
		MinVersion:       tls.VersionTLS12,
		Certificates:     []tls.Certificate{serving},
		ClientAuth:       tls.RequestClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error { return verifyIfGiven(verify, cs.PeerCertificates) },
		NextProtos:       []string{"http/1.1"},
	}
	for range runtime.NumCPU() {
		fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			b.Fatal(err)
		}
		wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			b.Fatal(err)
		}
		if err := unix.EpollCtl(fd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
			b.Fatal(err)
		}
		l := &epollLoop{s: s, epfd: fd, wake: wake, fds: map[int]*epConn{}}
		s.loops = append(s.loops, l)
		s.wg.Go(l.run)
	}
	s.wg.Go(s.accept)
	s.wg.Go(s.sweep)
	return s
}

func (s *epollConns) addr() string { return s.ln.Addr().String() }

func (s *epollConns) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		select {
		case s.handshakes <- struct{}{}:
		case <-s.stop:
			c.Close()
			return
		}
		go func() {
			defer func() { <-s.handshakes }()
			s.handshake(c.(*net.TCPConn))
		}()
	}
}

// handshake runs the TLS handshake and the upgrade, blocking, then hands
// the connection to a loop.
func (s *epollConns) handshake(tcp *net.TCPConn) {
	nb, err := newNBConn(tcp)
	if err != nil {
		tcp.Close()
		return
	}
	tc := tls.Server(nb, s.tc)
	tcp.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		tcp.Close()
		return
	}
	cs := tc.ConnectionState()
	u := ws.Upgrader{OnRequest: func(uri []byte) error {
		if string(uri) != wire.PathConnect {
			return ws.RejectConnectionError(ws.RejectionStatus(404))
		}
		if len(cs.PeerCertificates) == 0 {
			return ws.RejectConnectionError(ws.RejectionStatus(401), ws.RejectionReason("a node certificate is required"))
		}
		return nil
	}}
	if _, err := u.Upgrade(tc); err != nil {
		tcp.Close()
		return
	}
	tcp.SetDeadline(time.Time{})
	if cs.Version == tls.VersionTLS13 {
		s.tls13.Add(1)
	}
	c := &epConn{nb: nb, tls: tc}
	c.lastRead.Store(time.Now().UnixNano())
	c.loop = s.loops[nb.fd%len(s.loops)]
	nb.nonblocking.Store(true)
	nb.loop = c.loop
	c.loop.mu.Lock()
	c.loop.fds[nb.fd] = c
	c.loop.mu.Unlock()
	s.connected.Add(1)
	// Bytes that came with the upgrade's last read may be in crypto/tls's
	// buffer already, where epoll does not see them: read them here,
	// before the loop owns the connection (epoll is level-triggered, so
	// what arrives from now on is reported when it is added).
	if c.readable(make([]byte, 4<<10)); c.nb.isClosed() {
		return
	}
	if err := unix.EpollCtl(c.loop.epfd, unix.EPOLL_CTL_ADD, nb.fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(nb.fd)}); err != nil {
		c.close()
	}
}

func (l *epollLoop) run() {
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(l.epfd, events, -1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		for _, ev := range events[:max(n, 0)] {
			if int(ev.Fd) == l.wake {
				return
			}
			l.mu.Lock()
			c := l.fds[int(ev.Fd)]
			l.mu.Unlock()
			if c == nil {
				continue
			}
			if ev.Events&unix.EPOLLOUT != 0 {
				if err := c.nb.flush(); err != nil {
					c.close()
					continue
				}
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				c.readable(l.buf[:])
			}
		}
	}
}

// readable decrypts what arrived, through buf, and handles the complete
// frames.
func (c *epConn) readable(buf []byte) {
	for {
		n, err := c.tls.Read(buf)
		if n > 0 {
			c.in = append(c.in, buf[:n]...)
			c.lastRead.Store(time.Now().UnixNano())
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			c.close()
			return
		}
	}
	if err := c.frames(); err != nil {
		c.writeClose(ws.StatusProtocolError, err.Error())
		c.close()
	}
}

// frames handles the complete frames in c.in and keeps the rest.
func (c *epConn) frames() error {
	s := c.loop.s
	for len(c.in) > 0 {
		r := bytes.NewReader(c.in)
		h, err := ws.ReadHeader(r)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break // more to come
		}
		if err != nil {
			return err
		}
		if !h.Masked || !h.Fin || h.Rsv != 0 {
			return errors.New("unmasked, fragmented or extended frame")
		}
		if h.Length > wire.MaxFrameSize {
			return errors.New("frame too large")
		}
		at := len(c.in) - r.Len()
		if int64(r.Len()) < h.Length {
			break
		}
		payload := c.in[at : at+int(h.Length)]
		c.in = c.in[at+int(h.Length):]
		ws.Cipher(payload, h.Mask, 0)
		switch h.OpCode {
		case ws.OpBinary:
			if !isHeartbeat(payload) {
				return errors.New("heartbeats only")
			}
			if _, err := c.tls.Write(heartbeatWS); err != nil {
				c.close()
				return nil
			}
			s.echoed.Add(1)
		case ws.OpPing:
			if _, err := c.tls.Write(ws.MustCompileFrame(ws.NewPongFrame(payload))); err != nil {
				c.close()
				return nil
			}
		case ws.OpPong:
		case ws.OpClose:
			c.writeClose(ws.StatusNormalClosure, "")
			c.close()
			return nil
		default:
			return errors.New("text or unknown frame")
		}
	}
	if len(c.in) == 0 {
		c.in = nil
	}
	return nil
}

// heartbeatWS is heartbeatFrame as one server WebSocket frame.
var heartbeatWS = ws.MustCompileFrame(ws.NewBinaryFrame(heartbeatFrame))

func (c *epConn) writeClose(code ws.StatusCode, reason string) {
	c.tls.Write(ws.MustCompileFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(code, reason))))
}

func (c *epConn) close() {
	c.once.Do(func() {
		l := c.loop
		l.mu.Lock()
		delete(l.fds, c.nb.fd)
		l.mu.Unlock()
		unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, c.nb.fd, nil)
		c.nb.shut()
		l.s.connected.Add(-1)
	})
}

// sweep closes connections silent for three heartbeat intervals, as the
// relay does.
func (s *epollConns) sweep() {
	t := time.NewTicker(connHeartbeat)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		limit := time.Now().Add(-3 * connHeartbeat).UnixNano()
		for _, l := range s.loops {
			var silent []*epConn
			l.mu.Lock()
			for _, c := range l.fds {
				if c.lastRead.Load() < limit {
					silent = append(silent, c)
				}
			}
			l.mu.Unlock()
			for _, c := range silent {
				c.close()
			}
		}
	}
}

func (s *epollConns) close() {
	close(s.stop)
	s.ln.Close()
	for _, l := range s.loops {
		unix.Write(l.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	}
	s.wg.Wait()
	for _, l := range s.loops {
		l.mu.Lock()
		var all []*epConn
		for _, c := range l.fds {
			all = append(all, c)
		}
		l.mu.Unlock()
		for _, c := range all {
			c.close()
		}
		unix.Close(l.epfd)
		unix.Close(l.wake)
	}
}

// nbConn is the net.Conn under crypto/tls. Until nonblocking is set it
// is the TCP connection (the handshake and upgrade block their
// goroutine); then Read reads what the socket has and returns
// os.ErrDeadlineExceeded, a timeout crypto/tls does not hold against the
// connection, when it has nothing; Write writes what the socket takes
// and queues the rest for the loop.
type nbConn struct {
	*net.TCPConn
	rc          syscall.RawConn
	fd          int
	nonblocking atomic.Bool
	loop        *epollLoop

	mu     sync.Mutex
	out    []byte // queued writes, nil when none
	closed bool
}

func newNBConn(tcp *net.TCPConn) (*nbConn, error) {
	rc, err := tcp.SyscallConn()
	if err != nil {
		return nil, err
	}
	c := &nbConn{TCPConn: tcp, rc: rc, fd: -1}
	if err := rc.Control(func(fd uintptr) { c.fd = int(fd) }); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *nbConn) Read(p []byte) (int, error) {
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

func (c *nbConn) Write(p []byte) (int, error) {
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
		n, err := c.write(rest)
		if err != nil {
			return 0, err
		}
		if rest = rest[n:]; len(rest) == 0 {
			return len(p), nil
		}
		if err := unix.EpollCtl(c.loop.epfd, unix.EPOLL_CTL_MOD, c.fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLOUT, Fd: int32(c.fd)}); err != nil {
			return 0, err
		}
	}
	if len(c.out)+len(rest) > epollMaxQueued {
		return 0, errors.New("peer not reading: write queue full")
	}
	c.out = append(c.out, rest...)
	return len(p), nil
}

// write writes what the socket takes of p now.
func (c *nbConn) write(p []byte) (int, error) {
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
func (c *nbConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.out) == 0 {
		return nil
	}
	n, err := c.write(c.out)
	if err != nil {
		return err
	}
	if c.out = c.out[n:]; len(c.out) > 0 {
		return nil
	}
	c.out = nil
	return unix.EpollCtl(c.loop.epfd, unix.EPOLL_CTL_MOD, c.fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(c.fd)})
}

func (c *nbConn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *nbConn) shut() {
	c.mu.Lock()
	c.closed = true
	c.out = nil
	c.mu.Unlock()
	c.TCPConn.Close()
}
