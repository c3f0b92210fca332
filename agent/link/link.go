// Package link is the agent's connection to the relay: one mTLS WebSocket
// carrying wire frames, kept up for as long as the agent runs.
//
// A connection opens with a hello and its ack, then both sides send
// heartbeats; three silent intervals mean the link is dead. Any failure
// (dial, TLS, a malformed or unexpected frame, a dead link) ends the
// connection and the next one is tried after an exponential backoff with
// full jitter, so a fleet of gateways does not stampede a relay that just
// came back. While nobody listens at the relay's address (a relay
// restarting), the link also opens a bare TCP connection to it about
// every second of the wait and dials as soon as one is accepted, so it is
// back within about a second of the relay; after a connection ended, it
// probes the same way but dials early only once the address has refused
// and then accepts again (a relay that stays up waits the back-off out). A
// relay that answers but is busy (503 with Retry-After) is waited out as
// it asks, with jitter.
//
// The link carries frames; it keeps nothing. Upstream, Send hands a frame
// to the current connection through a small bounded queue and fails fast
// when it cannot (SendWait waits for room instead, for streams); durable reports stay in the agent's outbox until the
// relay acks them and are resent after each reconnect (Handlers.OnConnect
// says when). Downstream frames other than the link's own go to
// Handlers.Frame. The handlers are given to Run, so whatever they call
// can be built from the Link first (its Send) and exist before any frame
// arrives.
package link

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"outpost.dev/wire"
)

// Config is what a Link needs. Server, the PEM fields and NodeInfo are
// required.
type Config struct {
	// Server is the relay, https://HOST:PORT.
	Server string
	// NodeName is the node's name, for logs; the relay takes the name
	// from the certificate.
	NodeName string
	// CertPEM and KeyPEM are the node's client certificate and key; CAPEM
	// is the CA the relay's serving certificate must chain to.
	CertPEM, KeyPEM, CAPEM []byte
	// AgentVersion goes into the hello.
	AgentVersion string
	// NodeInfo is called before each hello, so addresses and capacity are
	// fresh on every connection.
	NodeInfo func() (wire.NodeInfo, error)
	// Objects, if set, is called before each hello: the downstream
	// objects the agent holds and their versions, so the relay sends only
	// what differs.
	Objects func() ([]wire.ObjectVersion, error)
	// Log receives connect and disconnect lines; nil discards them.
	Log *slog.Logger
	// Upgrades, if set, tells the relay in each hello that this agent
	// takes upgrade offers (agent/upgrade: an installer and a pinned
	// upgradePublicKey).
	Upgrades bool

	// Rotation, if set, renews the node certificate on the link (see
	// Rotation). NextCertPEM and NextKeyPEM are a renewed pair that has
	// not connected yet (stored by Rotation.Save before a restart).
	Rotation                *Rotation
	NextCertPEM, NextKeyPEM []byte

	// QueueFrames and QueueBytes bound Send's queue. Defaults: 64 frames,
	// wire.MaxFrameSize bytes.
	QueueFrames int
	QueueBytes  int
}

// Errors returned by Send.
var (
	ErrNotConnected = errors.New("link: not connected")
	ErrQueueFull    = errors.New("link: send queue full")
)

// Defaults for the connection's timing.
const (
	helloTimeout = 10 * time.Second
	dialTimeout  = 15 * time.Second
	writeTimeout = 10 * time.Second
	backoffMin   = time.Second
	backoffMax   = 30 * time.Second
	// probeEvery is the period of the TCP probe while the relay is
	// unreachable (each wait drawn in ±25 % of it).
	probeEvery = time.Second
	// stableAfter is how long a connection must live for the next failure
	// to start the backoff from the beginning again.
	stableAfter = time.Minute
	// deadAfter heartbeat intervals without a frame, the link is dead.
	deadAfter = 3
)

