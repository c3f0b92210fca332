// Package watchmux carries many long-lived watches to the API server as
// HTTP/2 streams over a few TLS connections, with one goroutine per
// connection and none per watch.
//
// client-go's watch costs three goroutines while it lasts: the caller's
// loop over its result channel, the StreamWatcher decoding the body, and
// the HTTP/2 transport's goroutine per request body. The relay holds one
// watch per connected node and one per ConfigMap or Secret its pods
// reference (the Node authorizer lets a node list its pods only with its
// own field selector, and its pods' ConfigMaps and Secrets only by name,
// so the watches of different nodes cannot be merged), which made those
// goroutines most of a connected agent's cost. Here a connection's one
// reader goroutine reads every frame, cuts each stream's DATA into watch
// events and hands each to the stream's Handler, which must not block.
//
// The frames and header compression are golang.org/x/net/http2's Framer
// and hpack; this package only multiplexes: the connection preface and
// SETTINGS (a connection holds at most the server's
// MAX_CONCURRENT_STREAMS, another is dialled when all are full, one dial
// at a time, and a connection left with no stream is closed unless it is
// the only one), flow
// control (WINDOW_UPDATE as events are consumed, which is at once),
// HEADERS and CONTINUATION out, status and body in, RST_STREAM to
// cancel, PING (answered, and sent when a connection is quiet) and GOAWAY
// (the streams it cuts off end with an error, so their callers resume
// them). A stream answered with another status than 200 ends with the
// API server's Status as an *apierrors.StatusError, so callers can tell
// 410 Gone from 403 Forbidden.
//
// Everything read is bounded: frames (16 KiB, the HTTP/2 default),
// header lists, error bodies and each event (DefaultMaxEventSize). A
// stream that breaks a bound or sends what does not decode ends, alone;
// only a connection-level protocol error ends a connection's streams.
//
// The relay's own credentials are sent on every stream: a client
// certificate (from the TLS configuration, loaded again for each new
// connection) and a bearer token, whose file is read again as client-go
// does. A configuration with other authentication is refused.
package watchmux

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"golang.org/x/oauth2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"
	"k8s.io/client-go/util/flowcontrol"
)

// Limits of what is read from and offered to the API server.
const (
	// maxFrameSize is the largest frame read: HTTP/2's default, so
	// SETTINGS need not announce it.
	maxFrameSize = 16 << 10
	// maxHeaderList bounds a response's decoded header list.
	maxHeaderList = 64 << 10
	// maxErrorBody bounds the body of an answer other than 200.
	maxErrorBody = 64 << 10
	// streamWindow is each stream's receive window; events are consumed
	// as they arrive, so it only paces a burst.
	streamWindow = 1 << 20
	// connWindow is the connection's receive window.
	connWindow = 16 << 20
	// A connection with nothing read for pingAfter is sent a PING and
	// closed when nothing arrives for pingTimeout more, as client-go's
	// HTTP/2 transport does (ReadIdleTimeout 30s, PingTimeout 15s).
	pingAfter   = 30 * time.Second
	pingTimeout = 15 * time.Second
	// writeTimeout bounds one write to a connection.
	writeTimeout = 30 * time.Second
	dialTimeout  = 30 * time.Second
	// maxStreamID is the last client stream ID; a connection that used
	// them all takes no new streams.
	maxStreamID = 1<<31 - 1
)

// Handler receives one stream's events. Its methods are called on the
// connection's reader goroutine, one at a time, and must not block: a
// slow handler holds up every stream of its connection.
type Handler interface {
	// Event is one watch event. Returning false cancels the stream;
	// End is not called then.
	Event(watch.Event) bool
	// End is called once when the stream ends other than by Cancel or
	// Event returning false: nil when the API server ended the watch
	// (its timeout), else why. An answer other than 200 is an
	// *apierrors.StatusError.
	End(error)
}

