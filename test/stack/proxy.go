package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"outpost.dev/test/wait"
)

// Proxy is a TCP proxy on loopback between agents and a relay (or, made
// with NewBalancer, several relay replicas behind one address). It counts
// the bytes that cross it each way (link traffic, TLS and WebSocket framing
// included) and can cut every connection at once, as a lost uplink would:
// between two reads (Cut) or in the middle of one (CutMidFrame), and refuse
// new connections until told otherwise (Refuse).
type Proxy struct {
	Addr string
	// Up counts agent→relay bytes, Down relay→agent bytes.
	Up, Down atomic.Int64

	// targets are the backends, tried round-robin from next.
	targets []string
	next    atomic.Uint64
	ln      net.Listener
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
	refuse  atomic.Bool
	// midCut, when set, is closed by the pipe that cut mid-chunk.
	midCut atomic.Pointer[chan struct{}]
	// upWaiters (under mu) are closed when bytes next cross up.
	upWaiters []chan struct{}
	upWaiting atomic.Bool
}

// NewProxy listens on a free loopback port and forwards to target.
func NewProxy(target string) (*Proxy, error) { return NewBalancer(target) }

// NewBalancer is a Proxy in front of several backends, as a TCP load
// balancer in front of relay replicas: each new connection goes to the
// next backend in turn (round-robin), skipping one that refuses it; a
// connection is closed when none accepts. When a backend dies, the
// connections through it are closed (its side closes or resets, and the
// proxy closes the client's).
func NewBalancer(targets ...string) (*Proxy, error) {
	if len(targets) == 0 {
		return nil, errors.New("stack: a proxy needs a backend")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{Addr: ln.Addr().String(), targets: targets, ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// dial connects to the next backend in turn that accepts.
func (p *Proxy) dial() (net.Conn, error) {
	var errs []error
	for range p.targets {
		t := p.targets[(p.next.Add(1)-1)%uint64(len(p.targets))]
		u, err := net.DialTimeout("tcp", t, 5*time.Second)
		if err == nil {
			return u, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.refuse.Load() {
			// A reset, as from a host that is unreachable or down.
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			c.Close()
			continue
		}
		u, err := p.dial()
		if err != nil {
			c.Close()
			continue
		}
		p.track(c, u)
		p.wg.Add(2)
		go p.pipe(u, c, &p.Up)
		go p.pipe(c, u, &p.Down)
	}
}

func (p *Proxy) track(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
}

// crossed counts k bytes on n (Up or Down) and, for bytes up, wakes the
// waiters of NextUp.
func (p *Proxy) crossed(n *atomic.Int64, k int) {
	n.Add(int64(k))
	if n == &p.Up && p.upWaiting.Load() {
		p.mu.Lock()
		for _, ch := range p.upWaiters {
			close(ch)
		}
		p.upWaiters = nil
		p.upWaiting.Store(false)
		p.mu.Unlock()
	}
}

func (p *Proxy) pipe(dst, src net.Conn, n *atomic.Int64) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		k, err := src.Read(buf)
		if k >= 2 {
			if ch := p.midCut.Load(); ch != nil && p.midCut.CompareAndSwap(ch, nil) {
				// Half of what was read goes through, then the link dies:
				// the other side sees a frame cut short.
				p.crossed(n, k/2)
				_, _ = dst.Write(buf[:k/2])
				p.Cut()
				close(*ch)
				break
			}
		}
		if k > 0 {
			p.crossed(n, k)
			if _, werr := dst.Write(buf[:k]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// Cut closes every open connection; new ones are still accepted.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

// CutMidFrame cuts every connection in the middle of the next chunk of
// data that crosses the proxy either way: the first half of the chunk is
// forwarded, then every connection is closed. If no data comes within
// timeout it cuts anyway. It reports whether the cut fell mid-chunk.
func (p *Proxy) CutMidFrame(timeout time.Duration) bool {
	ch := make(chan struct{})
	p.midCut.Store(&ch)
	select {
	case <-ch:
		return true
	case <-time.After(timeout):
		if p.midCut.CompareAndSwap(&ch, nil) {
			p.Cut()
			return false
		}
		<-ch // a pipe took it just now
		return true
	}
}

// NextUp returns a channel closed once bytes next cross the proxy up
// (agent to relay) after the call: after Refuse(false), the first of the
// agent's reconnect.
func (p *Proxy) NextUp() <-chan struct{} {
	ch := make(chan struct{})
	p.mu.Lock()
	p.upWaiters = append(p.upWaiters, ch)
	p.upWaiting.Store(true)
	p.mu.Unlock()
	return ch
}

// Refuse makes the proxy reset every new connection at once while on is
// true, as an unreachable relay would; existing ones are left alone (Cut
// them).
func (p *Proxy) Refuse(on bool) { p.refuse.Store(on) }

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() {
	p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

// Quiet waits until no byte has crossed the proxy in either direction for
// window: the link's traffic has settled (a hello, a first status, a burst
// of reports are through). It gives up after timeout or when ctx ends.
func (p *Proxy) Quiet(ctx context.Context, window, timeout time.Duration) error {
	last := p.Up.Load() + p.Down.Load()
	since := time.Now()
	return wait.Until(ctx, timeout, func() (bool, string) {
		now := p.Up.Load() + p.Down.Load()
		if now != last {
			last, since = now, time.Now()
		}
		return time.Since(since) >= window, fmt.Sprintf("%d bytes crossed %s ago", now, time.Since(since).Round(time.Millisecond))
	})
}
