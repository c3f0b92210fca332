package relay

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	corev1 "k8s.io/api/core/v1"

	"outpost.dev/cloud/identity"
	"outpost.dev/cloud/linkpoll"
	"outpost.dev/cloud/nodes"
	"outpost.dev/cloud/pki"
	"outpost.dev/cloud/pods"
	"outpost.dev/cloud/podstatus"
	"outpost.dev/cloud/upgrade"
	"outpost.dev/wire"
	"outpost.dev/wire/tunnel"
)

// WebSocket close codes the relay uses beyond the standard ones (RFC
// 6455 numbers; untyped, so a client's library compares them as its own).
const (
	// CloseReplaced closes a connection when the same node connected again.
	CloseReplaced = 4001
	// CloseForbidden closes a connection whose node the relay will not
	// write (a Node of that name that is not an edge node).
	CloseForbidden = 4003
)

// Standard close codes, as the relay sends them.
const (
	closeNormal        = 1000
	closeGoingAway     = 1001
	closeUnsupported   = 1003
	closeInvalidData   = 1007
	closePolicy        = 1008
	closeTooBig        = 1009
	closeInternalError = 1011
)

// writeTimeout bounds how long the pod sync waits for the agent to take
// its queued frames before it writes more (writeSync); an agent that
// takes nothing for that long is dead.
const writeTimeout = 10 * time.Second

// closeGrace bounds a close handshake: the connection is closed this long
// after its close frame went out if the agent did not answer
// (linkpoll.Config.CloseGrace).
const closeGrace = 2 * time.Second

// maxQueued bounds the bytes waiting to be written to one agent
// (linkpoll.Config.MaxQueued): past it the agent is taken for dead and
// closed. Every writer keeps its own bound under it: the pod sync waits
// for the queue to fall to syncQueued before each frame (writeSync),
// tunnels and log streams have their windows, upgrade chunks go one per
// request, the rest are small.
const (
	maxQueued  = 16 << 20
	syncQueued = wire.MaxFrameSize
)

// Connection states, in order.
const (
	stateHello     int32 = iota // waiting for the hello (HelloTimeout)
	stateSetup                  // the hello's work runs; reading paused
	stateConnected              // frames served
	stateExpired                // the certificate expired: only a cert-request is answered (serveExpired)
)

// conn is one agent connection, served by the relay's linkpoll.Poller:
// Message runs on a poller loop for each frame and never blocks; work
// that waits (the hello's API calls, a report whose queue is full) runs on a
// goroutine of its own while the connection's reading is paused
// (offload), so TCP flow control holds the agent back and a connection
// costs a goroutine only while it has such work.
type conn struct {
	s      *Server
	lc     *linkpoll.Conn
	node   string
	serial string // of the node's certificate, as identity.Serial records it
	// expired says the certificate expired within wire.CertGrace: the
	// connection may only rotate it (serveExpired).
	expired bool
	// release gives back the connection's handshake token
	// (Config.MaxHandshakes); called once the hello is answered, or when
	// the connection ends before that.
	release func()
	rot     rotation
	// remote is the agent's address; log adds it and node to what is
	// logged of the connection (connLog).
	remote string
	log    *slog.Logger
	// lastSeen is the unix nanoseconds of the last frame read.
	lastSeen atomic.Int64
	// state is one of the state constants; the loop and the setup
	// goroutine move it forward.
	state atomic.Int32
	// helloTimer closes a connection that sent no hello in time.
	helloTimer *time.Timer
	// acked is set once the hello-ack went out; podCIDRs are the pod
	// CIDRs the agent was last told (hello-ack or node-config).
	acked    atomic.Bool
	podCIDRs atomic.Pointer[[]string]
	once     sync.Once
	// acks turns the writers' "durable" into cumulative acks; every
	// durable report type goes through it (see acks).
	acks *acks
	// streams are the log streams open on this connection; streamsDone
	// is closed when the connection ends.
	streams     streamSet
	streamsDone chan struct{}
	// tunnels are the exec, attach and port-forward sessions.
	tunnels *tunnel.Mux
	// pods is the pod sync, once started: the kubelet API finds a pod's
	// node among the connections' pod watches.
	pods atomic.Pointer[pods.Session]
	// sess is the node session, once started: the edge-Node informer
	// tells it of a Node marked Unknown (nodeMarkedUnknown).
	sess atomic.Pointer[nodes.Session]
	// stats are the stats requests waiting for the agent (resource.go).
	stats statsWaiters
	// kubelet is the node's own kubelet API server, if any (serveKubelet).
	kubelet *http.Server

	// Set by setup before the connected state, read by the loop after.
	version     uint16
	hello       wire.Hello
	kport       int32
	pstatus     *podstatus.Session
	twinReports *twins
	up          *upgrade.Session

	// mu guards stops and ended: what the connection's end undoes, in
	// reverse order (onEnd).
	mu    sync.Mutex
	stops []func()
	ended bool
	// closed is closed once the connection's socket is (Closed).
	closed chan struct{}
}