// Request is one watch.
type Request struct {
	// Path is the resource's path, e.g. /api/v1/pods or
	// /api/v1/namespaces/ns/configmaps.
	Path string
	// Options are the watch's; Watch is set.
	Options metav1.ListOptions
	// User, if set, is impersonated (Impersonate-User, the only header
	// client-go's impersonating round tripper sends for a user name).
	User string
}

// Options configures a Mux.
type Options struct {
	// MaxEventSize bounds one event; default DefaultMaxEventSize.
	MaxEventSize int
	// MaxStreamsPerConn, if set, caps a connection's streams below the
	// server's MAX_CONCURRENT_STREAMS.
	MaxStreamsPerConn int
}

// Mux opens watches over its connections to one API server.
type Mux struct {
	host, path string // authority and path prefix
	tlsFor     func() (*tls.Config, error)
	token      oauth2.TokenSource
	bearer     string
	userAgent  string
	maxEvent   int
	maxStreams uint32
	limiter    flowcontrol.RateLimiter

	mu      sync.Mutex
	conns   []*conn
	dialing chan struct{} // closed when the dial under way ends
	closed  bool
}

// New builds a Mux for the API server and credentials of cfg. It refuses
// authentication other than client certificates and bearer tokens, and
// anything but https.
func New(cfg *rest.Config, o Options) (*Mux, error) {
	switch {
	case cfg.ExecProvider != nil || cfg.AuthProvider != nil:
		return nil, errors.New("watchmux: exec and auth-provider credentials are not supported; use a client certificate or a bearer token (file)")
	case cfg.Username != "" || cfg.Password != "":
		return nil, errors.New("watchmux: basic authentication is not supported; use a client certificate or a bearer token (file)")
	case cfg.Impersonate.UserName != "" || len(cfg.Impersonate.Groups) > 0 || cfg.Impersonate.UID != "" || len(cfg.Impersonate.Extra) > 0:
		return nil, errors.New("watchmux: the configuration must not impersonate anyone itself")
	case cfg.Transport != nil || cfg.WrapTransport != nil || cfg.Dial != nil || cfg.Proxy != nil:
		return nil, errors.New("watchmux: a configuration with its own transport, dialer or proxy is not supported")
	}
	u, err := url.Parse(cfg.Host)
	if err != nil || cfg.Host == "" {
		return nil, fmt.Errorf("watchmux: API server address %q: %v", cfg.Host, err)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("watchmux: API server address %q: only https is supported", cfg.Host)
	}
	if _, err := rest.TLSConfigFor(cfg); err != nil {
		return nil, fmt.Errorf("watchmux: TLS: %w", err)
	}
	cfg = rest.CopyConfig(cfg)
	m := &Mux{
		host: u.Host, path: strings.TrimSuffix(u.Path, "/"),
		tlsFor:    func() (*tls.Config, error) { return rest.TLSConfigFor(cfg) },
		bearer:    cfg.BearerToken,
		userAgent: cfg.UserAgent,
		maxEvent:  o.MaxEventSize,
		limiter:   cfg.RateLimiter,
	}
	if u.Port() == "" {
		m.host = net.JoinHostPort(u.Hostname(), "443")
	}
	if cfg.BearerTokenFile != "" {
		m.token = transport.NewCachedFileTokenSource(cfg.BearerTokenFile)
	}
	if m.userAgent == "" {
		m.userAgent = rest.DefaultKubernetesUserAgent()
	}
	if m.maxEvent <= 0 {
		m.maxEvent = DefaultMaxEventSize
	}
	if o.MaxStreamsPerConn > 0 {
		m.maxStreams = uint32(o.MaxStreamsPerConn)
	}
	return m, nil
}

// authorization is the Authorization header's value, "" for none. As
// client-go, a token file is read again (at most once a minute) and its
// last good token kept.
func (m *Mux) authorization() string {
	tok := m.bearer
	if m.token != nil {
		if t, err := m.token.Token(); err == nil {
			tok = t.AccessToken
		}
	}
	if tok == "" {
		return ""
	}
	return "Bearer " + tok
}