// Handlers are what Run calls while the link runs; each may be nil.
type Handlers struct {
	// Frame receives every downstream frame the link does not consume
	// itself (hello-ack, heartbeat, error), in order, on the reading
	// goroutine: it must return quickly, since the next frame waits.
	Frame func(wire.Frame)
	// OnConnect is called after each hello-ack, before any frame reaches
	// Frame; the outbox resends unacked reports from here. OnDisconnect
	// is called when that connection has ended, with the reason. Both run
	// on the link's goroutine and must not block.
	OnConnect    func(wire.HelloAck)
	OnDisconnect func(reason error)
}

// Link keeps the agent connected. Create it with New and call Run once.
type Link struct {
	cfg       Config
	h         Handlers // given to Run
	log       *slog.Logger
	connected atomic.Bool
	// dialing is the pair the current dial presents.
	dialing atomic.Pointer[tls.Certificate]
	// lastContact is when a frame last arrived from a relay (unix
	// nanoseconds, 0 never), for the agent's metrics and node status.
	lastContact atomic.Int64

	// idMu guards id, the key pairs the link dials with; roots is the
	// relay CA.
	idMu  sync.Mutex
	id    identity
	roots *x509.CertPool

	queue chan queued
	// conn numbers the connections; a frame queued for one that ended is
	// not written on the next.
	conn        atomic.Uint64
	queuedBytes atomic.Int64
	maxBytes    int64
	// room is closed, and cleared, when a frame leaves the queue: the
	// senders waiting in SendWait try again.
	roomMu sync.Mutex
	room   chan struct{}

	// Timing, shortened by tests.
	helloTimeout, dialTimeout, writeTimeout time.Duration
	backoffMin, backoffMax, stableAfter     time.Duration
	probeEvery                              time.Duration
	// probe reports whether the relay's address accepts a TCP connection
	// (nil: never probe, as behind an HTTP proxy). Set by Run.
	probe func(ctx context.Context) bool
	// dial opens every TCP connection the link makes: the WebSocket's
	// (to the relay or an HTTP proxy) and the probe's.
	dial                        func(ctx context.Context, network, addr string) (net.Conn, error)
	heartbeatUnit               time.Duration
	retryRotation, renewRecheck time.Duration
}

// New returns a Link for cfg. Nothing happens until Run.
func New(cfg Config) *Link {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.QueueFrames <= 0 {
		cfg.QueueFrames = 64
	}
	if cfg.QueueBytes <= 0 {
		cfg.QueueBytes = wire.MaxFrameSize
	}
	return &Link{
		cfg:           cfg,
		log:           log.With("node", cfg.NodeName),
		queue:         make(chan queued, cfg.QueueFrames),
		maxBytes:      int64(cfg.QueueBytes),
		helloTimeout:  helloTimeout,
		dialTimeout:   dialTimeout,
		writeTimeout:  writeTimeout,
		backoffMin:    backoffMin,
		backoffMax:    backoffMax,
		stableAfter:   stableAfter,
		probeEvery:    probeEvery,
		heartbeatUnit: time.Second,
		dial:          (&net.Dialer{}).DialContext,
		retryRotation: retryRotation,
		renewRecheck:  renewRecheck,
	}
}

// Connected reports whether a connection is up and past its hello.
func (l *Link) Connected() bool { return l.connected.Load() }

