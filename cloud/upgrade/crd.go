package upgrade

import (
	"context"
	_ "embed"
	"log/slog"

	"k8s.io/client-go/dynamic"

	"outpost.dev/cloud/crd"
)

// CRDManifest is the AgentUpgrade CustomResourceDefinition, the same file
// as cloud/deploy/agentupgrades-crd.yaml.
//
//go:embed crd.yaml
var CRDManifest []byte

// EnsureCRD creates or updates the AgentUpgrade CRD and waits until it is
// established, as crd.Ensure does.
func EnsureCRD(ctx context.Context, dyn dynamic.Interface, log *slog.Logger) error {
	return crd.Ensure(ctx, dyn, log, CRDManifest, Kind, "cloud/deploy/agentupgrades-crd.yaml")
}