// nodeFromTLS returns the node name and certificate serial (as
// identity.Serial records it) of a request's verified client certificate,
// whether it expired within the grace (verifyNode), or an HTTP status and
// reason to refuse it with. The name comes from the certificate only,
// never from a message.
func (s *Server) nodeFromTLS(r *http.Request) (string, string, bool, int, string) {
	if r.TLS == nil {
		return "", "", false, http.StatusBadRequest, "connect over TLS with a node certificate"
	}
	if r.TLS.Version != tls.VersionTLS13 {
		// The poller runs the TLS 1.3 record layer of an adopted link
		// itself (cloud/linkpoll); agents always negotiate 1.3.
		return "", "", false, http.StatusBadRequest, "agent links need TLS 1.3; this connection negotiated " + tls.VersionName(r.TLS.Version)
	}
	chain, expired, err := s.verifyNode(r.TLS.PeerCertificates, time.Now())
	if err != nil {
		return "", "", false, http.StatusUnauthorized, "client certificate refused: " + err.Error()
	}
	if len(chain) == 0 {
		return "", "", false, http.StatusUnauthorized, "a node client certificate signed by the relay CA is required: join first"
	}
	cert := chain[0]
	if !slices.Contains(cert.Subject.Organization, pki.NodesGroup) {
		return "", "", false, http.StatusForbidden, "client certificate is not a node certificate (organization " + pki.NodesGroup + " missing)"
	}
	if err := nodes.CheckName(cert.Subject.CommonName); err != nil {
		return "", "", false, http.StatusForbidden, "client certificate: " + err.Error()
	}
	return cert.Subject.CommonName, identity.Serial(cert), expired, 0, ""
}

