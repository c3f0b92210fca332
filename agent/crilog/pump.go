package crilog

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"golang.org/x/sys/unix"
)

// Pump copies containers' output streams into their logs, every stream on
// one goroutine that runs only while some copy does: a running container
// costs the agent the line buffer of each of its streams (lineReader), not
// a goroutine and its stack per stream. The streams are the read ends of
// FIFOs or pipes, non-blocking, watched with an epoll instance of the
// Pump's own (level-triggered); a stream's turn reads at most
// pumpTurnBytes, so one busy container never holds up the others.
//
// A copy ends when each of its streams has (end of file: every writer
// closed, the task is gone) or when Stop is called; then the Pump closes
// the streams' descriptors (it owns them from Start on) and the Writer,
// and closes Done. Writes go on the Pump's goroutine: a stalled log file
// system stalls every copy, while each container's pipe buffers its
// output.
type Pump struct {
	mu      sync.Mutex
	epfd    int // -1 while no copy runs
	wakefd  int // eventfd: Stop asks the loop to look; -1 with epfd
	streams map[int32]*pumpStream
	running bool
	ended   []*PumpCopy // copies whose then is still to be called
}

// pumpTurnBytes is the most a stream's turn reads before the next stream's.
const pumpTurnBytes = 64 << 10

// PumpCopy is one container's copy: its streams into one Writer.
type PumpCopy struct {
	w    *Writer // nil: the output is read and dropped
	then func()
	done chan struct{}
	stop bool // guarded by Pump.mu

	// the loop's own
	open    int   // streams not yet finished
	err     error // the first write or read error
	writeOK bool  // writes still go to w
}

// Done is closed once every stream of the copy finished and the Writer is
// closed.
func (c *PumpCopy) Done() <-chan struct{} { return c.done }

// Err is the first error of the copy (a write, or a read that failed other
// than at the end of the stream or by Stop); valid once Done is closed.
func (c *PumpCopy) Err() error { return c.err }

type pumpStream struct {
	fd       int
	name     string
	lr       *lineReader
	c        *PumpCopy
	finished bool // its descriptor is closed (the number may be reused)
}

// NewPump returns a Pump; it opens its epoll instance when a copy starts
// and closes it when the last copy has ended.
func NewPump() *Pump {
	return &Pump{epfd: -1, wakefd: -1, streams: map[int32]*pumpStream{}}
}

// Start copies fds into w: fds[0] as "stdout" and fds[1], if given, as
// "stderr". Each must be the read end of a FIFO or pipe; the Pump makes it
// non-blocking and owns it from now on, on error too. A nil w drops the
// output (it is still read, so the container never blocks on it). then,
// if not nil, is called once the copy has ended (Err is set), before Done
// is closed, on the Pump's goroutine with no lock of the Pump's held: it
// must not wait for another copy.
func (p *Pump) Start(w *Writer, then func(), fds ...int) (*PumpCopy, error) {
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	if len(fds) == 0 || len(fds) > 2 {
		closeAll()
		return nil, fmt.Errorf("a copy has 1 or 2 streams, not %d", len(fds))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.openLocked(); err != nil {
		closeAll()
		return nil, err
	}
	c := &PumpCopy{w: w, then: then, done: make(chan struct{}), writeOK: w != nil}
	names := []string{"stdout", "stderr"}
	for i, fd := range fds {
		s := &pumpStream{fd: fd, name: names[i], lr: newLineReader(fdReader(fd)), c: c}
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
		err := unix.SetNonblock(fd, true)
		if err == nil {
			err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
		}
		if err != nil {
			for _, added := range fds[:i] {
				_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, added, nil)
				delete(p.streams, int32(added))
			}
			closeAll()
			if len(p.streams) == 0 && !p.running {
				p.closeLocked()
			}
			return nil, fmt.Errorf("watch a log stream: %w", err)
		}
		p.streams[int32(fd)] = s
		c.open++
	}
	if !p.running {
		p.running = true
		go p.run()
	}
	return c, nil
}

// Stop ends c: its streams' read ends are closed (a FIFO's other read
// ends keep what was not read), what was read is written, a line cut
// short as a partial record. It does not wait: see Done.
func (p *Pump) Stop(c *PumpCopy) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c.stop = true
	if p.wakefd >= 0 {
		_, _ = unix.Write(p.wakefd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	}
}

