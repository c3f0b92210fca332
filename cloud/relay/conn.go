package relay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	corev1 "k8s.io/api/core/v1"

	"outpost.dev/cloud/identity"
	"outpost.dev/cloud/nodes"
	"outpost.dev/cloud/pki"
	"outpost.dev/cloud/pods"
	"outpost.dev/cloud/podstatus"
	"outpost.dev/cloud/upgrade"
	"outpost.dev/wire"
	"outpost.dev/wire/tunnel"
)

// WebSocket close codes the relay uses beyond the standard ones.
const (
	websocketGoingAway = websocket.StatusGoingAway
	// CloseReplaced closes a connection when the same node connected again.
	CloseReplaced websocket.StatusCode = 4001
	// CloseForbidden closes a connection whose node the relay will not
	// write (a Node of that name that is not an edge node).
	CloseForbidden websocket.StatusCode = 4003
)

// writeTimeout bounds one frame write; a peer that does not read is dead.
const writeTimeout = 10 * time.Second

// closeGrace bounds a close handshake. Without it a peer that declared a
// huge message and went quiet would hold the closing goroutine forever:
// the library drains the rest of the message before it sees a close reply.
const closeGrace = 2 * time.Second

// hijackRecorder keeps the network connection the WebSocket library hijacks,
// so the relay can put a deadline on the close handshake.
type hijackRecorder struct {
	http.ResponseWriter
	conn net.Conn
}

func (h *hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	h.conn = c
	return c, rw, err
}

// conn is one agent connection.
type conn struct {
	s       *Server
	ws      *websocket.Conn
	netConn net.Conn
	node    string
	serial  string // of the node's certificate, as identity.Serial records it
	// expired says the certificate expired within wire.CertGrace: the
	// connection may only rotate it (serveExpired).
	expired bool
	// admitted releases the connection's handshake token
	// (Config.MaxHandshakes); called once the hello is answered.
	admitted func()
	rot      rotation
	log      *slog.Logger
	lastSeen atomic.Int64 // unix nanoseconds of the last frame read
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
	// stats are the stats requests waiting for the agent (resource.go).
	stats statsWaiters
	// kubelet is the node's own kubelet API server, if any (serveKubelet).
	kubelet *http.Server
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
	defer release()
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
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	log := s.log.With("node", name, "remote", r.RemoteAddr)
	hj := &hijackRecorder{ResponseWriter: w}
	ws, err := websocket.Accept(hj, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		log.Warn("websocket upgrade failed", "err", err) // Accept answered the request
		return
	}
	// The library refuses a message past this before buffering it; read
	// below stops at the same bound so it can say why first.
	ws.SetReadLimit(wire.MaxFrameSize)
	c := &conn{s: s, ws: ws, netConn: hj.conn, node: name, serial: serial, expired: expired, log: log, admitted: release,
		streams: streamSet{max: s.cfg.MaxStreamsPerNode}, streamsDone: make(chan struct{})}
	c.acks = newAcks(c.sendAck)
	c.tunnels = tunnel.New(func(t wire.Type, body wire.Body) error {
		if !c.send(t, body) {
			return errLinkWrite
		}
		return nil
	}, s.cfg.MaxTunnelsPerNode, wire.ChanStdin, wire.ChanStdout, wire.ChanStderr)
	c.lastSeen.Store(time.Now().UnixNano())
	c.serve()
}

