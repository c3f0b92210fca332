package relay_test

import (
	"net/http"
	"testing"

	"outpost.dev/cloud/relay"
	"outpost.dev/wire"
)

// TestHandshakeAdmission: with one handshake allowed at a time, a second
// agent dialing while the first has not said hello is told to come back
// (503, Retry-After); once the first is past its hello-ack, it holds no
// admission, a new agent gets in, and the connected one keeps going.
func TestHandshakeAdmission(t *testing.T) {
	tr := newTestRelay(t, func(c *relay.Config) { c.MaxHandshakes = 1 })
	cert := tr.nodeCert(t, "gw-slow")
	slow, _, err := tr.dialCert(t, &cert)
	if err != nil {
		t.Fatal(err)
	}
	busy := tr.nodeCert(t, "gw-busy")
	_, resp, err := tr.dialCert(t, &busy)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "2" {
		var status int
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("second handshake: err %v, status %d; want 503 with Retry-After: 2", err, status)
	}
	// The slow agent finishes its hello: its admission is released.
	send(t, slow, helloFrame(t))
	mustRecv(t, slow, wire.TypeHelloAck)
	next := tr.hello(t, "gw-next")
	send(t, slow, encode(t, wire.TypeHeartbeat, 0, nil))
	mustRecv(t, slow, wire.TypeHeartbeat)
	send(t, next, encode(t, wire.TypeHeartbeat, 0, nil))
	mustRecv(t, next, wire.TypeHeartbeat)
}