// serveConnect checks an agent's connection request, answers its
// WebSocket upgrade and hands the connection to the poller; its goroutine
// (net/http's) then ends.
func (s *Server) serveConnect(w http.ResponseWriter, r *http.Request) {
	// Admission: a fleet reconnecting at once (after a relay restart)
	// is spread out rather than let into the API server all together.
	// Connected agents hold no token.
	select {
	case s.handshakes <- struct{}{}:
	default:
		s.metrics.handshakesRefused.Inc()
		w.Header().Set("Retry-After", strconv.Itoa(int(s.cfg.HandshakeRetryAfter/time.Second)))
		http.Error(w, "relay busy with other agents' handshakes; retry after the Retry-After seconds", http.StatusServiceUnavailable)
		return
	}
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { <-s.handshakes }) }
	adopted := false
	defer func() {
		if !adopted {
			release()
		}
	}()
	name, serial, expired, status, reason := s.nodeFromTLS(r)
	if status == 0 {
		status, reason = s.checkIdentity(r.Context(), name, serial, !expired)
	}
	if status != 0 {
		s.log.Warn("connect refused", "remote", r.RemoteAddr, "node", name, "status", status, "reason", reason)
		http.Error(w, reason, status)
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		http.Error(w, "relay shutting down; reconnect", http.StatusServiceUnavailable)
		return
	}
	s.wg.Add(1) // until the connection's end is undone (conn.end)
	s.mu.Unlock()

	nc, rw, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		s.wg.Done()
		s.log.Warn("websocket upgrade failed", "node", name, "remote", r.RemoteAddr, "err", err) // UpgradeHTTP answered the request
		return
	}
	tc, ok := nc.(*tls.Conn)
	if !ok || rw.Reader.Buffered() > 0 {
		// The agent sends nothing before the 101: bytes read past the
		// request would be lost to the poller.
		s.wg.Done()
		nc.Close()
		s.log.Warn("websocket connection refused: data sent before the upgrade was answered", "node", name, "remote", r.RemoteAddr)
		return
	}
	c := &conn{s: s, node: name, serial: serial, expired: expired, remote: r.RemoteAddr, release: release,
		streams: streamSet{max: s.cfg.MaxStreamsPerNode}, streamsDone: make(chan struct{}), closed: make(chan struct{})}
	c.log = c.logger()
	c.acks = newAcks(c.sendAck)
	c.tunnels = tunnel.New(func(t wire.Type, body wire.Body) error {
		if !c.send(t, body) {
			return errLinkWrite
		}
		return nil
	}, s.cfg.MaxTunnelsPerNode, wire.ChanStdin, wire.ChanStdout, wire.ChanStderr)
	c.lastSeen.Store(time.Now().UnixNano())
	if _, err := s.poller.Adopt(tc, func(lc *linkpoll.Conn) linkpoll.Handler {
		c.lc = lc
		c.helloTimer = time.AfterFunc(s.cfg.HelloTimeout, c.helloTimeout)
		return c
	}); err != nil {
		if c.helloTimer != nil {
			c.helloTimer.Stop()
		}
		s.wg.Done()
		c.log.Error("connection not adopted by the poller", "err", err)
		return
	}
	adopted = true
}

// helloTimeout closes a connection that sent no hello in time.
func (c *conn) helloTimeout() {
	if c.state.Load() == stateHello {
		c.log.Warn("agent silent; closing", "waited_for", "hello", "timeout", c.s.cfg.HelloTimeout)
		c.close(closePolicy, "no hello within "+c.s.cfg.HelloTimeout.String())
	}
}

// Message handles one frame, on the poller loop. Nothing an agent sends
// can take the relay down: protocol errors close this connection only,
// and a panic (a relay bug) closes it with 1011 (linkpoll recovers it;
// Closed counts and logs it).
func (c *conn) Message(_ *linkpoll.Conn, msg []byte) {
	c.lastSeen.Store(time.Now().UnixNano())
	msg = bytes.Clone(msg) // decoded parts may outlive the call (offload)
	f, err := wire.Decode(msg)
	if err != nil {
		c.s.metrics.frame("in", 0, len(msg))
		c.fatalDecode(err)
		return
	}
	c.s.metrics.frame("in", f.Type, len(msg))
	switch c.state.Load() {
	case stateHello:
		c.helloFrame(f)
	case stateExpired:
		c.expiredFrame(f)
	case stateConnected:
		c.frame(f)
	default: // stateSetup: reading is paused until it ends
		c.log.Error("frame read while the hello was being set up", "type", f.Type)
	}
}

// Refused answers a message refused at the WebSocket layer with an error
// frame, before linkpoll's close frame.
func (c *conn) Refused(_ *linkpoll.Conn, err error) {
	code := wire.CodeProtocol
	switch {
	case errors.Is(err, linkpoll.ErrTooLarge):
		code = wire.CodeTooLarge
	case errors.Is(err, linkpoll.ErrText):
		code = wire.CodeMalformed
		err = errors.New("text message refused: frames are binary CBOR messages")
	}
	c.log.Warn("closing connection: bad frame from agent", "code", codeLabel(code), "reason", err)
	c.sendError(code, err.Error(), true)
}

