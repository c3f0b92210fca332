package crd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
)

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// hashAnnotation records which manifest the relay installed, so relays
// only write the CRD when their manifest differs.
const hashAnnotation = "outpost.dev/manifest-sha256"

// Manifest returns a CRD manifest as an object, annotated with its hash.
func Manifest(manifest []byte) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	if err := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096).Decode(&u.Object); err != nil {
		return nil, fmt.Errorf("CRD manifest: %w", err)
	}
	sum := sha256.Sum256(manifest)
	u.SetAnnotations(map[string]string{hashAnnotation: hex.EncodeToString(sum[:8])})
	return u, nil
}

// Ensure creates or updates the CRD in manifest (of kind, shipped as
// file) and waits until it is established: the relay's one way to install
// its CRDs. Without the RBAC to do so it logs what to apply instead and
// returns nil: an operator may install the CRD separately.
func Ensure(ctx context.Context, dyn dynamic.Interface, log *slog.Logger, manifest []byte, kind, file string) error {
	want, err := Manifest(manifest)
	if err != nil {
		return fmt.Errorf("%s: %w", kind, err)
	}
	name := want.GetName()
	api := dyn.Resource(crdGVR)
	forbidden := func(verb string, err error) error {
		log.Warn("the relay may not "+verb+" the "+kind+" CRD; apply "+file+
			" (kubectl apply -f "+file+") or grant customresourcedefinitions "+verb+" as cloud/deploy/rbac.yaml does",
			"crd", name, "err", err)
		return nil
	}
	cur, err := api.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if _, err := api.Create(ctx, want, metav1.CreateOptions{FieldManager: "outpost-relay"}); err != nil {
			if apierrors.IsForbidden(err) {
				return forbidden("create", err)
			}
			if !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("create the %s CRD: %w", kind, err)
			}
		} else {
			log.Info("installed the "+kind+" CRD", "crd", name)
		}
	case apierrors.IsForbidden(err):
		return forbidden("get", err)
	case err != nil:
		return fmt.Errorf("read the %s CRD: %w", kind, err)
	case cur.GetAnnotations()[hashAnnotation] != want.GetAnnotations()[hashAnnotation]:
		want.SetResourceVersion(cur.GetResourceVersion())
		if _, err := api.Update(ctx, want, metav1.UpdateOptions{FieldManager: "outpost-relay"}); err != nil {
			if apierrors.IsForbidden(err) {
				return forbidden("update", err)
			}
			// Another replica may have won; the next start checks again.
			log.Warn("updating the "+kind+" CRD failed", "err", err)
		} else {
			log.Info("updated the "+kind+" CRD", "crd", name)
		}
	}
	// Wait (briefly) for Established, so the first watches do not fail.
	deadline := time.Now().Add(15 * time.Second)
	for {
		cur, err := api.Get(ctx, name, metav1.GetOptions{})
		if err == nil && established(cur) {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			log.Warn("the "+kind+" CRD is not established yet; its controller starts when it is", "err", err)
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func established(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}