// Watch opens a watch; h receives its events until it ends. It waits for
// the configuration's rate limiter, if any, and dials a connection when
// every one is full, so it may block; it never calls h itself.
func (m *Mux) Watch(ctx context.Context, r Request, h Handler) (*Stream, error) {
	if m.limiter != nil {
		if err := m.limiter.Wait(ctx); err != nil {
			return nil, fmt.Errorf("watchmux: %w", err)
		}
	}
	opts := r.Options
	opts.Watch = true
	q, err := scheme.ParameterCodec.EncodeParameters(&opts, schema.GroupVersion{Version: "v1"})
	if err != nil {
		return nil, fmt.Errorf("watchmux: options: %w", err)
	}
	path := m.path + r.Path
	if enc := url.Values(q).Encode(); enc != "" {
		path += "?" + enc
	}
	for range 3 {
		c, err := m.conn(ctx)
		if err != nil {
			return nil, err
		}
		s, err := c.open(path, r.User, h)
		if errors.Is(err, errConnFull) {
			continue // taken meanwhile, or going away: another
		}
		return s, err
	}
	return nil, errors.New("watchmux: no connection took the stream")
}

var errConnFull = errors.New("connection full")

// conn returns a connection with room for one more stream, dialling one if
// none has. One dial at a time: watches opened together while it runs
// wait for it, and share the connection it makes.
func (m *Mux) conn(ctx context.Context) (*conn, error) {
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return nil, errors.New("watchmux: closed")
		}
		for _, c := range m.conns {
			if c.hasRoom() {
				m.mu.Unlock()
				return c, nil
			}
		}
		if wait := m.dialing; wait != nil {
			m.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("watchmux: %w", ctx.Err())
			}
		}
		done := make(chan struct{})
		m.dialing = done
		m.mu.Unlock()
		c, err := m.dial(ctx)
		m.mu.Lock()
		m.dialing = nil
		close(done)
		if err != nil {
			m.mu.Unlock()
			return nil, err
		}
		if m.closed {
			m.mu.Unlock()
			c.close(errors.New("watchmux: closed"))
			return nil, errors.New("watchmux: closed")
		}
		m.conns = append(m.conns, c)
		m.mu.Unlock()
		go c.read()
		return c, nil
	}
}

// Conns is how many connections are open.
func (m *Mux) Conns() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.conns)
}

// Disconnect closes every connection as a network failure would: their
// streams end with an error (their callers resume them), and the next
// watch dials again.
func (m *Mux) Disconnect() {
	m.mu.Lock()
	conns := append([]*conn(nil), m.conns...)
	m.mu.Unlock()
	for _, c := range conns {
		c.close(errors.New("watchmux: disconnected"))
	}
}

// Close closes every connection; their streams end with an error.
func (m *Mux) Close() {
	m.mu.Lock()
	m.closed = true
	conns := m.conns
	m.mu.Unlock()
	for _, c := range conns {
		c.close(errors.New("watchmux: closed"))
	}
}

// drop forgets c once it ended.
func (m *Mux) drop(c *conn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, x := range m.conns {
		if x == c {
			m.conns = append(m.conns[:i], m.conns[i+1:]...)
			return
		}
	}
}