// Closed is told by the poller that the connection ended; undoing what
// it started may wait (stopping sessions), so it runs on a goroutine of
// its own.
func (c *conn) Closed(_ *linkpoll.Conn, err error) {
	switch {
	case errors.Is(err, linkpoll.ErrPanic):
		c.s.metrics.panics.Inc()
		c.log.Error("connection handler panicked; closed this connection", "panic", err)
	case errors.Is(err, linkpoll.ErrSilent):
		c.log.Warn("agent silent; closing", "waited_for", "frame", "timeout", 3*c.s.cfg.HeartbeatInterval)
	case errors.Is(err, linkpoll.ErrSlowPeer):
		c.log.Warn("agent not reading; closed", "queued_limit", maxQueued)
	case errors.Is(err, linkpoll.ErrTooLarge):
		c.log.Warn("frame too large; closed", "err", err)
	case errors.Is(err, linkpoll.ErrClosed):
		// Closed by the relay, which said why.
	case errors.Is(err, io.EOF):
		c.log.Info("agent disconnected")
	default:
		c.log.Info("connection ended", "err", err)
	}
	close(c.closed)
	go c.end()
}

// onEnd has f run when the connection ends (in reverse order of the
// calls), or now if it ended already; false then.
func (c *conn) onEnd(f func()) bool {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		f()
		return false
	}
	c.stops = append(c.stops, f)
	c.mu.Unlock()
	return true
}

// end undoes what the connection started, as serve's defers did.
func (c *conn) end() {
	defer c.s.wg.Done()
	defer c.recoverPanic()
	c.mu.Lock()
	c.ended = true
	stops := c.stops
	c.stops = nil
	c.mu.Unlock()
	c.helloTimer.Stop()
	for _, f := range slices.Backward(stops) {
		f()
	}
	c.tunnels.Shutdown(fmt.Errorf("edge node %q disconnected", c.node))
	close(c.streamsDone)
	c.release()
}

// offload runs work, which may wait, on a goroutine of its own with the
// connection's reading paused: the frames after this one wait in the
// kernel and then in the agent (TCP flow control) until work returned
// true; false leaves reading paused (work closed the connection).
func (c *conn) offload(work func() bool) {
	c.lc.PauseReading()
	c.spawn(func() {
		if work() {
			c.lc.ResumeReading()
		}
	})
}

// waitReport hands a durable report of type t whose queue is full to
// offload: it waits there, and with reading paused no later frame of the
// connection is handled before it, so reports stay in order whether they
// were queued on the loop or waited.
func (c *conn) waitReport(t wire.Type, work func() bool) {
	c.s.metrics.reportsWaited.WithLabelValues(typeLabel(t)).Inc()
	c.offload(work)
}

// spawn runs f on a goroutine of its own, counted in s.wg, unless the
// connection ended (its count may be gone: Server.Close may be waiting).
// A panic in f (a relay bug) closes this connection only, as one on the
// poller's loop does.
func (c *conn) spawn(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return
	}
	c.s.wg.Go(func() { // the connection's own count is still held: not zero
		defer c.recoverPanic()
		f()
	})
}

// recoverPanic, deferred, recovers a panic of the connection's work off
// the loop: counted, logged, and the connection closed with 1011.
func (c *conn) recoverPanic() {
	if r := recover(); r != nil {
		c.s.metrics.panics.Inc()
		c.log.Error("connection handler panicked; closing this connection", "panic", r, "stack", string(debug.Stack()))
		c.close(closeInternalError, "relay internal error")
	}
}

// helloFrame handles the first frame: a hello, checked here; its work
// that waits on the API server runs in setup.
func (c *conn) helloFrame(f wire.Frame) {
	c.helloTimer.Stop()
	if f.Type != wire.TypeHello {
		c.fatal(wire.CodeProtocol, fmt.Sprintf("first frame must be hello, got %s", f.Type), closePolicy)
		return
	}
	var h wire.Hello
	if err := f.DecodeBody(&h); err != nil {
		c.fatalDecode(err)
		return
	}
	if err := nodes.CheckInfo(&h.Node); err != nil {
		c.fatal(wire.CodeInvalid, "hello: "+err.Error(), closePolicy)
		return
	}
	version, ok := wire.Negotiate(h.MinVersion, h.MaxVersion)
	if !ok {
		c.fatal(wire.CodeVersion, fmt.Sprintf("no common protocol version: agent speaks %d-%d, relay %d-%d; upgrade the older side",
			h.MinVersion, h.MaxVersion, wire.ProtocolMin, wire.ProtocolMax), closePolicy)
		return
	}
	c.version, c.hello = version, h
	if c.expired {
		c.release()
		c.serveExpired(version)
		return
	}
	c.state.Store(stateSetup)
	c.offload(c.setup)
}

