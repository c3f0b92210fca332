package relay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"outpost.dev/wire"
	"outpost.dev/wire/tunnel"
)

// kubectl exec, attach and port-forward for edge nodes.
//
// The API server calls a kubelet's /exec, /attach and /portForward and
// speaks SPDY or WebSocket to it; the relay answers as a kubelet does,
// with the protocol negotiation of k8s.io/cri-streaming (the kubelet's
// own), and forwards each session over the agent's link as a tunnel
// (wire.TunnelOpen, see wire/tunnel). The same kubeletAuth guards these
// paths as /containerLogs: only the API server's client certificate gets
// through, and the API server has authorized the user for pods/exec,
// pods/attach or pods/portforward.

const (
	// DefaultMaxTunnelsPerNode bounds the concurrent exec, attach and
	// port-forward connections of one agent on a replica.
	DefaultMaxTunnelsPerNode = 16
	// tunnelIdleTimeout is the kubelet's default
	// streamingConnectionIdleTimeout.
	tunnelIdleTimeout = 4 * time.Hour
	// tunnelCreationTimeout bounds the wait for a SPDY client's streams.
	tunnelCreationTimeout = remotecommand.DefaultStreamCreationTimeout
	// tunnelFirstFrame bounds the wait for the agent to take a tunnel.
	tunnelFirstFrame = 30 * time.Second
)

// errLinkWrite is what a tunnel sees when the agent's link fails a write.
var errLinkWrite = errors.New("writing to the edge node's link failed")

func (s *Server) registerTunnels(mux *http.ServeMux) {
	for _, p := range []string{"/exec/{namespace}/{pod}/{container}", "/exec/{namespace}/{pod}/{uid}/{container}"} {
		mux.HandleFunc("GET "+p, s.serveExec)
		mux.HandleFunc("POST "+p, s.serveExec)
	}
	for _, p := range []string{"/attach/{namespace}/{pod}/{container}", "/attach/{namespace}/{pod}/{uid}/{container}"} {
		mux.HandleFunc("GET "+p, s.serveAttach)
		mux.HandleFunc("POST "+p, s.serveAttach)
	}
	for _, p := range []string{"/portForward/{namespace}/{pod}", "/portForward/{namespace}/{pod}/{uid}"} {
		mux.HandleFunc("GET "+p, s.servePortForward)
		mux.HandleFunc("POST "+p, s.servePortForward)
	}
}

// tunnelTarget checks the names of a request and finds the connection of
// the pod's node; it answers the request and returns nil when it cannot.
func (s *Server) tunnelTarget(w http.ResponseWriter, r *http.Request, kind uint8) (*conn, *wire.TunnelOpen) {
	o := &wire.TunnelOpen{ID: 1, Kind: kind, Namespace: r.PathValue("namespace"), Pod: r.PathValue("pod"), Container: r.PathValue("container")}
	switch kind {
	case wire.TunnelExec, wire.TunnelAttach:
		opts, err := remotecommand.NewOptions(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return nil, nil
		}
		o.Stdin, o.Stdout, o.Stderr, o.TTY = opts.Stdin, opts.Stdout, opts.Stderr, opts.TTY
		if kind == wire.TunnelExec {
			o.Command = r.URL.Query()["command"]
		}
	case wire.TunnelPortForward:
		o.Port = 1 // each forwarded connection names its own
	}
	if err := o.Validate(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return nil, nil
	}
	c := s.connOfPod(o.Namespace, o.Pod)
	if c == nil {
		http.Error(w, fmt.Sprintf("pod %s/%s: its edge node is offline (not connected to this relay replica, %s), or the pod does not exist, or the node just moved to another replica; check `kubectl get node` and try again once the node is Ready", o.Namespace, o.Pod, s.cfg.KubeletAddress), http.StatusInternalServerError)
		return nil, nil
	}
	return c, o
}

