//go:build tools

// Package metricsserver records the command built from this module so
// that go mod tidy keeps its dependencies.
package metricsserver

import (
	_ "sigs.k8s.io/metrics-server/cmd/metrics-server"
)