// setup registers the connection and starts the node's sessions, off the
// loop with reading paused; true once the connection is served.
func (c *conn) setup() bool {
	s, h := c.s, &c.hello
	old, ok := s.register(c)
	if !ok {
		c.close(closeGoingAway, "relay shutting down")
		return false
	}
	if !c.onEnd(func() { s.unregister(c) }) {
		return false
	}
	if old != nil {
		c.log.Info("node connected again; closing its previous connection")
		old.close(CloseReplaced, "replaced by a newer connection of the same node")
	}

	// Everything written and read for this node from here on is the
	// node's own doing, as far as the API server can tell.
	as, err := s.cfg.AsNode.For(c.node)
	if err != nil {
		c.log.Error("no API client acting as the node", "err", err)
		c.sendError(wire.CodeInternal, "relay cannot act as this node: "+err.Error(), true)
		c.close(closeInternalError, "relay cannot act as this node")
		return false
	}
	hb := s.cfg.HeartbeatInterval
	silent := 3 * hb
	c.kport = c.serveKubelet()
	if !c.onEnd(c.stopKubelet) {
		return false
	}
	sess := s.nodes.Start(s.ctx, nodes.SessionConfig{
		Name:    c.node,
		Client:  as,
		OnAck:   func(seq uint64) { c.acks.doneUpTo(wire.TypeNodeStatus, seq) },
		OnFatal: c.onWriteFatal,
		Alive:   func() bool { return time.Since(time.Unix(0, c.lastSeen.Load())) < silent },
		Create:  s.createHooks(c.node, c.serial),
		Log:     c.log,
	})
	c.sess.Store(sess)
	if !c.onEnd(sess.Stop) {
		return false
	}

	// The hello-ack goes first: anything the node session says (a refusal
	// to write the Node) must come after it on the wire.
	podCIDRs := s.podCIDRs(c.node)
	c.podCIDRs.Store(&podCIDRs)
	if !c.send(wire.TypeHelloAck, &wire.HelloAck{
		Version:          c.version,
		NodeName:         c.node,
		HeartbeatSeconds: uint32(hb / time.Second),
		RelayVersion:     s.cfg.Version,
		PodCIDRs:         podCIDRs,
	}) {
		return false
	}
	c.release()
	// A change the Node informer saw before this point was not sent.
	c.acked.Store(true)
	s.podCIDRsChanged(c.node, s.podCIDRs(c.node))
	sess.Report(0, nodes.Report{AgentVersion: h.AgentVersion, Info: h.Node, KubeletPort: c.kport})
	c.log.Info("agent connected", "agent_version", h.AgentVersion, "protocol", c.version, "board", h.Node.Board, "arch", h.Node.Arch)

	// Downstream: the pods bound to this node, from the versions the agent
	// holds. The sync's own goroutines write the frames (writeSync). The
	// node's Devices travel in the same sync; twin reports about them are
	// written back as their status.
	twinReports, nodeDevices, stopDevices := c.startDevices(h.Objects)
	c.twinReports = twinReports
	if !c.onEnd(stopDevices) {
		return false
	}
	psync := pods.Start(s.ctx, pods.Config{
		Client: as,
		Node:   c.node,
		Held:   h.Objects,
		Send:   c.writeSync,
		Log:    c.log,
		Extra:  nodeDevices,
		Nodes:  s.joinCache,

		TokenRefreshAfter: s.cfg.TokenRefreshAfter,
	})
	if !c.onEnd(psync.Stop) {
		return false
	}
	c.pods.Store(psync)
	// The sessions keep the held objects in their own form; reading is
	// paused, so the loop does not read the hello meanwhile.
	c.hello.Objects = nil
	psync.NodeChanged() // the Node may have come between its first look and the Store
	c.pstatus = s.podStatus.Start(s.ctx, podstatus.SessionConfig{Node: c.node, Client: as, Done: c.acks.done, Log: c.log})
	if !c.onEnd(c.pstatus.Stop) {
		return false
	}
	// Agent upgrades in flight for this node are offered (again) now.
	if s.upgrades != nil {
		c.up = s.upgrades.Connect(c.node, h.Node.Arch, h.AgentVersion, h.Upgrades, upgradeAgent{c})
		if !c.onEnd(c.up.Close) {
			return false
		}
	}
	c.state.Store(stateConnected)
	return true
}

