// Package tunnels serves kubectl exec, attach and port-forward on the
// agent. The relay opens a tunnel on the link (wire.TunnelOpen); the
// agent takes it (a TunnelAck of zero says so), runs the command in the
// pod's container through containerd, attaches to the container's own
// output and input, or dials the port on the pod's loopback, and copies
// bytes between the tunnel's channels and the
// process or connection. It ends the tunnel with TunnelClose: the exit
// code, or why it failed. A TunnelClose from the relay (kubectl went
// away) kills the exec or closes the connection; a lost link ends every
// tunnel.
//
// Memory is bounded: at most Config.MaxTunnels tunnels, each buffering
// at most wire.TunnelWindow bytes from the relay (see wire/tunnel).
package tunnels

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"outpost.dev/agent/runtime/containerd"
	"outpost.dev/wire"
	"outpost.dev/wire/tunnel"
)

// Pods runs execs and dials ports in pods; the pod reconciler
// implements it.
type Pods interface {
	Exec(ctx context.Context, namespace, pod, container string, args []string, stdio containerd.Stdio) (int, error)
	Attach(ctx context.Context, namespace, pod, container string, stdio containerd.Stdio) error
	DialPort(ctx context.Context, namespace, pod string, port uint16) (net.Conn, error)
}

// Config configures a Server.
type Config struct {
	// Pods runs the sessions. Nil answers every tunnel with an error.
	Pods Pods
	// Send queues one frame on the link without waiting (link.Link.Send):
	// Handle's answers, on the link's read loop.
	Send func(t wire.Type, seq uint64, body wire.Body) error
	// SendWait queues one frame, waiting out a full queue until its
	// context ends (link.Link.SendWait): the tunnels' own frames.
	SendWait func(ctx context.Context, t wire.Type, seq uint64, body wire.Body) error
	// MaxTunnels bounds concurrent tunnels; default DefaultMaxTunnels.
	MaxTunnels int
	Log        *slog.Logger
}

// DefaultMaxTunnels is the default bound on concurrent tunnels.
const DefaultMaxTunnels = 16

// sendWait bounds how long a tunnel's frame waits out a full link queue:
// the frame is then dropped and the tunnel ends. A stalled tunnel waits
// for the relay's credit, not here (wire/tunnel), so it holds up neither
// the link's heartbeats nor other tunnels.
const sendWait = 5 * time.Second

// Server serves tunnels. Handle is called from the link's Handler.
type Server struct {
	cfg Config
	log *slog.Logger
	wg  sync.WaitGroup

	mu  sync.Mutex
	cur *session // of the current connection
}

// session is one link connection's tunnels.
type session struct {
	mux    *tunnel.Mux
	send   tunnel.Send        // waits out a full queue, until cancel
	cancel context.CancelFunc // ends the waiting sends
}

// New returns a Server.
func New(cfg Config) *Server {
	if cfg.MaxTunnels <= 0 {
		cfg.MaxTunnels = DefaultMaxTunnels
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: cfg.Log}
	s.cur = s.newSession()
	return s
}

func (s *Server) newSession() *session {
	ctx, cancel := context.WithCancel(context.Background())
	send := func(t wire.Type, body wire.Body) error {
		ctx, stop := context.WithTimeout(ctx, sendWait)
		defer stop()
		return s.cfg.SendWait(ctx, t, 0, body)
	}
	return &session{mux: tunnel.New(send, s.cfg.MaxTunnels, wire.ChanStdin).ReplyWith(s.trySend), send: send, cancel: cancel}
}

// trySend sends once: Handle runs on the link's read loop, which must not
// wait for the send queue. A reply lost to a full queue is not retried;
// the relay's side of that tunnel ends with the request or the link.
func (s *Server) trySend(t wire.Type, body wire.Body) error {
	return s.cfg.Send(t, 0, body)
}

func (s *Server) current() *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// Disconnected ends every tunnel: tunnel IDs belong to one connection.
// Call it from the link's OnDisconnect.
func (s *Server) Disconnected() {
	s.mu.Lock()
	old := s.cur
	s.cur = s.newSession()
	s.mu.Unlock()
	old.cancel()
	old.mux.Shutdown(errors.New("the link to the relay was lost"))
}

// Wait waits for every tunnel goroutine to end.
func (s *Server) Wait() { s.wg.Wait() }

