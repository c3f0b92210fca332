package relay_test

import (
	"testing"

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
