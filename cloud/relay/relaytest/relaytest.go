// Package relaytest serves a relay.Server over TLS on loopback for tests
// and benchmarks, as outpost-relay serves it: a serving certificate from
// the relay's CA and the relay's own TLS configuration (client
// certificates verified by the relay, with the expiry grace).
package relaytest

import (
	"log/slog"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	"outpost.dev/cloud/relay"
)

// Serve starts a relay with cfg behind an httptest TLS server. Both are
// closed when tb ends, the relay first (it closes agent connections with
// "going away").
func Serve(tb testing.TB, cfg relay.Config) (*relay.Server, *httptest.Server) {
	return ServeAt(tb, cfg, "127.0.0.1:0")
}

// ServeAt is Serve listening on addr: a relay started again where one
// that was closed listened (its agents reconnect to the same address).
func ServeAt(tb testing.TB, cfg relay.Config, addr string) (*relay.Server, *httptest.Server) {
	tb.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := relay.New(cfg)
	if err != nil {
		ln.Close()
		tb.Fatal(err)
	}
	cert, err := cfg.CA.ServingCert([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		ln.Close()
		srv.Close()
		tb.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv)
	hs.Listener.Close()
	hs.Listener = srv.Listener(ln)
	hs.TLS = srv.TLSConfig(cert)
	if cfg.Log != nil { // TLS handshake noise (probes, scanners) at debug, as outpost-relay logs it
		hs.Config.ErrorLog = slog.NewLogLogger(cfg.Log.Handler(), slog.LevelDebug)
	}
	hs.StartTLS()
	tb.Cleanup(func() {
		srv.Close()
		hs.Close()
	})
	return srv, hs
}