// serve runs the connection until it ends. Nothing an agent sends can take
// the relay down: protocol errors close this connection only, and a panic
// (a relay bug) is recovered and logged here.
func (c *conn) serve() {
	defer c.ws.CloseNow()
	defer close(c.streamsDone)
	defer c.tunnels.Shutdown(fmt.Errorf("edge node %q disconnected", c.node))
	defer func() {
		if r := recover(); r != nil {
			c.s.metrics.panics.Inc()
			c.log.Error("connection handler panicked; closing this connection", "panic", r, "stack", string(debug.Stack()))
			c.close(websocket.StatusInternalError, "relay internal error")
		}
	}()

	f, ok := c.read(c.s.cfg.HelloTimeout, "hello")
	if !ok {
		return
	}
	if f.Type != wire.TypeHello {
		c.fatal(wire.CodeProtocol, fmt.Sprintf("first frame must be hello, got %s", f.Type), websocket.StatusPolicyViolation)
		return
	}
	var h wire.Hello
	if err := f.DecodeBody(&h); err != nil {
		c.fatalDecode(err)
		return
	}
	if err := nodes.CheckInfo(&h.Node); err != nil {
		c.fatal(wire.CodeInvalid, "hello: "+err.Error(), websocket.StatusPolicyViolation)
		return
	}
	version, ok := wire.Negotiate(h.MinVersion, h.MaxVersion)
	if !ok {
		c.fatal(wire.CodeVersion, fmt.Sprintf("no common protocol version: agent speaks %d-%d, relay %d-%d; upgrade the older side",
			h.MinVersion, h.MaxVersion, wire.ProtocolMin, wire.ProtocolMax), websocket.StatusPolicyViolation)
		return
	}
	if c.expired {
		c.admitted()
		c.serveExpired(version)
		return
	}

	old, ok := c.s.register(c)
	if !ok {
		c.close(websocketGoingAway, "relay shutting down")
		return
	}
	defer c.s.unregister(c)
	if old != nil {
		c.log.Info("node connected again; closing its previous connection")
		go old.close(CloseReplaced, "replaced by a newer connection of the same node")
	}

	// Everything written and read for this node from here on is the
	// node's own doing, as far as the API server can tell.
	as, err := c.s.cfg.AsNode.For(c.node)
	if err != nil {
		c.log.Error("no API client acting as the node", "err", err)
		c.sendError(wire.CodeInternal, "relay cannot act as this node: "+err.Error(), true)
		c.close(websocket.StatusInternalError, "relay cannot act as this node")
		return
	}
	hb := c.s.cfg.HeartbeatInterval
	silent := 3 * hb
	kport := c.serveKubelet()
	defer c.stopKubelet()
	sess := c.s.nodes.Start(c.s.ctx, nodes.SessionConfig{
		Name:    c.node,
		Client:  as,
		OnAck:   func(seq uint64) { c.acks.doneUpTo(wire.TypeNodeStatus, seq) },
		OnFatal: c.onWriteFatal,
		Alive:   func() bool { return time.Since(time.Unix(0, c.lastSeen.Load())) < silent },
		Create:  c.s.createHooks(c.node, c.serial),
		Log:     c.log,
	})
	defer sess.Stop()

	// The hello-ack goes first: anything the node session says (a refusal
	// to write the Node) must come after it on the wire.
	podCIDRs := c.s.podCIDRs(c.node)
	c.podCIDRs.Store(&podCIDRs)
	if !c.send(wire.TypeHelloAck, &wire.HelloAck{
		Version:          version,
		NodeName:         c.node,
		HeartbeatSeconds: uint32(hb / time.Second),
		RelayVersion:     c.s.cfg.Version,
		PodCIDRs:         podCIDRs,
	}) {
		return
	}
	c.admitted()
	// A change the Node informer saw before this point was not sent.
	c.acked.Store(true)
	c.s.podCIDRsChanged(c.node, c.s.podCIDRs(c.node))
	sess.Report(0, nodes.Report{AgentVersion: h.AgentVersion, Info: h.Node, KubeletPort: kport})
	c.log.Info("agent connected", "agent_version", h.AgentVersion, "protocol", version, "board", h.Node.Board, "arch", h.Node.Arch)

	// Downstream: the pods bound to this node, from the versions the agent
	// holds. Its own goroutine writes the frames, so this loop keeps reading.
	// The node's Devices travel in the same sync; twin reports about them
	// are written back as their status.
	twinReports, nodeDevices, stopDevices := c.startDevices(h.Objects)
	defer stopDevices()
	psync := pods.Start(c.s.ctx, pods.Config{
		Client: as,
		Node:   c.node,
		Held:   h.Objects,
		Send:   func(b []byte) bool { return c.write(wire.TypeSync, b) },
		Log:    c.log,
		Extra:  nodeDevices,
		Nodes:  c.s.joinCache,

		TokenRefreshAfter: c.s.cfg.TokenRefreshAfter,
	})
	defer psync.Stop()
	c.pods.Store(psync)
	psync.NodeChanged() // the Node may have come between its first look and the Store
	pstatus := c.s.podStatus.Start(c.s.ctx, podstatus.SessionConfig{Node: c.node, Client: as, Done: c.acks.done, Log: c.log})
	defer pstatus.Stop()
	// Agent upgrades in flight for this node are offered (again) now.
	var up *upgrade.Session
	if c.s.upgrades != nil {
		up = c.s.upgrades.Connect(c.node, h.Node.Arch, h.AgentVersion, h.Upgrades, upgradeAgent{c})
		defer up.Close()
	}

	for {
		f, ok := c.read(silent, "frame")
		if !ok {
			return
		}
		switch f.Type {
		case wire.TypeHeartbeat:
			if err := f.DecodeBody(&wire.Heartbeat{}); err != nil {
				c.fatalDecode(err)
				return
			}
			if !c.send(wire.TypeHeartbeat, nil) {
				return
			}
		case wire.TypeNodeStatus:
			var st wire.NodeStatus
			if err := f.DecodeBody(&st); err != nil {
				c.fatalDecode(err)
				return
			}
			if f.Seq == 0 {
				c.fatal(wire.CodeInvalid, "node-status without a seq: durable reports are numbered from 1", websocket.StatusPolicyViolation)
				return
			}
			if err := nodes.CheckInfo(&st.Node); err != nil {
				c.fatal(wire.CodeInvalid, "node-status: "+err.Error(), websocket.StatusPolicyViolation)
				return
			}
			// Acked by the session once the API write succeeded.
			c.acks.received(f.Type, f.Seq)
			sess.Report(f.Seq, nodes.Report{AgentVersion: h.AgentVersion, Info: st.Node, Conditions: st.Conditions, Link: st.Link, KubeletPort: kport})
		case wire.TypePodStatus:
			var st wire.PodStatus
			if err := f.DecodeBody(&st); err != nil {
				c.fatalDecode(err)
				return
			}
			if f.Seq == 0 {
				c.fatal(wire.CodeInvalid, "pod-status without a seq: durable reports are numbered from 1", websocket.StatusPolicyViolation)
				return
			}
			// Acked once written, or dropped for good (another node's
			// pod, a stale UID); waits here while the queue is full.
			c.acks.received(f.Type, f.Seq)
			if !pstatus.Report(f.Seq, &st) {
				return
			}
		case wire.TypeTwinReport:
			var r wire.TwinReport
			if err := f.DecodeBody(&r); err != nil {
				c.fatalDecode(err)
				return
			}
			if f.Seq == 0 {
				c.fatal(wire.CodeInvalid, "twin-report without a seq: durable reports are numbered from 1", websocket.StatusPolicyViolation)
				return
			}
			// Acked once the Device status is written, or dropped for good
			// (no such Device on this node); waits while the queue is full.
			c.acks.received(f.Type, f.Seq)
			twinReports.report(f.Seq, &r)
		case wire.TypeUpgradeReport:
			var r wire.UpgradeReport
			if err := f.DecodeBody(&r); err != nil {
				c.fatalDecode(err)
				return
			}
			if f.Seq == 0 {
				c.fatal(wire.CodeInvalid, "upgrade-report without a seq: durable reports are numbered from 1", websocket.StatusPolicyViolation)
				return
			}
			// Acked once in the AgentUpgrade's status, or dropped for good.
			c.acks.received(f.Type, f.Seq)
			seq := f.Seq
			if up == nil {
				c.acks.done(seq)
				continue
			}
			up.Report(&r, func() { c.acks.done(seq) })
		case wire.TypeUpgradeChunkRequest:
			// A bad request fails the download (the agent asks again on
			// the next offer), not the link.
			var r wire.UpgradeChunkRequest
			if err := f.DecodeBody(&r); err != nil {
				c.sendError(wire.CodeInvalid, err.Error(), false)
				continue
			}
			if up == nil {
				c.sendError(wire.CodeProtocol, "this relay offers no agent upgrades", false)
				continue
			}
			if err := up.ChunkRequest(&r); err != nil {
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
				continue
			}
			c.stats.deliver(&r)
		case wire.TypeTunnelOpen, wire.TypeTunnelResize, wire.TypeStatsRequest, wire.TypeUpgradeOffer, wire.TypeUpgradeChunk:
			c.sendError(wire.CodeProtocol, fmt.Sprintf("%s is sent by the relay, not by agents; ignored", f.Type), false)
		case wire.TypeCertRequest:
			if !c.certRequest(f, false) {
				return
			}
		case wire.TypeError:
			var e wire.Error
			if err := f.DecodeBody(&e); err != nil {
				c.fatalDecode(err)
				return
			}
			c.s.metrics.errors.WithLabelValues("in", codeLabel(e.Code)).Inc()
			c.log.Warn("agent reported an error", "code", e.Code, "reason", e.Reason, "fatal", e.Fatal)
			if e.Fatal {
				c.close(websocket.StatusNormalClosure, "agent reported a fatal error")
				return
			}
		case wire.TypeHello:
			c.fatal(wire.CodeProtocol, "hello after hello: a connection has one hello", websocket.StatusPolicyViolation)
			return
		case wire.TypeHelloAck, wire.TypeAck, wire.TypeCertIssued:
			c.fatal(wire.CodeProtocol, fmt.Sprintf("%s is sent by the relay, not by agents", f.Type), websocket.StatusPolicyViolation)
			return
		default:
			// A newer agent may send types this relay does not know yet;
			// say so and carry on.
			c.sendError(wire.CodeUnknownType, fmt.Sprintf("frame %s is unknown to this relay (protocol %d); ignored", f.Type, version), false)
		}
	}
}