// frame handles a frame of a connected agent, on the loop.
func (c *conn) frame(f wire.Frame) {
	switch f.Type {
	case wire.TypeHeartbeat:
		if err := f.DecodeBody(&wire.Heartbeat{}); err != nil {
			c.fatalDecode(err)
			return
		}
		c.send(wire.TypeHeartbeat, nil)
	case wire.TypeNodeStatus:
		var st wire.NodeStatus
		if err := f.DecodeBody(&st); err != nil {
			c.fatalDecode(err)
			return
		}
		if f.Seq == 0 {
			c.fatal(wire.CodeInvalid, "node-status without a seq: durable reports are numbered from 1", closePolicy)
			return
		}
		if err := nodes.CheckInfo(&st.Node); err != nil {
			c.fatal(wire.CodeInvalid, "node-status: "+err.Error(), closePolicy)
			return
		}
		// Acked by the session once the API write succeeded; Report
		// never waits (the session keeps the latest).
		c.acks.received(f.Type, f.Seq)
		c.sess.Load().Report(f.Seq, nodes.Report{AgentVersion: c.hello.AgentVersion, Info: st.Node, Conditions: st.Conditions, Link: st.Link, KubeletPort: c.kport})
	case wire.TypePodStatus:
		st := new(wire.PodStatus)
		if err := f.DecodeBody(st); err != nil {
			c.fatalDecode(err)
			return
		}
		if f.Seq == 0 {
			c.fatal(wire.CodeInvalid, "pod-status without a seq: durable reports are numbered from 1", closePolicy)
			return
		}
		// Acked once written, or dropped for good (another node's
		// pod, a stale UID). Queued on the loop; only a full queue
		// waits, off the loop with reading paused (waitReport).
		c.acks.received(f.Type, f.Seq)
		if c.pstatus.TryReport(f.Seq, st) {
			return
		}
		seq := f.Seq
		c.waitReport(f.Type, func() bool {
			if !c.pstatus.Report(seq, st) {
				c.close(closeGoingAway, "relay shutting down")
				return false
			}
			return true
		})
	case wire.TypeTwinReport:
		r := new(wire.TwinReport)
		if err := f.DecodeBody(r); err != nil {
			c.fatalDecode(err)
			return
		}
		if f.Seq == 0 {
			c.fatal(wire.CodeInvalid, "twin-report without a seq: durable reports are numbered from 1", closePolicy)
			return
		}
		// Acked once the Device status is written, or dropped for good
		// (no such Device on this node). Handled on the loop; only what
		// waits (the Device watch's first list, a full queue) goes off
		// it, reading paused.
		c.acks.received(f.Type, f.Seq)
		if rest := c.twinReports.report(f.Seq, r); rest != nil {
			c.waitReport(f.Type, func() bool { rest(); return true })
		}
	case wire.TypeUpgradeReport:
		r := new(wire.UpgradeReport)
		if err := f.DecodeBody(r); err != nil {
			c.fatalDecode(err)
			return
		}
		if f.Seq == 0 {
			c.fatal(wire.CodeInvalid, "upgrade-report without a seq: durable reports are numbered from 1", closePolicy)
			return
		}
		// Acked once in the AgentUpgrade's status, or dropped for good.
		// Queued on the loop; only a full controller queue waits, off
		// the loop with reading paused.
		c.acks.received(f.Type, f.Seq)
		seq := f.Seq
		if c.up == nil {
			c.acks.done(seq)
			return
		}
		done := func() { c.acks.done(seq) }
		if c.up.TryReport(r, done) {
			return
		}
		c.waitReport(f.Type, func() bool { c.up.Report(r, done); return true })
	case wire.TypeUpgradeChunkRequest:
		// A bad request fails the download (the agent asks again on
		// the next offer), not the link.
		var r wire.UpgradeChunkRequest
		if err := f.DecodeBody(&r); err != nil {
			c.sendError(wire.CodeInvalid, err.Error(), false)
			return
		}
		if c.up == nil {
			c.sendError(wire.CodeProtocol, "this relay offers no agent upgrades", false)
			return
		}
		if err := c.up.ChunkRequest(&r); err != nil {
			c.sendError(wire.CodeProtocol, err.Error(), false)
		}
	case wire.TypeStreamData:
		var d wire.StreamData
		if err := f.DecodeBody(&d); err != nil {
			c.fatalDecode(err)
			return
		}
		c.streams.deliver(d)
	case wire.TypeTunnelData, wire.TypeTunnelAck, wire.TypeTunnelClose:
		// A bad tunnel frame ends its tunnel only (see wire/tunnel).
		if _, err := c.tunnels.Handle(f); err != nil {
			c.sendError(wire.CodeInvalid, err.Error(), false)
		}
	case wire.TypeStatsResponse:
		var r wire.StatsResponse
		if err := f.DecodeBody(&r); err != nil {
			// A bad answer fails its scrape (by timeout), not the link.
			c.sendError(wire.CodeInvalid, err.Error(), false)
			return
		}
		c.stats.deliver(&r)
	case wire.TypeTunnelOpen, wire.TypeTunnelResize, wire.TypeStatsRequest, wire.TypeUpgradeOffer, wire.TypeUpgradeChunk:
		c.sendError(wire.CodeProtocol, fmt.Sprintf("%s is sent by the relay, not by agents; ignored", f.Type), false)
	case wire.TypeCertRequest:
		c.certRequest(f, false)
	case wire.TypeError:
		var e wire.Error
		if err := f.DecodeBody(&e); err != nil {
			c.fatalDecode(err)
			return
		}
		c.s.metrics.errors.WithLabelValues("in", codeLabel(e.Code)).Inc()
		c.log.Warn("agent reported an error", "code", e.Code, "reason", e.Reason, "fatal", e.Fatal)
		if e.Fatal {
			c.close(closeNormal, "agent reported a fatal error")
		}
	case wire.TypeHello:
		c.fatal(wire.CodeProtocol, "hello after hello: a connection has one hello", closePolicy)
	case wire.TypeHelloAck, wire.TypeAck, wire.TypeCertIssued:
		c.fatal(wire.CodeProtocol, fmt.Sprintf("%s is sent by the relay, not by agents", f.Type), closePolicy)
	default:
		// A newer agent may send types this relay does not know yet;
		// say so and carry on.
		c.sendError(wire.CodeUnknownType, fmt.Sprintf("frame %s is unknown to this relay (protocol %d); ignored", f.Type, c.version), false)
	}
}

