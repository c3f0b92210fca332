// Package e2e tests Outpost end to end: a real kube-apiserver, controller
// manager and scheduler, the real relay and agent binaries, real kubectl.
package e2e

import (
	"context"
	"os"
	"testing"
	"time"

	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
)

// Shortened so that a lost agent shows within a test's patience.
const (
	gracePeriod       = 16 * time.Second
	heartbeatInterval = 2 * time.Second
	leaseDuration     = 8 * time.Second
)

var (
	st    *stack.Stack
	relay *stack.Relay
)

func TestMain(m *testing.M) {
	os.Exit(stack.RunMain(m, stack.MainOptions{
		Name: "e2e",
		Stack: stack.Options{
			ControlPlane:      harness.Options{NodeMonitorGracePeriod: gracePeriod},
			HeartbeatInterval: heartbeatInterval,
			LeaseDuration:     leaseDuration,
		},
		Ready: func(_ context.Context, s *stack.Stack, r *stack.Relay) error {
			st, relay = s, r
			return nil
		},
	}))
}

func needStack(t *testing.T) { t.Helper(); stack.Need(t) }

var ctxFor = stack.Context