// read reads one frame within timeout. On any failure it has already
// answered, closed and logged; the caller just returns.
func (c *conn) read(timeout time.Duration, what string) (wire.Frame, bool) {
	ctx, cancel := context.WithTimeout(c.s.ctx, timeout)
	defer cancel()
	typ, r, err := c.ws.Reader(ctx)
	if err != nil {
		c.readFailed(ctx, err, timeout, what)
		return wire.Frame{}, false
	}
	if typ != websocket.MessageBinary {
		c.fatal(wire.CodeMalformed, "text message refused: frames are binary CBOR messages", websocket.StatusUnsupportedData)
		return wire.Frame{}, false
	}
	// Read one byte past the limit to tell "too large" apart; the library
	// never buffers more than that, whatever length the peer declared.
	b, err := io.ReadAll(io.LimitReader(r, wire.MaxFrameSize+1))
	if err != nil {
		c.readFailed(ctx, err, timeout, what)
		return wire.Frame{}, false
	}
	if len(b) > wire.MaxFrameSize {
		c.fatal(wire.CodeTooLarge, fmt.Sprintf("frame larger than %d bytes", wire.MaxFrameSize), websocket.StatusMessageTooBig)
		return wire.Frame{}, false
	}
	c.lastSeen.Store(time.Now().UnixNano())
	f, err := wire.Decode(b)
	if err != nil {
		c.s.metrics.frame("in", 0, len(b))
		c.fatalDecode(err)
		return wire.Frame{}, false
	}
	c.s.metrics.frame("in", f.Type, len(b))
	return f, true
}