// fatalDecode answers a frame that did not decode or validate.
func (c *conn) fatalDecode(err error) {
	switch {
	case errors.Is(err, wire.ErrTooLarge):
		c.fatal(wire.CodeTooLarge, err.Error(), closeTooBig)
	case errors.Is(err, wire.ErrInvalid):
		c.fatal(wire.CodeInvalid, err.Error(), closeInvalidData)
	default:
		c.fatal(wire.CodeMalformed, err.Error(), closeInvalidData)
	}
}

// fatal tells the agent why, logs it, and closes this connection.
func (c *conn) fatal(code wire.ErrorCode, reason string, status int) {
	c.log.Warn("closing connection: bad frame from agent", "code", codeLabel(code), "reason", reason)
	c.sendError(code, reason, true)
	c.close(status, reason)
}

func (c *conn) sendError(code wire.ErrorCode, reason string, fatal bool) bool {
	c.s.metrics.errors.WithLabelValues("out", codeLabel(code)).Inc()
	return c.send(wire.TypeError, &wire.Error{Code: code, Reason: truncate(reason, 1024), Fatal: fatal})
}

// onWriteFatal is called by the node session, on a shared API worker,
// when the Node can never be written for this connection. Writes never
// wait, so the worker does not wait on this connection.
func (c *conn) onWriteFatal(err error) {
	c.sendError(wire.CodeForbidden, err.Error(), true)
	c.close(CloseForbidden, "node cannot be written")
}

