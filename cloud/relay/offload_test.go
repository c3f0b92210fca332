package relay_test

import (
	"context"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"outpost.dev/cloud/asnode"
	"outpost.dev/cloud/relay"
	"outpost.dev/wire"
)

// blockingAsNode holds the hello of node slow in AsNode.For until
// released: the hello's work that waits on the API server.
type blockingAsNode struct {
	asnode.Same
	slow    string
	entered chan struct{}
	release chan struct{}
}

func (b blockingAsNode) For(node string) (asnode.Client, error) {
	if node == b.slow {
		close(b.entered)
		<-b.release
	}
	return b.Same.For(node)
}

// A hello whose work waits (here, for the API client acting as the node)
// holds back its own agent only: others connect and are answered
// meanwhile, and what the waiting agent sent after its hello is answered,
// in order, once the hello is.
func TestHelloWorkWaitsOffTheLoop(t *testing.T) {
	b := blockingAsNode{slow: "slow", entered: make(chan struct{}), release: make(chan struct{})}
	released := false
	defer func() {
		if !released {
			close(b.release)
		}
	}()
	tr := newTestRelay(t, func(cfg *relay.Config) {
		b.Same = asnode.Same{C: cfg.Client}
		cfg.AsNode = b
	})
	slow := tr.dial(t, "slow")
	send(t, slow, helloFrame(t))
	<-b.entered
	send(t, slow, encode(t, wire.TypeHeartbeat, 0, nil))
	send(t, slow, encode(t, wire.TypeNodeStatus, 1, &wire.NodeStatus{Node: info()}))

	for _, name := range []string{"fast-1", "fast-2", "fast-3"} {
		c := tr.hello(t, name)
		send(t, c, encode(t, wire.TypeHeartbeat, 0, nil))
		mustRecv(t, c, wire.TypeHeartbeat)
	}

	close(b.release)
	released = true
	mustRecv(t, slow, wire.TypeHelloAck)
	mustRecv(t, slow, wire.TypeHeartbeat)
	if f := mustRecv(t, slow, wire.TypeAck); f.Ack != 1 {
		t.Fatalf("ack %d, want 1", f.Ack)
	}
	waitFor(t, "four agents connected", func() bool { return tr.srv.Connected() == 4 })
}

// panickingAsNode panics for node boom: a relay bug in the hello's work.
type panickingAsNode struct{ asnode.Same }

func (p panickingAsNode) For(node string) (asnode.Client, error) {
	if node == "boom" {
		panic("a bug in the hello's work")
	}
	return p.Same.For(node)
}

// A panic in a connection's work, off the poller's loop, closes that
// connection with 1011 and is counted; the relay serves the others.
func TestPanicClosesOnlyThatConnection(t *testing.T) {
	reg := prometheus.NewRegistry()
	tr := newTestRelay(t, func(cfg *relay.Config) {
		cfg.AsNode = panickingAsNode{asnode.Same{C: cfg.Client}}
		cfg.Registry = reg
	})
	boom := tr.dial(t, "boom")
	send(t, boom, helloFrame(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, _, err := boom.Read(ctx)
		if err == nil {
			continue
		}
		if websocket.CloseStatus(err) != websocket.StatusInternalError {
			t.Fatalf("the panicking connection ended with %v, want close status %d", err, websocket.StatusInternalError)
		}
		break
	}
	c := tr.hello(t, "fine")
	send(t, c, encode(t, wire.TypeHeartbeat, 0, nil))
	mustRecv(t, c, wire.TypeHeartbeat)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var panics float64
	for _, mf := range mfs {
		if mf.GetName() == "outpost_relay_connection_panics_total" {
			panics = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if panics != 1 {
		t.Fatalf("outpost_relay_connection_panics_total = %v, want 1", panics)
	}
}