// Handle takes the tunnel frames and reports whether f was one.
func (s *Server) Handle(f wire.Frame) bool {
	cur := s.current()
	mux := cur.mux
	if f.Type != wire.TypeTunnelOpen {
		ok, err := mux.Handle(f)
		if err != nil {
			s.log.Warn("tunnel frame ignored", "type", f.Type, "err", err)
		}
		return ok
	}
	var o wire.TunnelOpen
	if err := f.DecodeBody(&o); err != nil {
		s.log.Warn("tunnel-open refused", "err", err)
		if o.ID != 0 {
			_ = s.trySend(wire.TypeTunnelClose, &wire.TunnelClose{ID: o.ID, Error: "refused: " + err.Error()})
		}
		return true
	}
	st, err := mux.Accept(&o)
	if err != nil {
		_ = s.trySend(wire.TypeTunnelClose, &wire.TunnelClose{ID: o.ID, Error: err.Error()})
		return true
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		// Say the tunnel is taken: the relay stops waiting for an answer.
		if err := cur.send(wire.TypeTunnelAck, &wire.TunnelAck{ID: o.ID}); err != nil {
			st.Close(&wire.TunnelClose{Error: "the link to the relay is congested; try again"})
			return
		}
		s.serve(st, &o)
	}()
	return true
}

func (s *Server) serve(st *tunnel.Stream, o *wire.TunnelOpen) {
	log := s.log.With("tunnel", o.ID, "pod", o.Namespace+"/"+o.Pod)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-st.Done(): // the relay cancelled, or the link was lost
			cancel()
		case <-ctx.Done():
		}
	}()
	if s.cfg.Pods == nil {
		st.Close(&wire.TunnelClose{Error: "this agent runs no pods"})
		return
	}
	switch o.Kind {
	case wire.TunnelExec:
		log.Debug("exec", "container", o.Container, "tty", o.TTY, "stdin", o.Stdin)
		code, err := s.exec(ctx, st, o)
		if err != nil {
			log.Info("exec failed", "container", o.Container, "err", err)
			st.Close(&wire.TunnelClose{Error: err.Error()})
			return
		}
		st.Close(&wire.TunnelClose{Exited: true, ExitCode: int32(code)})
	case wire.TunnelAttach:
		log.Debug("attach", "container", o.Container, "tty", o.TTY, "stdin", o.Stdin)
		if err := s.cfg.Pods.Attach(ctx, o.Namespace, o.Pod, o.Container, s.stdio(ctx, st, o)); err != nil && ctx.Err() == nil {
			log.Info("attach failed", "container", o.Container, "err", err)
			st.Close(&wire.TunnelClose{Error: err.Error()})
			return
		}
		st.Close(&wire.TunnelClose{})
	case wire.TunnelPortForward:
		err := s.portForward(ctx, st, o)
		if err != nil {
			log.Info("port-forward failed", "port", o.Port, "err", err)
			st.Close(&wire.TunnelClose{Error: err.Error()})
			return
		}
		st.Close(&wire.TunnelClose{})
	}
}

func (s *Server) exec(ctx context.Context, st *tunnel.Stream, o *wire.TunnelOpen) (int, error) {
	return s.cfg.Pods.Exec(ctx, o.Namespace, o.Pod, o.Container, o.Command, s.stdio(ctx, st, o))
}

// stdio is the tunnel's channels as a process's standard streams, with
// its terminal resizes.
func (s *Server) stdio(ctx context.Context, st *tunnel.Stream, o *wire.TunnelOpen) containerd.Stdio {
	stdio := containerd.Stdio{TTY: o.TTY}
	if o.Stdin {
		stdio.Stdin = st.Reader(wire.ChanStdin)
	}
	if o.Stdout {
		stdio.Stdout = st.Writer(wire.ChanStdout)
	}
	if o.Stderr {
		stdio.Stderr = st.Writer(wire.ChanStderr)
	}
	if o.TTY {
		sizes := make(chan [2]uint16, 1)
		stdio.Resize = sizes
		go func() {
			for {
				select {
				case r := <-st.Resize():
					select {
					case sizes <- [2]uint16{r.Width, r.Height}:
					case <-ctx.Done():
						return
					}
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	return stdio
}

func (s *Server) portForward(ctx context.Context, st *tunnel.Stream, o *wire.TunnelOpen) error {
	c, err := s.cfg.Pods.DialPort(ctx, o.Namespace, o.Pod, o.Port)
	if err != nil {
		return err
	}
	defer c.Close()
	go func() {
		<-ctx.Done() // the tunnel ended: unblock the copies
		c.Close()
	}()
	go func() {
		if _, err := io.Copy(c, st.Reader(wire.ChanStdin)); err == nil {
			if tc, ok := c.(interface{ CloseWrite() error }); ok {
				_ = tc.CloseWrite()
			}
		}
	}()
	if _, err := io.Copy(st.Writer(wire.ChanStdin), c); err != nil && ctx.Err() == nil {
		return fmt.Errorf("port %d: %w", o.Port, err)
	}
	return st.CloseWrite(wire.ChanStdin)
}