func (m *Mux) dial(ctx context.Context) (*conn, error) {
	tc, err := m.tlsFor()
	if err != nil {
		return nil, fmt.Errorf("watchmux: TLS: %w", err)
	}
	if tc == nil {
		tc = &tls.Config{}
	}
	tc = tc.Clone()
	tc.NextProtos = []string{http2.NextProtoTLS}
	if tc.ServerName == "" {
		tc.ServerName, _, _ = net.SplitHostPort(m.host)
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}, Config: tc}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	nc, err := d.DialContext(dctx, "tcp", m.host)
	if err != nil {
		return nil, fmt.Errorf("watchmux: dial %s: %w", m.host, err)
	}
	if p := nc.(*tls.Conn).ConnectionState().NegotiatedProtocol; p != http2.NextProtoTLS {
		nc.Close()
		return nil, fmt.Errorf("watchmux: %s does not speak HTTP/2 (ALPN %q)", m.host, p)
	}
	c, err := m.handshake(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("watchmux: %s: %w", m.host, err)
	}
	return c, nil
}

// handshake writes the preface and settings and reads the server's
// settings, so the connection is used knowing its MAX_CONCURRENT_STREAMS.
func (m *Mux) handshake(nc net.Conn) (*conn, error) {
	c := &conn{
		m: m, nc: nc, bw: bufio.NewWriterSize(nc, 4<<10),
		streams: map[uint32]*Stream{}, nextID: 1,
		maxStreams: 100, peerMaxFrame: maxFrameSize, connLeft: connWindow,
	}
	c.fr = http2.NewFramer(c.bw, bufio.NewReaderSize(nc, 4<<10))
	c.fr.SetMaxReadFrameSize(maxFrameSize)
	c.fr.MaxHeaderListSize = maxHeaderList
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	nc.SetDeadline(time.Now().Add(dialTimeout))
	if _, err := io.WriteString(c.bw, http2.ClientPreface); err != nil {
		return nil, err
	}
	c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderList},
	)
	c.fr.WriteWindowUpdate(0, connWindow-65535)
	if err := c.bw.Flush(); err != nil {
		return nil, err
	}
	f, err := c.fr.ReadFrame()
	if err != nil {
		return nil, fmt.Errorf("reading the server's settings: %w", err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		return nil, fmt.Errorf("the server began with %v, not SETTINGS", f.Header().Type)
	}
	if err := c.settings(sf); err != nil {
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	c.idle = time.AfterFunc(pingAfter, c.quiet)
	return c, nil
}

// conn is one HTTP/2 connection. Its reader goroutine (read) alone reads
// frames; writes are serialised by wmu. Lock order: wmu, then mu.
type conn struct {
	m  *Mux
	nc net.Conn
	fr *http2.Framer

	wmu          sync.Mutex
	bw           *bufio.Writer
	henc         *hpack.Encoder
	hbuf         bytes.Buffer
	peerMaxFrame uint32

	mu         sync.Mutex
	streams    map[uint32]*Stream
	nextID     uint32
	maxStreams uint32
	goingAway  bool
	err        error // why it closed
	// gotFrame is set when a frame was read since the idle timer last
	// fired; pinged when a PING is outstanding.
	gotFrame atomic.Bool
	pinged   bool
	idle     *time.Timer

	// The reader goroutine's own: connection credit read but not yet
	// returned, and the window left.
	connUnacked uint32
	connLeft    int64
}

func (c *conn) hasRoom() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hasRoomLocked()
}

// settings applies the server's SETTINGS and acknowledges them.
func (c *conn) settings(sf *http2.SettingsFrame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	err := sf.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingMaxConcurrentStreams:
			c.mu.Lock()
			c.maxStreams = s.Val
			c.mu.Unlock()
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = s.Val
		case http2.SettingHeaderTableSize:
			c.henc.SetMaxDynamicTableSizeLimit(s.Val)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return c.flush(c.fr.WriteSettingsAck())
}

// flush sends what was written; wmu is held.
func (c *conn) flush(err error) error {
	if err != nil {
		return err
	}
	c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	return c.bw.Flush()
}

