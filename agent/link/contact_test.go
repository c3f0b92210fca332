package link

import (
	"testing"
	"time"

	"outpost.dev/agent/internal/testpki"
)

// LastContact is zero before any relay answered, then moves with every
// frame from the relay (heartbeats included), and stays put once the link
// is down: it says since when the node has been out of touch.
func TestLastContact(t *testing.T) {
	ca := testpki.NewCA(t, "relay-ca")
	stop := make(chan struct{})
	r := newRelay(t, ca, func(p *peer) {
		if p.n > 1 {
			return // the relay is gone: no hello-ack any more
		}
		p.ack(1)
		go func() { <-stop; p.c.CloseNow() }()
		p.serve(true)
	})
	before := time.Now()
	a := startAgent(t, r.srv.URL, ca, ca, time.Now().Add(time.Hour), nil)
	if !a.link.LastContact().IsZero() && a.link.LastContact().Before(before) {
		t.Fatalf("LastContact %v before the first connection", a.link.LastContact())
	}
	eventually(t, "first contact", func() bool { return !a.link.LastContact().IsZero() })
	first := a.link.LastContact()
	if first.Before(before) {
		t.Fatalf("LastContact %v is before the agent started (%v)", first, before)
	}
	eventually(t, "a later heartbeat moves it", func() bool { return a.link.LastContact().After(first) })

	close(stop)
	eventually(t, "disconnected", func() bool { return !a.link.Connected() })
	last := a.link.LastContact()
	if last.IsZero() || time.Since(last) > 5*time.Second {
		t.Fatalf("LastContact %v after disconnect", last)
	}
	// Tried again, was not answered, and tried once more: the second
	// attempt has run its course.
	r.waitFor(t, 3, "hello")
	if got := a.link.LastContact(); !got.Equal(last) {
		t.Fatalf("LastContact moved from %v to %v without a relay", last, got)
	}
}
