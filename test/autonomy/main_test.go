// Package autonomy tests edge autonomy end to end: a real control
// plane, relay, agents and containerd; the link cut mid-frame, the relay
// down, the agent restarted and killed, the gateway "rebooted" (its tasks
// killed and deleted) while offline.
package autonomy

import (
	"context"
	"os"
	"testing"
	"time"

	"outpost.dev/test/stack"
)

// Shortened so that the relay notices a dead link quickly; the node
// controller's grace period stays at its default (40 s) so that nothing is
// evicted within a test.
const (
	heartbeatInterval = 2 * time.Second
	leaseDuration     = 8 * time.Second
)

var (
	st    *stack.Stack
	relay *stack.Relay
)

func TestMain(m *testing.M) {
	os.Exit(stack.RunMain(m, stack.MainOptions{
		Name: "autonomy",
		Stack: stack.Options{
			HeartbeatInterval: heartbeatInterval,
			LeaseDuration:     leaseDuration,
			Containerd:        true,
		},
		Ready: func(_ context.Context, s *stack.Stack, r *stack.Relay) error {
			st, relay = s, r
			return nil
		},
	}))
}

func needStack(t *testing.T) { t.Helper(); stack.Need(t) }

var ctxFor = stack.Context