// open sends a stream's request.
func (c *conn) open(path, user string, h Handler) (*Stream, error) {
	auth := c.m.authorization()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	if !c.hasRoomLocked() {
		c.mu.Unlock()
		return nil, errConnFull
	}
	s := &Stream{c: c, id: c.nextID, h: h, left: streamWindow}
	c.nextID += 2
	c.streams[s.id] = s
	c.mu.Unlock()

	c.hbuf.Reset()
	enc := func(k, v string) { c.henc.WriteField(hpack.HeaderField{Name: k, Value: v}) }
	enc(":method", "GET")
	enc(":scheme", "https")
	enc(":authority", c.m.host)
	enc(":path", path)
	enc("accept", acceptHeader)
	enc("user-agent", c.m.userAgent)
	if auth != "" {
		c.henc.WriteField(hpack.HeaderField{Name: "authorization", Value: auth, Sensitive: true})
	}
	if user != "" {
		enc("impersonate-user", user)
	}
	block := c.hbuf.Bytes()
	first := true
	var err error
	for len(block) > 0 || first {
		n := min(len(block), int(c.peerMaxFrame))
		frag, end := block[:n], n == len(block)
		if first {
			err = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: s.id, BlockFragment: frag, EndStream: true, EndHeaders: end})
			first = false
		} else {
			err = c.fr.WriteContinuation(s.id, end, frag)
		}
		if err != nil {
			break
		}
		block = block[n:]
	}
	if err = c.flush(err); err != nil {
		c.forget(s) // the caller hears of it, not the handler
		c.close(fmt.Errorf("watchmux: write: %w", err))
		return nil, fmt.Errorf("watchmux: write: %w", err)
	}
	return s, nil
}

func (c *conn) hasRoomLocked() bool {
	limit := c.maxStreams
	if c.m.maxStreams > 0 {
		limit = min(limit, c.m.maxStreams)
	}
	return c.err == nil && !c.goingAway && c.nextID < maxStreamID && uint32(len(c.streams)) < limit
}

// write sends a frame built by f, closing the connection if it fails.
func (c *conn) write(f func(*http2.Framer) error) {
	c.wmu.Lock()
	err := c.flush(f(c.fr))
	c.wmu.Unlock()
	if err != nil {
		c.close(fmt.Errorf("watchmux: write: %w", err))
	}
}

// close ends the connection and every stream on it with err.
func (c *conn) close(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	streams := c.streams
	c.streams = map[uint32]*Stream{}
	if c.idle != nil {
		c.idle.Stop()
	}
	c.mu.Unlock()
	c.nc.Close()
	c.m.drop(c)
	for _, s := range streams {
		s.end(err)
	}
}

// quiet runs when the idle timer fires: ping a connection nothing was
// read from, close one that did not answer.
func (c *conn) quiet() {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	read, pinged := c.gotFrame.Swap(false), c.pinged
	switch {
	case read:
		c.pinged = false
		c.idle.Reset(pingAfter)
	case !pinged:
		c.pinged = true
		c.idle.Reset(pingTimeout)
	}
	c.mu.Unlock()
	switch {
	case read:
	case !pinged:
		c.write(func(fr *http2.Framer) error {
			return fr.WritePing(false, [8]byte{'w', 'a', 't', 'c', 'h', 'm', 'u', 'x'})
		})
	default:
		c.close(errors.New("watchmux: the API server did not answer a PING"))
	}
}

// stream returns the open stream id, or nil.
func (c *conn) stream(id uint32) *Stream {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streams[id]
}

// forget removes s; it reports whether s was still open.
func (c *conn) forget(s *Stream) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.streams[s.id] != s {
		return false
	}
	delete(c.streams, s.id)
	if len(c.streams) == 0 && c.err == nil {
		if c.goingAway {
			go c.close(errors.New("watchmux: connection went away"))
		} else {
			go c.m.closeIdle(c)
		}
	}
	return true
}

