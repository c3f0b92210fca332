package link_test

import (
	"context"
	"log/slog"
	"os"

	"outpost.dev/agent/link"
	"outpost.dev/agent/store"
	"outpost.dev/wire"
)

// A later subsystem (the outbox) resends unacked reports on each connect
// and learns about acks through the handler.
func Example() {
	st, err := store.Open("/var/lib/outpost")
	if err != nil {
		return
	}
	defer st.Close()
	id, err := st.LoadIdentity()
	if err != nil {
		return
	}
	acks := make(chan uint64, 16)
	l := link.New(link.Config{
		Server: id.Server, NodeName: id.NodeName,
		CertPEM: id.CertPEM, KeyPEM: id.KeyPEM, CAPEM: id.CAPEM,
		AgentVersion: "v0.1.0",
		NodeInfo:     func() (wire.NodeInfo, error) { return wire.NodeInfo{ /* nodeinfo.Read(...) */ }, nil },
		Log:          slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	// The handlers come with Run: what they use is built before it.
	_ = l.Run(context.Background(), link.Handlers{
		OnConnect: func(wire.HelloAck) {
			// Resend what the outbox holds; ErrQueueFull means try again
			// after the next ack, never block here.
			_ = l.Send(wire.TypeNodeStatus, 1, &wire.NodeStatus{})
		},
		Frame: func(f wire.Frame) {
			if f.Type == wire.TypeAck {
				select {
				case acks <- f.Ack:
				default: // bounded: a later ack covers this one
				}
			}
		},
	})
}