// LastContact returns when a frame (a hello-ack, heartbeat, ack or sync)
// last arrived from a relay; the zero time if none ever did in this run.
func (l *Link) LastContact() time.Time {
	if n := l.lastContact.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Send queues one frame for the current connection. It never blocks: it
// returns ErrNotConnected without a connection and ErrQueueFull when the
// queue is at its bound. A nil error means the frame was handed to the
// connection, not that the relay got it: frames queued when a connection
// drops are discarded, so anything that matters is resent from the
// outbox after OnConnect.
func (l *Link) Send(t wire.Type, seq uint64, body wire.Body) error {
	conn := l.conn.Load()
	if !l.connected.Load() {
		return ErrNotConnected
	}
	b, err := wire.Encode(t, seq, body)
	if err != nil {
		return err
	}
	return l.enqueue(queued{b, conn})
}

// SendWait is Send that waits out a full queue: until the connection
// takes the frame, ctx ends (ctx.Err()) or the connection drops
// (ErrNotConnected). Called from a Handler, it holds up the frames after
// it while it waits: answers there are for Send.
func (l *Link) SendWait(ctx context.Context, t wire.Type, seq uint64, body wire.Body) error {
	conn := l.conn.Load()
	if !l.connected.Load() {
		return ErrNotConnected
	}
	b, err := wire.Encode(t, seq, body)
	if err != nil {
		return err
	}
	for {
		room := l.roomSignal() // before trying, so no room made after it is missed
		if err := l.enqueue(queued{b, conn}); !errors.Is(err, ErrQueueFull) {
			return err
		}
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// queued is a frame for connection conn.
type queued struct {
	b    []byte
	conn uint64
}

func (l *Link) enqueue(q queued) error {
	if !l.connected.Load() {
		return ErrNotConnected
	}
	n := int64(len(q.b))
	if l.queuedBytes.Add(n) > l.maxBytes {
		l.queuedBytes.Add(-n)
		return ErrQueueFull
	}
	select {
	case l.queue <- q:
		return nil
	default:
		l.queuedBytes.Add(-n)
		return ErrQueueFull
	}
}

// roomSignal returns a channel closed when the queue next makes room or
// the connection drops.
func (l *Link) roomSignal() <-chan struct{} {
	l.roomMu.Lock()
	defer l.roomMu.Unlock()
	if l.room == nil {
		l.room = make(chan struct{})
	}
	return l.room
}

// dequeued accounts for frame b taken off the queue and wakes SendWait.
func (l *Link) dequeued(b []byte) {
	l.queuedBytes.Add(-int64(len(b)))
	l.roomMu.Lock()
	if l.room != nil {
		close(l.room)
		l.room = nil
	}
	l.roomMu.Unlock()
}

// Run connects and stays connected until ctx is done, then closes the
// connection normally and returns nil, calling h as it goes. It returns
// an error at once only when the identity in cfg cannot work at all.
func (l *Link) Run(ctx context.Context, h Handlers) error {
	l.h = h
	tc, err := l.tlsConfig()
	if err != nil {
		return err
	}
	connectURL, err := connectURL(l.cfg.Server)
	if err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         l.dial,
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: l.dialTimeout,
		// One connection at a time; nothing to keep idle.
		DisableKeepAlives: true,
	}}
	if l.probe == nil {
		l.probe = tcpProbe(connectURL, l.probeEvery, l.dial)
	}
	attempt := 0
	for {
		lived, err := l.session(ctx, client, connectURL)
		if ctx.Err() != nil {
			return nil
		}
		if lived >= l.stableAfter {
			attempt = 0
		}
		delay := l.backoff(attempt)
		attempt++
		var (
			rj     *rejoinError
			busy   *busyError
			unrch  *unreachableError
			probes probeMode
		)
		switch {
		case errors.As(err, &busy):
			delay = busy.after + rand.N(busy.after/2+1)
			l.log.Warn("connect failed", "reason", err, "retry_in", delay.Round(time.Millisecond))
		case errors.As(err, &unrch):
			probes = probeUp
			l.log.Warn("connect failed", "reason", err, "retry_in", delay.Round(time.Millisecond), "probing_every", l.probeEvery)
		case errors.Is(err, errRotated):
			l.log.Info("node certificate renewed; connecting with it")
			attempt, delay = 0, 0
		case errors.As(err, &rj):
			l.log.Error("cannot connect: this node must re-join", "reason", rj.reason, "fix", rj.fix(l.cfg.Server), "retry_in", delay.Round(time.Millisecond))
		case lived > 0:
			// The relay may have gone (killed, restarting) and be back
			// before a long back-off ends (one drawn after a connection
			// shorter than stableAfter).
			probes = probeBack
			l.log.Warn("disconnected", "reason", err, "connected_for", roundDur(lived), "retry_in", delay.Round(time.Millisecond))
		default:
			l.log.Warn("connect failed", "reason", err, "retry_in", delay.Round(time.Millisecond))
		}
		if !l.pause(ctx, delay, probes) {
			return nil
		}
	}
}

// probeMode says whether a pause probes the relay's address, and which
// probe ends it.
type probeMode int

const (
	noProbe probeMode = iota
	// probeUp: the address refused the dial; the first probe it accepts
	// ends the wait.
	probeUp
	// probeBack: the connection ended; a probe accepted after one was
	// refused ends the wait (the relay went away and is back). An address
	// that accepts the first probe (the relay, or a balancer in front of
	// it, is up and ended the connection itself) is not probed again: the
	// back-off is waited out.
	probeBack
)

// pause waits delay; with probes, it also tries l.probe about every
// probeEvery and returns as soon as one ends the wait (see probeMode).
// It returns false when ctx ended first.
func (l *Link) pause(ctx context.Context, delay time.Duration, probes probeMode) bool {
	t := time.NewTimer(delay)
	defer t.Stop()
	var probeC <-chan time.Time
	next := func() time.Duration { return l.probeEvery*3/4 + rand.N(l.probeEvery/2+1) }
	var pt *time.Timer
	if probes != noProbe && l.probe != nil && l.probeEvery > 0 && delay > l.probeEvery {
		pt = time.NewTimer(next())
		defer pt.Stop()
		probeC = pt.C
	}
	down := probes == probeUp
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-probeC:
			switch up := l.probe(ctx); {
			case up && down:
				return ctx.Err() == nil
			case up:
				probeC = nil // up all along: wait the back-off out
				continue
			default:
				down = true
			}
			pt.Reset(next())
		}
	}
}

