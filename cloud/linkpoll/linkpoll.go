//go:build linux

// Package linkpoll serves upgraded WebSocket connections from a few epoll
// loops instead of a goroutine each: the relay's agent links, tens of
// thousands of them idle but for a heartbeat every ten seconds.
//
// The handshake and the WebSocket upgrade stay where they are: the
// standard library's crypto/tls and net/http, on the connection's
// goroutine, which ends once the connection is adopted. For that, the
// server's listener is wrapped by Poller.Listener and its tls.Config
// comes from Poller.TLSConfig: until adoption the connection under
// crypto/tls follows its records both ways, learns the TLS 1.3
// application traffic secrets from crypto/tls's key log (kept in memory
// only until adoption) and counts the records sealed under them. Adopt
// then takes the connection without its *tls.Conn, which is let go with
// its buffers, handshake leftovers and the peer's parsed certificates:
// the poller runs the TLS 1.3 record layer itself (RFC 8446 §5, with
// KeyUpdate both ways, §4.6.3) over the socket, switched to
// non-blocking. An idle connection holds two AEADs, two sequence numbers,
// the two traffic secrets and nothing else of TLS; a partial record
// waits in a buffer of the connection's only while the rest is coming.
// Links must negotiate TLS 1.3 (with AES-GCM or ChaCha20-Poly1305).
//
// A loop opens the records that arrived in place, in a buffer it shares
// with its other connections, parses the frames (client frames must be
// masked; fragmented messages are reassembled up to Config.MaxMessage,
// refused as soon as a header says more) and hands each binary message
// to the Handler on the loop's goroutine. Writes are sealed into records
// and written without waiting: what the socket does not take is queued,
// bounded, flushed on EPOLLOUT. A record that breaks TLS ends its
// connection only, with the alert for it (ErrTLS). Linux only.
//
// A handler whose work may wait pauses the connection's reading
// (Conn.PauseReading) and does the work on a goroutine of its own, which
// resumes it: the peer is held back by TCP flow control meanwhile. A
// connection that breaks the protocol gets its Refuser's last message and
// a close frame, and what it still sends is dropped until it closes (or
// Config.CloseGrace), so the close frame is not lost to a reset. A
// handler that panics closes its connection only, with 1011.
//
// The relay serves its agent links with it (cloud/relay, conn.go); the
// figures are in docs/benchmarks.md, "Relay cost per connection alone".
package linkpoll

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxQueued  = 1 << 20
	DefaultCloseGrace = 2 * time.Second
)

// Errors a connection ends with, as Handler.Closed is told.
var (
	// ErrSilent: nothing read for Config.Silent.
	ErrSilent = errors.New("linkpoll: peer silent")
	// ErrSlowPeer: more than Config.MaxQueued bytes waited to be written.
	ErrSlowPeer = errors.New("linkpoll: peer not reading: write queue full")
	// ErrClosed: the connection or the poller was closed.
	ErrClosed = errors.New("linkpoll: closed")
	// ErrPanic: the handler panicked on one of the connection's messages.
	ErrPanic = errors.New("linkpoll: handler panicked")
)

// Config configures a Poller.
type Config struct {
	// Loops is the number of epoll loops (goroutines); 0 means
	// runtime.NumCPU().
	Loops int
	// MaxMessage bounds a message, fragmented or not; required.
	MaxMessage int
	// MaxQueued bounds a connection's bytes waiting to be written; 0
	// means DefaultMaxQueued.
	MaxQueued int
	// Silent closes a connection that sent nothing for this long (a
	// paused one excepted); 0 never does.
	Silent time.Duration
	// CloseGrace bounds the wait for the peer's answer to Close; 0 means
	// DefaultCloseGrace.
	CloseGrace time.Duration
}

// Handler receives a connection's events. Message is called on the
// connection's loop goroutine, one message at a time, and must not
// block (every connection of the loop waits): work that may wait goes
// elsewhere, and a handler that cannot take more calls Conn.PauseReading.
// msg is valid only during the call. Closed is called once, from any
// goroutine, when the connection ended; no Message follows it.
type Handler interface {
	Message(c *Conn, msg []byte)
	Closed(c *Conn, err error)
}

// Poller owns the loops and the connections adopted by them.
type Poller struct {
	cfg   Config
	loops []*loop
	next  atomic.Uint32
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

// New starts a poller's loops (and, with Config.Silent, its sweep).
func New(cfg Config) (*Poller, error) {
	if cfg.MaxMessage <= 0 {
		return nil, errors.New("linkpoll: MaxMessage is required")
	}
	if cfg.Loops <= 0 {
		cfg.Loops = runtime.NumCPU()
	}
	if cfg.MaxQueued <= 0 {
		cfg.MaxQueued = DefaultMaxQueued
	}
	if cfg.CloseGrace <= 0 {
		cfg.CloseGrace = DefaultCloseGrace
	}
	p := &Poller{cfg: cfg, stop: make(chan struct{})}
	for range cfg.Loops {
		l, err := newLoop(p)
		if err != nil {
			p.Close()
			return nil, err
		}
		p.loops = append(p.loops, l)
		p.wg.Go(l.run)
	}
	if cfg.Silent > 0 {
		p.wg.Go(p.sweep)
	}
	return p, nil
}

// Listener wraps ln (a TCP listener) so its connections can be adopted
// once upgraded. Put the TLS layer (http.Server.ServeTLS, tls.NewListener)
// on top of it.
func (p *Poller) Listener(ln net.Listener) net.Listener { return listener{ln} }

type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tcp, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil // not adoptable; Adopt says so
	}
	rc, err := newRawConn(tcp)
	if err != nil {
		c.Close()
		return nil, err
	}
	return rc, nil
}