// closeIdle closes c if it has no stream and is not the only connection.
func (m *Mux) closeIdle(c *conn) {
	m.mu.Lock()
	if len(m.conns) < 2 {
		m.mu.Unlock()
		return
	}
	c.mu.Lock()
	idle := len(c.streams) == 0
	if idle {
		c.goingAway = true // takes no new stream
	}
	c.mu.Unlock()
	m.mu.Unlock()
	if idle {
		c.write(func(fr *http2.Framer) error { return fr.WriteGoAway(0, http2.ErrCodeNo, nil) })
		c.close(errors.New("watchmux: idle connection closed"))
	}
}

// read is the connection's goroutine.
func (c *conn) read() {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				if s := c.stream(se.StreamID); s != nil {
					s.fail(fmt.Errorf("watchmux: stream: %w", err), se.Code)
				}
				continue
			}
			c.close(fmt.Errorf("watchmux: read: %w", err))
			return
		}
		c.gotFrame.Store(true)
		if err := c.frame(f); err != nil {
			c.write(func(fr *http2.Framer) error { return fr.WriteGoAway(0, http2.ErrCodeProtocol, nil) })
			c.close(fmt.Errorf("watchmux: %w", err))
			return
		}
	}
}

// frame handles one frame; an error ends the connection.
func (c *conn) frame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if !f.IsAck() {
			return c.settings(f)
		}
	case *http2.MetaHeadersFrame:
		if s := c.stream(f.StreamID); s != nil {
			s.headers(f)
		}
	case *http2.DataFrame:
		n := f.Header().Length
		c.connLeft -= int64(n)
		if c.connLeft < 0 {
			return errors.New("the server overran the connection's flow-control window")
		}
		c.connUnacked += n
		if c.connUnacked >= connWindow/2 {
			inc := c.connUnacked
			c.connUnacked, c.connLeft = 0, c.connLeft+int64(inc)
			c.write(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(0, inc) })
		}
		if s := c.stream(f.StreamID); s != nil {
			s.data(f, n)
		}
	case *http2.RSTStreamFrame:
		if s := c.stream(f.StreamID); s != nil && s.c.forget(s) {
			s.end(fmt.Errorf("watchmux: the API server reset the stream: %v", f.ErrCode))
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			data := f.Data
			c.write(func(fr *http2.Framer) error { return fr.WritePing(true, data) })
		}
	case *http2.GoAwayFrame:
		c.mu.Lock()
		c.goingAway = true
		var cut []*Stream
		for id, s := range c.streams {
			if id > f.LastStreamID {
				cut = append(cut, s)
				delete(c.streams, id)
			}
		}
		empty := len(c.streams) == 0
		c.mu.Unlock()
		err := fmt.Errorf("watchmux: the API server is closing the connection (GOAWAY %v)", f.ErrCode)
		for _, s := range cut {
			s.end(err)
		}
		if empty {
			c.close(err)
		}
	case *http2.PushPromiseFrame:
		return errors.New("the server pushed though push is disabled")
	}
	return nil
}

// Stream is one watch on a connection.
type Stream struct {
	c  *conn
	id uint32
	h  Handler

	// mu is held while h is called; done is set once h is called no
	// more.
	mu   sync.Mutex
	done bool

	// The reader goroutine's own.
	status  int
	codec   *codec
	split   splitter
	errBody []byte
	left    int64  // receive window
	unacked uint32 // read, not yet returned
}

// Cancel ends the stream: no callback runs after it returns (it waits for
// one running), so it must not be called from s's own Handler (return
// false from Event instead).
func (s *Stream) Cancel() {
	s.mu.Lock()
	done := s.done
	s.done = true
	s.mu.Unlock()
	if !done && s.c.forget(s) {
		s.c.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(s.id, http2.ErrCodeCancel) })
	}
}

// end calls End once; s must already be forgotten by its connection.
func (s *Stream) end(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return
	}
	s.done = true
	s.h.End(err)
}

// fail ends the stream for err and resets it.
func (s *Stream) fail(err error, code http2.ErrCode) {
	if s.c.forget(s) {
		s.c.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(s.id, code) })
		s.end(err)
	}
}

