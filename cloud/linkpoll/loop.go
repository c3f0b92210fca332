//go:build linux

package linkpoll

import (
	"errors"
	"sync"

	"golang.org/x/sys/unix"
)

// loop is one epoll instance and the goroutine waiting on it.
type loop struct {
	p    *Poller
	epfd int
	// wake is an eventfd in the epoll set: written to stop the loop or to
	// have it read the connections in posted.
	wake int

	mu     sync.Mutex
	conns  map[int]*Conn // by file descriptor
	posted []*Conn

	buf [32 << 10]byte // plaintext scratch, the loop goroutine's only
}

func newLoop(p *Poller) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, err
	}
	return &loop{p: p, epfd: epfd, wake: wake, conns: map[int]*Conn{}}, nil
}

// post has the loop read c as if the socket were readable.
func (l *loop) post(c *Conn) {
	l.mu.Lock()
	l.posted = append(l.posted, c)
	l.mu.Unlock()
	l.wakeUp()
}

func (l *loop) wakeUp() {
	unix.Write(l.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
}

func (l *loop) all() []*Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*Conn, 0, len(l.conns))
	for _, c := range l.conns {
		out = append(out, c)
	}
	return out
}

func (l *loop) run() {
	events := make([]unix.EpollEvent, 256)
	var drain [8]byte
	for {
		n, err := unix.EpollWait(l.epfd, events, -1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		for _, ev := range events[:max(n, 0)] {
			if int(ev.Fd) == l.wake {
				select {
				case <-l.p.stop:
					return
				default:
				}
				unix.Read(l.wake, drain[:])
				l.mu.Lock()
				posted := l.posted
				l.posted = nil
				l.mu.Unlock()
				for _, c := range posted {
					c.readable(l.buf[:])
				}
				continue
			}
			l.mu.Lock()
			c := l.conns[int(ev.Fd)]
			l.mu.Unlock()
			if c == nil {
				continue
			}
			if ev.Events&unix.EPOLLOUT != 0 {
				if err := c.raw.flush(); err != nil {
					c.shut(err)
					continue
				}
			}
			switch {
			case ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP) != 0:
				c.readable(l.buf[:])
			case ev.Events&(unix.EPOLLHUP|unix.EPOLLERR) != 0:
				// Reported whatever the interest: the peer is gone, paused
				// or not (level-triggered, it would be reported again).
				c.shut(errors.New("linkpoll: connection reset"))
			}
		}
	}
}