// TLSConfig returns base for the server (http.Server.TLSConfig) with
// what adoption needs: for each connection accepted through a Listener
// of the poller, a GetConfigForClient that hands crypto/tls a clone of
// base (or of what base's own GetConfigForClient returns) whose
// KeyLogWriter is the connection's own, and with session tickets off
// (crypto/tls would send them under the application keys; agents
// reconnect with full handshakes anyway). The key log is the only API
// of crypto/tls that yields the application traffic secrets, which the
// record layer goes on with after adoption: the lines go to the
// connection's memory, parsed and kept only until adoption, and are
// written nowhere. Other connections get base's configuration.
func (p *Poller) TLSConfig(base *tls.Config) *tls.Config {
	base = base.Clone()
	inner := base.GetConfigForClient
	cfg := base.Clone()
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		var got *tls.Config
		if inner != nil {
			var err error
			if got, err = inner(hello); err != nil {
				return nil, err
			}
		}
		raw, ok := hello.Conn.(*rawConn)
		if !ok || raw.watch == nil {
			return got, nil
		}
		if got == nil {
			got = base
		}
		c := got.Clone()
		c.GetConfigForClient = nil
		c.KeyLogWriter = raw.watch
		c.SessionTicketsDisabled = true
		return c, nil
	}
	return cfg
}

// Adopt takes over tc, whose handshake and WebSocket upgrade are done and
// whose connection came from a Listener of this poller served with
// TLSConfig, and returns it as a Conn served by the Handler newHandler
// returns for it (called once, before any event, so the handler can keep
// the Conn). From then on the poller runs the TLS 1.3 record layer
// itself, with the connection's application traffic secrets, and keeps
// no *tls.Conn: tc must not be used any more (not even closed: its
// socket is the Conn's). The connection must have negotiated TLS 1.3
// with TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384 or
// TLS_CHACHA20_POLY1305_SHA256, and nothing may have been read past the
// upgrade request (a hijacked bufio.Reader with bytes buffered: refuse
// the connection instead). On an error tc is closed and the handler is
// not told.
func (p *Poller) Adopt(tc *tls.Conn, newHandler func(*Conn) Handler) (*Conn, error) {
	raw, ok := tc.NetConn().(*rawConn)
	if !ok {
		tc.Close()
		return nil, fmt.Errorf("linkpoll: connection %T was not accepted through Poller.Listener", tc.NetConn())
	}
	select {
	case <-p.stop:
		tc.Close()
		return nil, ErrClosed
	default:
	}
	rd, wr, err := raw.takeKeys(tc)
	if err != nil {
		tc.Close()
		return nil, err
	}
	if err := raw.SetDeadline(time.Time{}); err != nil {
		tc.Close()
		return nil, err
	}
	l := p.loops[int(p.next.Add(1))%len(p.loops)]
	c := &Conn{loop: l, raw: raw, rd: recordReader{keys: rd}}
	c.h = newHandler(c)
	c.lastRead.Store(time.Now().UnixNano())
	raw.loop = l
	raw.wr = wr
	raw.nonblocking.Store(true)
	l.mu.Lock()
	l.conns[raw.fd] = c
	l.mu.Unlock()
	raw.mu.Lock()
	ev := raw.events()
	raw.mu.Unlock()
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, raw.fd, &unix.EpollEvent{Events: ev, Fd: int32(raw.fd)}); err != nil {
		c.once.Do(func() { // h never saw c: no Closed
			c.closed.Store(true)
			l.mu.Lock()
			delete(l.conns, raw.fd)
			l.mu.Unlock()
			raw.shut()
		})
		return nil, err
	}
	return c, nil
}

// takeKeys checks that tc can be adopted and returns its record layer's
// keys, at the sequence numbers crypto/tls reached (capture).
func (c *rawConn) takeKeys(tc *tls.Conn) (rd, wr trafficKeys, err error) {
	w := c.watch
	if w == nil {
		return rd, wr, errNoSecrets
	}
	cs := tc.ConnectionState()
	if cs.Version != tls.VersionTLS13 {
		return rd, wr, fmt.Errorf("linkpoll: %s negotiated; adoption needs TLS 1.3", tls.VersionName(cs.Version))
	}
	// Plaintext crypto/tls opened but nobody read would be lost: with
	// the deadline past, Read returns it, or times out without reading
	// the socket.
	if err := c.SetReadDeadline(time.Unix(1, 0)); err != nil {
		return rd, wr, err
	}
	var one [1]byte
	if n, err := tc.Read(one[:]); n > 0 {
		return rd, wr, errors.New("linkpoll: data sent before the upgrade was answered")
	} else if !errors.Is(err, os.ErrDeadlineExceeded) {
		return rd, wr, fmt.Errorf("linkpoll: connection unusable at adoption: %w", err)
	}
	rd, wr, err = w.adoptKeys(cs.CipherSuite)
	c.watch = nil
	return rd, wr, err
}

// Close closes every connection (ErrClosed, without a close frame) and
// stops the loops.
func (p *Poller) Close() error {
	p.once.Do(func() {
		close(p.stop)
		for _, l := range p.loops {
			l.wakeUp()
		}
		p.wg.Wait()
		for _, l := range p.loops {
			for _, c := range l.all() {
				c.shut(ErrClosed)
			}
			unix.Close(l.epfd)
			unix.Close(l.wake)
		}
	})
	return nil
}

// sweep closes connections silent for Config.Silent.
func (p *Poller) sweep() {
	t := time.NewTicker(max(p.cfg.Silent/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		limit := time.Now().Add(-p.cfg.Silent).UnixNano()
		for _, l := range p.loops {
			for _, c := range l.all() {
				if !c.paused.Load() && c.lastRead.Load() < limit {
					c.shut(ErrSilent)
				}
			}
		}
	}
}