func (s *Server) serveExec(w http.ResponseWriter, r *http.Request) {
	c, o := s.tunnelTarget(w, r, wire.TunnelExec)
	if c == nil {
		return
	}
	opts := &remotecommand.Options{Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr, TTY: o.TTY}
	cw := watchClient(w)
	remotecommand.ServeExec(cw, r, &tunnelRunner{s: s, c: c, open: *o, gone: cw.gone}, o.Pod, r.PathValue("uid"), o.Container, o.Command, opts,
		tunnelIdleTimeout, tunnelCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

func (s *Server) serveAttach(w http.ResponseWriter, r *http.Request) {
	c, o := s.tunnelTarget(w, r, wire.TunnelAttach)
	if c == nil {
		return
	}
	opts := &remotecommand.Options{Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr, TTY: o.TTY}
	cw := watchClient(w)
	remotecommand.ServeAttach(cw, r, &tunnelRunner{s: s, c: c, open: *o, gone: cw.gone}, o.Pod, r.PathValue("uid"), o.Container, opts,
		tunnelIdleTimeout, tunnelCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

func (s *Server) servePortForward(w http.ResponseWriter, r *http.Request) {
	c, o := s.tunnelTarget(w, r, wire.TunnelPortForward)
	if c == nil {
		return
	}
	opts, err := portforward.NewV4Options(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cw := watchClient(w)
	portforward.ServePortForward(cw, r, &tunnelRunner{s: s, c: c, open: *o, gone: cw.gone}, o.Pod, r.PathValue("uid"), opts,
		tunnelIdleTimeout, tunnelCreationTimeout, portforward.SupportedProtocols)
}

// tunnelRunner implements the kubelet's Executor, Attacher and
// PortForwarder by tunnelling to the agent.
type tunnelRunner struct {
	s    *Server
	c    *conn
	open wire.TunnelOpen
	// gone is closed when the client's connection closed.
	gone <-chan struct{}
}

// errClientGone ends a session whose client's connection closed.
var errClientGone = errors.New("the client went away")

// clientWatch tells a session that its client's connection closed: once
// the protocol handlers took the connection over, the request's context
// no longer ends with it, and an exec that neither reads nor writes
// would otherwise never notice.
type clientWatch struct {
	http.ResponseWriter
	gone chan struct{}
	once sync.Once
}

func watchClient(w http.ResponseWriter) *clientWatch {
	return &clientWatch{ResponseWriter: w, gone: make(chan struct{})}
}

// Hijack hands over the connection, with reads watched for its end.
func (w *clientWatch) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("this connection cannot be upgraded")
	}
	c, rw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	pre, _ := rw.Reader.Peek(rw.Reader.Buffered()) // read before the upgrade
	wc := &watchedConn{Conn: c, pre: append([]byte(nil), pre...), end: func() { w.once.Do(func() { close(w.gone) }) }}
	return wc, bufio.NewReadWriter(bufio.NewReader(wc), rw.Writer), nil
}

type watchedConn struct {
	net.Conn
	pre []byte
	end func()
}

func (c *watchedConn) Read(b []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(b, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	n, err := c.Conn.Read(b)
	if err != nil {
		c.end()
	}
	return n, err
}

func (t *tunnelRunner) ExecInContainer(ctx context.Context, _, _, _ string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, _ time.Duration) error {
	o := t.open
	o.Command = cmd
	return t.run(ctx, &o, in, out, errw, resize)
}

func (t *tunnelRunner) AttachContainer(ctx context.Context, _, _, _ string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	o := t.open
	return t.run(ctx, &o, in, out, errw, resize)
}

// start opens the tunnel and waits until the agent took it.
func (t *tunnelRunner) start(ctx context.Context, o *wire.TunnelOpen) (*tunnel.Stream, error) {
	node := t.c.node
	st, err := t.c.tunnels.Open(o)
	if err != nil {
		return nil, fmt.Errorf("edge node %q: %w", node, err)
	}
	t.s.metrics.tunnels.Inc()
	first := time.NewTimer(tunnelFirstFrame)
	defer first.Stop()
	select {
	case <-st.Heard():
		return st, nil
	case <-t.gone:
		st.Close(&wire.TunnelClose{Error: errClientGone.Error()})
		t.s.metrics.tunnels.Dec()
		return nil, errClientGone
	case <-first.C:
		st.Close(&wire.TunnelClose{Error: "the relay gave up waiting"})
		t.s.metrics.tunnels.Dec()
		return nil, fmt.Errorf("edge node %q did not answer within %s: is its agent older than exec support, or its link stalled?", node, tunnelFirstFrame)
	case <-ctx.Done():
		st.Close(&wire.TunnelClose{Error: "the client went away"})
		t.s.metrics.tunnels.Dec()
		return nil, ctx.Err()
	}
}

func (t *tunnelRunner) run(ctx context.Context, o *wire.TunnelOpen, in io.Reader, out, errw io.WriteCloser, resize <-chan remotecommand.TerminalSize) error {
	o.Stdin, o.Stdout, o.Stderr = in != nil, out != nil, errw != nil
	st, err := t.start(ctx, o)
	if err != nil {
		return err
	}
	defer t.s.metrics.tunnels.Dec()
	defer st.Close(&wire.TunnelClose{Error: "the client went away"})
	log := t.s.log.With("node", t.c.node, "pod", o.Namespace+"/"+o.Pod, "container", o.Container, "tunnel", st.ID)
	log.Debug("tunnel opened", "kind", o.Kind, "tty", o.TTY, "stdin", o.Stdin)
	if in != nil {
		go func() {
			if _, err := io.Copy(st.Writer(wire.ChanStdin), in); err == nil {
				_ = st.CloseWrite(wire.ChanStdin)
			} else {
				st.Close(&wire.TunnelClose{Error: "the client went away"})
			}
		}()
	}
	if resize != nil {
		go func() {
			for {
				select {
				case sz, ok := <-resize:
					if !ok {
						return
					}
					_ = st.SendResize(sz.Width, sz.Height)
				case <-st.Done():
					return
				}
			}
		}()
	}
	var wg sync.WaitGroup
	for _, p := range []struct {
		ch uint8
		w  io.Writer
	}{{wire.ChanStdout, out}, {wire.ChanStderr, errw}} {
		if p.w == nil {
			continue
		}
		wg.Go(func() {
			if _, err := io.Copy(p.w, st.Reader(p.ch)); err != nil {
				// The client went away (the hijacked connection cancels
				// no context): the agent kills the process.
				st.Close(&wire.TunnelClose{Error: "the client went away"})
			}
		})
	}
	copied := make(chan struct{})
	go func() { wg.Wait(); close(copied) }()
	select {
	case <-copied:
	case <-t.gone:
		return errClientGone // the deferred close kills the process
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-st.Done(): // the agent's close follows its output
	case <-t.gone:
		return errClientGone
	case <-ctx.Done():
		return ctx.Err()
	}
	peer, err := st.Result()
	switch {
	case peer != nil && peer.Exited && peer.ExitCode != 0:
		return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", peer.ExitCode), Code: int(peer.ExitCode)}
	case peer != nil && peer.Error != "":
		return fmt.Errorf("edge node %q: %s", t.c.node, peer.Error)
	case err != nil:
		return fmt.Errorf("edge node %q: %w", t.c.node, err)
	}
	return nil
}

func (t *tunnelRunner) PortForward(ctx context.Context, _, _ string, port int32, stream io.ReadWriteCloser) error {
	if port <= 0 || port > 65535 {
		return fmt.Errorf("port %d: not a port", port)
	}
	o := t.open
	o.Port = uint16(port)
	st, err := t.start(ctx, &o)
	if err != nil {
		return err
	}
	defer t.s.metrics.tunnels.Dec()
	defer st.Close(&wire.TunnelClose{Error: "the client closed the connection"})
	go func() {
		if _, err := io.Copy(st.Writer(wire.ChanStdin), stream); err == nil {
			_ = st.CloseWrite(wire.ChanStdin) // the client's half-close
		} else {
			st.Close(&wire.TunnelClose{Error: "the client connection failed"})
		}
	}()
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(stream, st.Reader(wire.ChanStdin))
		copied <- err
	}()
	select {
	case err = <-copied:
	case <-t.gone:
		return errClientGone
	case <-ctx.Done():
		return ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("port %s of pod %s/%s on edge node %q: %w", strconv.Itoa(int(port)), o.Namespace, o.Pod, t.c.node, err)
	}
	return nil
}