// tcpProbe returns a probe that opens and closes a TCP connection to the
// relay's address, or nil when an HTTP proxy stands between (the
// relay's own port is then not what the dial reaches).
func tcpProbe(connectURL string, timeout time.Duration, dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(context.Context) bool {
	u, err := url.Parse(connectURL)
	if err != nil {
		return nil
	}
	if p, err := http.ProxyFromEnvironment(&http.Request{URL: u}); err != nil || p != nil {
		return nil
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	return func(ctx context.Context) bool {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		c, err := dial(ctx, "tcp", addr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
}

// backoff is "full jitter": uniform in [0, min(max, min·2^attempt)].
func (l *Link) backoff(attempt int) time.Duration {
	d := l.backoffMax
	if attempt < 32 {
		if e := l.backoffMin << attempt; e > 0 && e < d {
			d = e
		}
	}
	return rand.N(d + 1)
}

// session runs one connection from dial to close. lived is how long it
// was up after the hello; zero when it never got there.
func (l *Link) session(ctx context.Context, client *http.Client, u string) (lived time.Duration, err error) {
	pair, isNext := l.pick()
	grace := time.Duration(0)
	if l.cfg.Rotation != nil {
		grace = wire.CertGrace
	}
	if err := checkValidity(pair.Leaf, l.now(), grace); err != nil {
		l.connectedWith(isNext, false)
		return 0, err
	}
	l.dialing.Store(pair)
	dctx, cancel := context.WithTimeout(ctx, l.dialTimeout)
	conn, resp, err := websocket.Dial(dctx, u, &websocket.DialOptions{HTTPClient: client})
	cancel()
	if err != nil {
		l.connectedWith(isNext, false)
		return 0, dialError(err, resp)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(wire.MaxFrameSize)

	ack, err := l.hello(ctx, conn)
	if err != nil {
		l.connectedWith(isNext, false)
		closeFor(conn, err)
		return 0, err
	}
	l.connectedWith(isNext, true)
	interval := time.Duration(ack.HeartbeatSeconds) * l.heartbeatUnit
	l.log.Info("connected", "relay", hostOf(l.cfg.Server), "protocol", ack.Version, "heartbeat", interval, "relay_version", ack.RelayVersion)
	if l.cfg.NodeName != "" && ack.NodeName != l.cfg.NodeName {
		l.log.Warn("relay knows this node by another name", "relay_name", ack.NodeName)
	}
	start := time.Now()
	l.lastContact.Store(start.UnixNano())
	l.conn.Add(1)
	l.connected.Store(true)
	if l.h.OnConnect != nil {
		l.h.OnConnect(ack)
	}
	err = l.serve(ctx, conn, interval)
	l.connected.Store(false)
	l.drain()
	if l.h.OnDisconnect != nil {
		l.h.OnDisconnect(err)
	}
	return max(time.Since(start), time.Nanosecond), err
}

// hello sends the hello and waits for its answer.
func (l *Link) hello(ctx context.Context, conn *websocket.Conn) (wire.HelloAck, error) {
	var ack wire.HelloAck
	if l.cfg.NodeInfo == nil {
		return ack, errors.New("link: no NodeInfo source")
	}
	ni, err := l.cfg.NodeInfo()
	if err != nil {
		return ack, fmt.Errorf("reading node info: %w", err)
	}
	var held []wire.ObjectVersion
	if l.cfg.Objects != nil {
		if held, err = l.cfg.Objects(); err != nil {
			return ack, fmt.Errorf("reading held objects: %w", err)
		}
	}
	b, err := wire.Encode(wire.TypeHello, 0, &wire.Hello{
		MinVersion: wire.ProtocolMin, MaxVersion: wire.ProtocolMax,
		AgentVersion: l.cfg.AgentVersion, Node: ni, Objects: held, Upgrades: l.cfg.Upgrades,
	})
	if err != nil {
		return ack, err
	}
	// Not derived from ctx: coder/websocket drops a connection whose
	// Read context ends, and a shutdown mid-hello should still close it
	// properly.
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.helloTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { conn.Close(websocket.StatusNormalClosure, "agent shutting down") })
	defer stop()
	if err := conn.Write(hctx, websocket.MessageBinary, b); err != nil {
		return ack, fmt.Errorf("sending hello: %w", err)
	}
	for {
		f, err := readFrame(hctx, conn)
		if err != nil {
			if ctx.Err() != nil {
				return ack, ctx.Err()
			}
			if hctx.Err() != nil {
				return ack, fmt.Errorf("no hello-ack within %s", l.helloTimeout)
			}
			return ack, err
		}
		switch f.Type {
		case wire.TypeHelloAck:
			if err := f.DecodeBody(&ack); err != nil {
				return ack, &protocolError{wire.CodeInvalid, err}
			}
			if ack.Version < wire.ProtocolMin || ack.Version > wire.ProtocolMax {
				return ack, &protocolError{wire.CodeVersion, fmt.Errorf("relay chose protocol %d, this agent speaks %d-%d: upgrade outpost-agent", ack.Version, wire.ProtocolMin, wire.ProtocolMax)}
			}
			return ack, nil
		case wire.TypeError:
			err := relayError(f)
			var re *relayErr
			if errors.As(err, &re) && !re.e.Fatal {
				// A warning; the ack may still come.
				l.log.Warn("relay reported an error", "code", re.e.Code, "reason", clean(re.e.Reason))
				continue
			}
			return ack, err
		default:
			return ack, &protocolError{wire.CodeProtocol, fmt.Errorf("relay sent %s before hello-ack", f.Type)}
		}
	}
}

// serve runs the reader and the writer until one fails or ctx is done.
func (l *Link) serve(ctx context.Context, conn *websocket.Conn, interval time.Duration) error {
	// The loops' context is not ctx: on shutdown the close handshake
	// must run first, and coder/websocket drops the connection without
	// one when a Read's context ends.
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	errc := make(chan error, 2)
	var wg sync.WaitGroup
	var lastRecv atomic.Int64
	lastRecv.Store(time.Now().UnixNano())
	wg.Go(func() { errc <- l.readLoop(lctx, conn, &lastRecv) })
	wg.Go(func() { errc <- l.writeLoop(lctx, conn, interval, &lastRecv) })
	var err error
	select {
	case <-ctx.Done():
		l.log.Info("closing connection", "reason", "agent shutting down")
		conn.Close(websocket.StatusNormalClosure, "agent shutting down")
		err = ctx.Err()
	case err = <-errc:
		closeFor(conn, err)
	}
	cancel()
	wg.Wait()
	return err
}

func (l *Link) readLoop(ctx context.Context, conn *websocket.Conn, lastRecv *atomic.Int64) error {
	for {
		f, err := readFrame(ctx, conn)
		if err != nil {
			return err
		}
		now := time.Now().UnixNano()
		lastRecv.Store(now)
		l.lastContact.Store(now)
		switch f.Type {
		case wire.TypeHeartbeat:
			// Its arrival is the point.
		case wire.TypeError:
			err := relayError(f)
			var re *relayErr
			if errors.As(err, &re) && !re.e.Fatal {
				l.log.Warn("relay reported an error", "code", re.e.Code, "reason", clean(re.e.Reason))
				continue
			}
			return err
		case wire.TypeCertIssued:
			if err := l.certIssued(f); err != nil {
				l.log.Warn("renewed node certificate not used", "err", err)
				continue
			}
			return errRotated
		case wire.TypeHelloAck, wire.TypeHello, wire.TypeCertRequest:
			return &protocolError{wire.CodeProtocol, fmt.Errorf("unexpected %s after the hello", f.Type)}
		default:
			if l.h.Frame != nil {
				l.h.Frame(f)
			} else {
				l.log.Debug("dropped downstream frame: no handler", "type", f.Type)
			}
		}
	}
}

// writeLoop sends heartbeats and queued frames, and declares the link dead
// when nothing has arrived for deadAfter intervals. The check lives here,
// not in a read deadline, so the reason is reported before anything closes
// the connection under the reader.
func (l *Link) writeLoop(ctx context.Context, conn *websocket.Conn, interval time.Duration, lastRecv *atomic.Int64) error {
	dead := deadAfter * interval
	this := l.conn.Load()
	hb, err := wire.Encode(wire.TypeHeartbeat, 0, nil)
	if err != nil {
		return err
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	write := func(b []byte) error {
		wctx, cancel := context.WithTimeout(ctx, l.writeTimeout)
		defer cancel()
		if err := conn.Write(wctx, websocket.MessageBinary, b); err != nil {
			if wctx.Err() != nil && ctx.Err() == nil {
				return fmt.Errorf("link stalled: a write took over %s", l.writeTimeout)
			}
			return fmt.Errorf("write: %w", err)
		}
		return nil
	}
	// The renewal check runs at once (a certificate expired within the
	// grace connects only for it) and then with each heartbeat, or every
	// renewRecheck if that is sooner: it reads the wall clock each time,
	// so a clock that jumped past the due time is noticed within one
	// period.
	renew := func() error {
		if b := l.certRequest(); b != nil {
			return write(b)
		}
		return nil
	}
	if err := renew(); err != nil {
		return err
	}
	var recheck <-chan time.Time
	if l.cfg.Rotation != nil && l.renewRecheck < interval {
		rt := time.NewTicker(l.renewRecheck)
		defer rt.Stop()
		recheck = rt.C
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if silent := time.Since(time.Unix(0, lastRecv.Load())); silent >= dead {
				return fmt.Errorf("link dead: nothing from the relay for %s", roundDur(silent))
			}
			if err := write(hb); err != nil {
				return err
			}
			if err := renew(); err != nil {
				return err
			}
		case <-recheck:
			if err := renew(); err != nil {
				return err
			}
		case q := <-l.queue:
			l.dequeued(q.b)
			if q.conn != this {
				continue // queued for a connection that ended
			}
			if err := write(q.b); err != nil {
				return err
			}
		}
	}
}

// drain discards frames queued for a connection that is gone.
// SendWait's waiters wake and find the link down.
func (l *Link) drain() {
	for {
		select {
		case q := <-l.queue:
			l.dequeued(q.b)
		default:
			l.dequeued(nil)
			return
		}
	}
}

// readFrame reads and decodes one frame. A frame that is not one binary
// CBOR frame within the limits is a protocolError: the relay is broken or
// hostile, and the only safe answer is a new connection.
func readFrame(ctx context.Context, conn *websocket.Conn) (wire.Frame, error) {
	typ, b, err := conn.Read(ctx)
	if err != nil {
		if cs := websocket.CloseStatus(err); cs != -1 {
			var ce websocket.CloseError
			errors.As(err, &ce)
			return wire.Frame{}, fmt.Errorf("relay closed the connection (%v %q)", cs, clean(ce.Reason))
		}
		if strings.Contains(err.Error(), "read limited at") {
			return wire.Frame{}, &protocolError{wire.CodeTooLarge, fmt.Errorf("relay sent a frame over %d bytes", wire.MaxFrameSize)}
		}
		return wire.Frame{}, fmt.Errorf("read: %w", err)
	}
	if typ != websocket.MessageBinary {
		return wire.Frame{}, &protocolError{wire.CodeMalformed, errors.New("relay sent a text message")}
	}
	f, err := wire.Decode(b)
	if err != nil {
		code := wire.CodeMalformed
		if errors.Is(err, wire.ErrTooLarge) {
			code = wire.CodeTooLarge
		}
		return wire.Frame{}, &protocolError{code, fmt.Errorf("relay sent a bad frame: %w", err)}
	}
	return f, nil
}

// protocolError is a frame the agent cannot accept. The connection is
// closed after telling the relay why.
type protocolError struct {
	code wire.ErrorCode
	err  error
}

func (e *protocolError) Error() string { return e.err.Error() }
func (e *protocolError) Unwrap() error { return e.err }

// relayErr is an Error frame from the relay.
type relayErr struct{ e wire.Error }

func (e *relayErr) Error() string {
	return fmt.Sprintf("relay error %d: %s", e.e.Code, clean(e.e.Reason))
}

func relayError(f wire.Frame) error {
	var e wire.Error
	if err := f.DecodeBody(&e); err != nil {
		return &protocolError{wire.CodeInvalid, err}
	}
	return &relayErr{e: e}
}

// closeFor ends a connection in the way err calls for.
func closeFor(conn *websocket.Conn, err error) {
	if errors.Is(err, errRotated) {
		conn.Close(websocket.StatusNormalClosure, "node certificate renewed; reconnecting")
		return
	}
	var pe *protocolError
	if errors.As(err, &pe) {
		// Tell the relay why, best effort: it may be what is broken.
		if b, e := wire.Encode(wire.TypeError, 0, &wire.Error{Code: pe.code, Reason: truncate(pe.Error(), 1024), Fatal: true}); e == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			conn.Write(ctx, websocket.MessageBinary, b)
			cancel()
		}
		code := websocket.StatusPolicyViolation
		if pe.code == wire.CodeTooLarge {
			code = websocket.StatusMessageTooBig
		}
		conn.Close(code, truncate(pe.Error(), 120))
		return
	}
	conn.CloseNow()
}

// tlsConfig loads the stored pairs and CA. Each dial presents the pair
// session picked (l.dialing).
func (l *Link) tlsConfig() (*tls.Config, error) {
	pair, err := tls.X509KeyPair(l.cfg.CertPEM, l.cfg.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("stored node certificate and key are unusable (%v): re-join with \"outpost-agent join --force\"", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(l.cfg.CAPEM) {
		return nil, errors.New("stored relay CA is unusable: re-join with \"outpost-agent join --force\"")
	}
	l.idMu.Lock()
	l.id.cur, l.roots = &pair, roots
	if len(l.cfg.NextCertPEM) > 0 && l.cfg.Rotation != nil {
		if next, err := tls.X509KeyPair(l.cfg.NextCertPEM, l.cfg.NextKeyPEM); err == nil {
			l.id.next = &next
		} else {
			l.log.Warn("stored renewed node certificate is unusable; the current one is used and renewed again", "err", err)
		}
	}
	l.idMu.Unlock()
	return &tls.Config{
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return l.dialing.Load(), nil },
		RootCAs:              roots,
		// TLS 1.3 is negotiated whenever the relay offers it; 1.2 is the
		// floor for middleboxes that still need it.
		MinVersion: tls.VersionTLS12,
	}, nil
}

func connectURL(server string) (string, error) {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("relay URL %q must look like https://HOST:PORT", server)
	}
	u.Path, u.RawQuery = wire.PathConnect, ""
	return u.String(), nil
}

func hostOf(server string) string {
	if u, err := url.Parse(server); err == nil {
		return u.Host
	}
	return server
}

// roundDur keeps log durations readable at both ends: 340ms, 2m13s.
func roundDur(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// clean keeps relay-supplied text to one tidy line in logs.
func clean(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	return truncate(s, 300)
}