// sendAck sends the cumulative ack seq. Writers do not call it: they
// report to c.acks (received when a durable frame arrives, done when it is
// written), which acks only up to below the oldest report still pending,
// whatever its type.
func (c *conn) sendAck(seq uint64) {
	b, err := wire.EncodeFrame(wire.Frame{Type: wire.TypeAck, Ack: seq})
	if err != nil {
		c.log.Error("encode ack", "err", err)
		return
	}
	c.write(wire.TypeAck, b)
}

func (c *conn) send(t wire.Type, body wire.Body) bool {
	b, err := wire.Encode(t, 0, body)
	if err != nil {
		c.log.Error("encode frame", "type", t, "err", err)
		return false
	}
	return c.write(t, b)
}

// write sends one frame. It never waits: what the socket does not take
// waits in the connection's queue, and an agent that lets more than
// maxQueued bytes wait is closed as dead. Safe from any goroutine.
func (c *conn) write(t wire.Type, b []byte) bool {
	if err := c.lc.WriteMessage(b); err != nil {
		return false
	}
	c.s.metrics.frame("out", t, len(b))
	return true
}

// writeSync sends one pod sync frame, on the sync's goroutine, once at
// most syncQueued bytes wait before it: a sync's burst of large frames
// waits for the agent instead of filling the queue. An agent that takes
// nothing for writeTimeout is dead.
func (c *conn) writeSync(b []byte) bool {
	if err := c.lc.WaitQueued(syncQueued, writeTimeout); err != nil {
		if errors.Is(err, linkpoll.ErrSlowPeer) {
			c.log.Warn("agent not reading; closing", "waited", writeTimeout)
			c.close(closeGoingAway, "agent not reading")
		}
		return false
	}
	return c.write(wire.TypeSync, b)
}

// close closes the WebSocket once with status and reason: the close
// frame, then the socket when the agent answers or after closeGrace.
// It never waits.
func (c *conn) close(status int, reason string) {
	c.once.Do(func() {
		c.lc.Close(ws.StatusCode(status), truncate(reason, 120)) // close reasons are limited to 123 bytes
	})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary so the reason stays valid UTF-8.
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

// nodeCIDRs are n's pod CIDRs (spec.podCIDRs, or the older spec.podCIDR).
func nodeCIDRs(n *corev1.Node) []string {
	if len(n.Spec.PodCIDRs) > 0 {
		return n.Spec.PodCIDRs
	}
	if n.Spec.PodCIDR != "" {
		return []string{n.Spec.PodCIDR}
	}
	return nil
}

// podCIDRs are node's pod CIDRs as the edge Node informer has them (nil
// when it has not seen the Node yet: a new Node gets them moments after it
// is created, and podCIDRsChanged sends them then).
func (s *Server) podCIDRs(node string) []string {
	o, ok, err := s.joinCache.NodeInformer().GetIndexer().GetByKey(node)
	if err != nil || !ok {
		return nil
	}
	n, _ := o.(*corev1.Node)
	if n == nil {
		return nil
	}
	return nodeCIDRs(n)
}

// podCIDRsChanged tells node's agent, once its hello-ack went out, of pod
// CIDRs that differ from what it was last told.
func (s *Server) podCIDRsChanged(node string, cidrs []string) {
	c := s.connOf(node)
	if c == nil || !c.acked.Load() || len(cidrs) == 0 {
		return
	}
	if old := c.podCIDRs.Load(); old != nil && slices.Equal(*old, cidrs) {
		return
	}
	c.podCIDRs.Store(&cidrs)
	c.log.Info("node pod CIDRs changed; telling the agent", "pod_cidrs", strings.Join(cidrs, ","))
	c.send(wire.TypeNodeConfig, &wire.NodeConfig{PodCIDRs: cidrs})
}

// upgradeAgent sends the upgrade controller's frames on c.
type upgradeAgent struct{ c *conn }

func (a upgradeAgent) Send(t wire.Type, body wire.Body) bool { return a.c.send(t, body) }
