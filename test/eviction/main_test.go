// Package eviction is the acceptance test for keeping pods on offline edge
// nodes (and evicting them on opt-out): a real control plane whose eviction
// timeouts are shortened (node monitor grace period, default not-ready and
// unreachable toleration seconds), the real relay, real agents running
// real containers in containerd, and a TCP proxy between them that plays
// the lost uplink. It checks that pods stay bound and running on a node
// that is offline for longer than those timeouts, that the opt-outs bring
// back the usual eviction, and what the node conditions and the agent's
// metrics endpoint say meanwhile.
package eviction

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
)

// Shortened so that eviction happens within a test's patience.
const (
	gracePeriod       = 12 * time.Second
	tolerationSeconds = 5
	heartbeatInterval = 2 * time.Second
	leaseDuration     = 8 * time.Second
)

var (
	st    *stack.Stack
	relay *stack.Relay
)

func TestMain(m *testing.M) {
	secs := fmt.Sprint(tolerationSeconds)
	os.Exit(stack.RunMain(m, stack.MainOptions{
		Name: "eviction",
		Stack: stack.Options{
			ControlPlane: harness.Options{
				NodeMonitorGracePeriod: gracePeriod,
				ExtraAPIServerFlags: []string{
					"--default-not-ready-toleration-seconds=" + secs,
					"--default-unreachable-toleration-seconds=" + secs,
				},
			},
			Containerd:        true,
			HeartbeatInterval: heartbeatInterval,
			LeaseDuration:     leaseDuration,
		},
		Ready: func(_ context.Context, s *stack.Stack, r *stack.Relay) error {
			st, relay = s, r
			return nil
		},
	}))
}

func need(t *testing.T) { t.Helper(); stack.Need(t) }

var ctxFor = stack.Context
