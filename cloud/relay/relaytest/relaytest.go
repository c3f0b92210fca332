// Package relaytest serves a relay.Server over TLS on loopback for tests
// and benchmarks, as outpost-relay serves it: a serving certificate from
// the relay's CA and the relay's own TLS configuration (client
// certificates verified by the relay, with the expiry grace).
package relaytest

import (
	"net/http/httptest"
	"testing"
	"time"

	"outpost.dev/cloud/relay"
)

// Serve starts a relay with cfg behind an httptest TLS server. Both are
// closed when tb ends, the relay first (it closes agent connections with
// "going away").
func Serve(tb testing.TB, cfg relay.Config) (*relay.Server, *httptest.Server) {
	tb.Helper()
	srv, err := relay.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := cfg.CA.ServingCert([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		srv.Close()
		tb.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv)
	hs.TLS = srv.TLSConfig(cert)
	hs.StartTLS()
	tb.Cleanup(func() {
		srv.Close()
		hs.Close()
	})
	return srv, hs
}