func (p *Pump) openLocked() error {
	if p.epfd >= 0 {
		return nil
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("log pump: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return fmt.Errorf("log pump: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return fmt.Errorf("log pump: %w", err)
	}
	p.epfd, p.wakefd = epfd, wakefd
	return nil
}

// run is the loop: it ends when no stream is left.
func (p *Pump) run() {
	events := make([]unix.EpollEvent, 16)
	var ready []*pumpStream
	for {
		p.mu.Lock()
		for _, s := range p.streams {
			if s.c.stop {
				p.finishLocked(s, errStopped)
			}
		}
		if len(p.streams) == 0 {
			p.closeLocked()
			p.mu.Unlock()
			p.endCopies()
			return
		}
		epfd := p.epfd
		p.mu.Unlock()
		p.endCopies()
		n, err := unix.EpollWait(epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			p.failAll(fmt.Errorf("log pump: %w", err))
			return
		}
		ready = ready[:0]
		p.mu.Lock()
		for _, ev := range events[:n] {
			if int(ev.Fd) == p.wakefd {
				var b [8]byte
				_, _ = unix.Read(p.wakefd, b[:])
				continue
			}
			if s := p.streams[ev.Fd]; s != nil {
				ready = append(ready, s)
			}
		}
		p.mu.Unlock()
		for _, s := range ready {
			p.turn(s)
		}
	}
}

// errStopped ends a stream's reads when its copy is stopped.
var errStopped = errors.New("log copy stopped")

// turn reads what s has, up to pumpTurnBytes, and writes its lines.
func (p *Pump) turn(s *pumpStream) {
	if s.finished {
		return
	}
	for start := s.lr.total; s.lr.total-start < pumpTurnBytes; {
		line, partial, err := s.lr.next()
		if errors.Is(err, unix.EAGAIN) {
			return
		}
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			p.mu.Lock()
			p.finishLocked(s, err)
			p.mu.Unlock()
			p.endCopies()
			return
		}
		s.c.write(s.name, line, partial)
	}
}

// write writes a record unless a write failed before: then the output is
// still read, and dropped, so the container never blocks on its log.
func (c *PumpCopy) write(stream string, line []byte, partial bool) {
	if !c.writeOK {
		return
	}
	if err := c.w.Record(stream, line, partial); err != nil {
		c.writeOK = false
		if c.err == nil {
			c.err = err
		}
	}
}

// finishLocked ends stream s: what it had read is written (after Stop,
// the line it was in the middle of as a partial record), its descriptor
// closed, and its copy finished with the last of its streams.
func (p *Pump) finishLocked(s *pumpStream, err error) {
	if err == errStopped {
		s.lr.err = errStopped
		for {
			line, partial, err := s.lr.next()
			if err != nil {
				break
			}
			s.c.write(s.name, line, partial)
		}
	} else if err != nil && s.c.err == nil {
		s.c.err = fmt.Errorf("read %s: %w", s.name, err)
	}
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, s.fd, nil)
	unix.Close(s.fd)
	s.finished = true
	delete(p.streams, int32(s.fd))
	if s.c.open--; s.c.open == 0 {
		if s.c.w != nil {
			if cerr := s.c.w.Close(); cerr != nil && s.c.err == nil {
				s.c.err = cerr
			}
		}
		p.ended = append(p.ended, s.c)
	}
}

// endCopies calls the then of each copy that ended and closes its Done,
// without the lock.
func (p *Pump) endCopies() {
	p.mu.Lock()
	ended := p.ended
	p.ended = nil
	p.mu.Unlock()
	for _, c := range ended {
		if c.then != nil {
			c.then()
		}
		close(c.done)
	}
}

// failAll ends every copy when the loop itself cannot go on.
func (p *Pump) failAll(err error) {
	p.mu.Lock()
	for _, s := range p.streams {
		p.finishLocked(s, err)
	}
	p.closeLocked()
	p.mu.Unlock()
	p.endCopies()
}

// closeLocked ends the loop: an idle Pump holds no descriptor; the next
// Start opens them again.
func (p *Pump) closeLocked() {
	unix.Close(p.epfd)
	unix.Close(p.wakefd)
	p.epfd, p.wakefd = -1, -1
	p.running = false
}

// fdReader reads a non-blocking descriptor: unix.EAGAIN when it is empty,
// io.EOF when every writer is gone.
type fdReader int

func (fd fdReader) Read(b []byte) (int, error) {
	for {
		n, err := unix.Read(int(fd), b)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return 0, err
		case n == 0 && len(b) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}