// event hands one event to the handler; false when the stream is done.
func (s *Stream) event(ev watch.Event) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return false
	}
	if !s.h.Event(ev) {
		s.done = true
		return false
	}
	return true
}

func (s *Stream) headers(f *http2.MetaHeadersFrame) {
	if s.status != 0 { // trailers
		if f.StreamEnded() {
			s.finish()
		}
		return
	}
	if f.Truncated {
		s.fail(errors.New("watchmux: the response's headers are over the limit"), http2.ErrCodeProtocol)
		return
	}
	status, err := strconv.Atoi(f.PseudoValue("status"))
	if err != nil || status < 100 || status > 999 {
		s.fail(fmt.Errorf("watchmux: bad response status %q", f.PseudoValue("status")), http2.ErrCodeProtocol)
		return
	}
	if status < 200 {
		return // informational: the real answer follows
	}
	s.status = status
	if status == http.StatusOK {
		ct := ""
		for _, hf := range f.RegularFields() {
			if hf.Name == "content-type" {
				ct = hf.Value
			}
		}
		if s.codec, err = codecFor(ct); err != nil {
			s.fail(fmt.Errorf("watchmux: %w", err), http2.ErrCodeCancel)
			return
		}
		s.split = splitter{proto: s.codec.proto, max: s.c.m.maxEvent}
	}
	if f.StreamEnded() {
		s.finish()
	}
}

func (s *Stream) data(f *http2.DataFrame, n uint32) {
	s.left -= int64(n)
	if s.left < 0 {
		s.fail(errors.New("watchmux: the server overran the stream's flow-control window"), http2.ErrCodeFlowControl)
		return
	}
	if s.status == 0 {
		s.fail(errors.New("watchmux: DATA before the response's headers"), http2.ErrCodeProtocol)
		return
	}
	if s.status != http.StatusOK {
		room := maxErrorBody - len(s.errBody)
		s.errBody = append(s.errBody, f.Data()[:min(room, len(f.Data()))]...)
	} else {
		cancelled := false
		err := s.split.feed(f.Data(), func(frame []byte) error {
			ev, err := s.codec.decode(frame)
			if err != nil {
				return err
			}
			if !s.event(ev) {
				cancelled = true
				return errCancelled
			}
			return nil
		})
		if cancelled {
			if s.c.forget(s) {
				s.c.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(s.id, http2.ErrCodeCancel) })
			}
			return
		}
		if err != nil {
			s.fail(fmt.Errorf("watchmux: %w", err), http2.ErrCodeCancel)
			return
		}
	}
	if f.StreamEnded() {
		s.finish()
		return
	}
	s.unacked += n
	if s.unacked >= streamWindow/2 {
		inc := s.unacked
		s.unacked, s.left = 0, s.left+int64(inc)
		s.c.write(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(s.id, inc) })
	}
}

var errCancelled = errors.New("cancelled")

// finish ends a stream the server closed.
func (s *Stream) finish() {
	if !s.c.forget(s) {
		return
	}
	switch {
	case s.status != http.StatusOK:
		s.end(statusError(s.status, s.errBody))
	case s.split.pending():
		s.end(errors.New("watchmux: the watch ended inside an event"))
	default:
		s.end(nil)
	}
}

// statusError decodes the API server's Status from an error answer, as
// client-go does, or makes one from the HTTP status.
func statusError(code int, body []byte) error {
	for _, c := range []*codec{protoCodec, jsonCodec} {
		obj, err := runtime.Decode(c.object, body)
		if err != nil {
			continue
		}
		if st, ok := obj.(*metav1.Status); ok && st.Status == metav1.StatusFailure {
			return &apierrors.StatusError{ErrStatus: *st}
		}
	}
	return apierrors.NewGenericServerResponse(code, "GET", schema.GroupResource{}, "", strings.TrimSpace(string(body[:min(len(body), 512)])), 0, true)
}
