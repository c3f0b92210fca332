// Package crd is what Outpost's custom resources share: their API group
// and version (outpost.dev/v1alpha1), a kind's resource, its object (an
// Object of its spec and status, hand-written: no code generation), the
// conversion of what the dynamic client returns into it, and the relay's
// one way to install a CRD (Ensure). The kinds themselves are in
// cloud/devices (Device) and cloud/upgrade (AgentUpgrade).
package crd

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The API group and version of every Outpost kind.
const (
	Group      = "outpost.dev"
	Version    = "v1alpha1"
	APIVersion = Group + "/" + Version
)

// GVR is the group-version-resource of an Outpost kind's resource
// ("devices").
func GVR(resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: Group, Version: Version, Resource: resource}
}

// Object is an Outpost kind's object: its type, metadata, the spec its
// user writes and the status the relay writes.
type Object[Spec, Status any] struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              Spec   `json:"spec"`
	Status            Status `json:"status,omitempty"`
}

// FromUnstructured converts u, as the dynamic client returns it, into the
// kind's type T; an error names the kind and the object (namespace/name
// where it has a namespace).
func FromUnstructured[T any](kind string, u *unstructured.Unstructured) (*T, error) {
	var v T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.UnstructuredContent(), &v); err != nil {
		name := u.GetName()
		if ns := u.GetNamespace(); ns != "" {
			name = ns + "/" + name
		}
		return nil, fmt.Errorf("%s %s: %w", strings.ToLower(kind), name, err)
	}
	return &v, nil
}
