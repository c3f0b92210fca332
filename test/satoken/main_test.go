// Package satoken tests service-account tokens on edge nodes end to end:
// a real control plane, the relay with its shipped RBAC, a real agent with
// containerd and runc, pods as the API server makes them (the projected
// kube-api-access volume), online, refreshed, and after an offline
// restart; and that a node never obtains another node's pod tokens.
package satoken

import (
	"context"
	"os"
	"testing"
	"time"

	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
)

const (
	heartbeatInterval = 2 * time.Second
	leaseDuration     = 8 * time.Second
	// refreshAfter is the relay's --token-refresh-after: the API server
	// issues no token shorter than ten minutes, so the tests make the
	// relay refresh earlier than a kubelet would (80 % of the lifetime).
	refreshAfter = 20 * time.Second
)

var (
	st    *stack.Stack
	relay *stack.Relay
)

func TestMain(m *testing.M) {
	os.Exit(stack.RunMain(m, stack.MainOptions{
		Name: "satoken",
		Stack: stack.Options{
			ControlPlane:      harness.Options{NodeMonitorGracePeriod: 16 * time.Second},
			HeartbeatInterval: heartbeatInterval,
			LeaseDuration:     leaseDuration,
			Containerd:        true,
		},
		RelayFlags: []string{"--token-refresh-after", refreshAfter.String()},
		Ready: func(_ context.Context, s *stack.Stack, r *stack.Relay) error {
			st, relay = s, r
			return nil
		},
	}))
}

func need(t *testing.T) { t.Helper(); stack.Need(t) }

var ctxFor = stack.Context