func (c *conn) readFailed(ctx context.Context, err error, timeout time.Duration, what string) {
	switch {
	case c.s.ctx.Err() != nil:
		// Relay shutting down; Close said goodbye.
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		c.log.Warn("agent silent; closing", "waited_for", what, "timeout", timeout)
	case websocket.CloseStatus(err) != -1:
		c.log.Info("agent disconnected", "status", websocket.CloseStatus(err), "err", err)
	case errors.Is(err, websocket.ErrMessageTooBig):
		c.log.Warn("frame too large; closed", "err", err)
	default:
		c.log.Info("connection ended", "err", err)
	}
}

// fatalDecode answers a frame that did not decode or validate.
func (c *conn) fatalDecode(err error) {
	switch {
	case errors.Is(err, wire.ErrTooLarge):
		c.fatal(wire.CodeTooLarge, err.Error(), websocket.StatusMessageTooBig)
	case errors.Is(err, wire.ErrInvalid):
		c.fatal(wire.CodeInvalid, err.Error(), websocket.StatusInvalidFramePayloadData)
	default:
		c.fatal(wire.CodeMalformed, err.Error(), websocket.StatusInvalidFramePayloadData)
	}
}

// fatal tells the agent why, logs it, and closes this connection.
func (c *conn) fatal(code wire.ErrorCode, reason string, status websocket.StatusCode) {
	c.log.Warn("closing connection: bad frame from agent", "code", codeLabel(code), "reason", reason)
	c.sendError(code, reason, true)
	c.close(status, reason)
}

func (c *conn) sendError(code wire.ErrorCode, reason string, fatal bool) bool {
	c.s.metrics.errors.WithLabelValues("out", codeLabel(code)).Inc()
	return c.send(wire.TypeError, &wire.Error{Code: code, Reason: truncate(reason, 1024), Fatal: fatal})
}

// onWriteFatal is called by the node session when the Node can never be
// written for this connection.
// It runs on a shared API worker, so the frame and the close go out on a
// goroutine of their own: the worker never waits on this connection.
func (c *conn) onWriteFatal(err error) {
	go func() {
		c.sendError(wire.CodeForbidden, err.Error(), true)
		c.close(CloseForbidden, "node cannot be written")
	}()
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

// write sends one frame. The library serializes concurrent writers (the
// read loop and the node session).
func (c *conn) write(t wire.Type, b []byte) bool {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageBinary, b); err != nil {
		return false
	}
	c.s.metrics.frame("out", t, len(b))
	return true
}

// close closes the WebSocket once with status and reason.
func (c *conn) close(status websocket.StatusCode, reason string) {
	c.once.Do(func() {
		if c.netConn != nil {
			_ = c.netConn.SetDeadline(time.Now().Add(closeGrace))
		}
		_ = c.ws.Close(status, truncate(reason, 120)) // close reasons are limited to 123 bytes
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
	s.mu.Lock()
	c := s.conns[node]
	s.mu.Unlock()
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
