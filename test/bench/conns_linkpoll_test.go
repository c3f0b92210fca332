package bench

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"outpost.dev/cloud/linkpoll"
	"outpost.dev/wire"
)

// linkpollConns is the event-driven design of cloud/linkpoll, as the
// relay serves its links: the standard library's crypto/tls and
// net/http serve the TLS handshake and the upgrade request on its
// connection goroutine (the relay bounds those with
// Config.MaxHandshakes);
// github.com/gobwas/ws answers the upgrade; then linkpoll adopts the
// connection, with its TLS 1.3 traffic secrets, and that goroutine ends:
// no *tls.Conn is kept. An epoll loop per CPU (golang.org/x/sys/unix)
// runs the TLS 1.3 record layer, decrypts what arrives without blocking and
// hands each message to OnMessage on the loop's goroutine; writes never
// wait (queued, bounded, flushed on EPOLLOUT); one sweep closes silent
// connections.
type linkpollConns struct {
	connCounters
	ln net.Listener
	hs *http.Server
	p  *linkpoll.Poller
}

func startLinkpollConns(tb testing.TB, serving tls.Certificate, verify func([]*x509.Certificate) error) connServer {
	s := &linkpollConns{}
	var err error
	if s.p, err = linkpoll.New(linkpoll.Config{MaxMessage: wire.MaxFrameSize, Silent: 3 * connHeartbeat}); err != nil {
		tb.Fatal(err)
	}
	if s.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		tb.Fatal(err)
	}
	tc := s.p.TLSConfig(serverTLS(serving, verify))
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+wire.PathConnect, func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "a node certificate is required", http.StatusUnauthorized)
			return
		}
		conn, rw, _, err := ws.UpgradeHTTP(r, w)
		if err != nil {
			return
		}
		tc, ok := conn.(*tls.Conn)
		if !ok || rw.Reader.Buffered() > 0 {
			conn.Close()
			return
		}
		if r.TLS.Version == tls.VersionTLS13 {
			s.tls13.Add(1)
		}
		s.connected.Add(1)
		if _, err := s.p.Adopt(tc, func(*linkpoll.Conn) linkpoll.Handler { return linkpollHandler{s} }); err != nil {
			s.connected.Add(-1)
		}
	})
	s.hs = &http.Server{Handler: mux, TLSConfig: tc, ReadHeaderTimeout: 10 * time.Second}
	go s.hs.ServeTLS(s.p.Listener(s.ln), "", "")
	return s
}

type linkpollHandler struct{ s *linkpollConns }

func (h linkpollHandler) Message(c *linkpoll.Conn, msg []byte) {
	if !isHeartbeat(msg) {
		c.Close(ws.StatusPolicyViolation, "heartbeats only")
		return
	}
	if c.WriteMessage(heartbeatFrame) == nil {
		h.s.echoed.Add(1)
	}
}

func (h linkpollHandler) Closed(c *linkpoll.Conn, err error) { h.s.connected.Add(-1) }

func (s *linkpollConns) addr() string { return s.ln.Addr().String() }

func (s *linkpollConns) close() {
	s.hs.Close()
	s.p.Close()
}
