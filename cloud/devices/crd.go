package devices

import (
	"context"
	_ "embed"
	"log/slog"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"outpost.dev/cloud/crd"
)

// CRDManifest is the Device CustomResourceDefinition, the same file as
// cloud/deploy/devices-crd.yaml.
//
//go:embed crd.yaml
var CRDManifest []byte

// CRD returns the manifest as an object, annotated with its hash.
func CRD() (*unstructured.Unstructured, error) { return crd.Manifest(CRDManifest) }

// EnsureCRD creates or updates the Device CRD and waits until it is
// established, as crd.Ensure does.
func EnsureCRD(ctx context.Context, dyn dynamic.Interface, log *slog.Logger) error {
	return crd.Ensure(ctx, dyn, log, CRDManifest, Kind, "cloud/deploy/devices-crd.yaml")
}
