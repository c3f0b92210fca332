package crd

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

type thing = Object[struct {
	Size int `json:"size"`
}, struct{}]

func TestFromUnstructured(t *testing.T) {
	for _, tt := range []struct {
		name    string
		obj     map[string]any
		size    int
		wantErr string // a text the error has; "" for none
	}{
		{name: "converted", size: 3, obj: map[string]any{
			"apiVersion": APIVersion, "kind": "Thing",
			"metadata": map[string]any{"name": "a", "namespace": "ns"}, "spec": map[string]any{"size": int64(3)}}},
		{name: "namespaced: namespace/name in the error", wantErr: "thing ns/a: ", obj: map[string]any{
			"metadata": map[string]any{"name": "a", "namespace": "ns"}, "spec": map[string]any{"size": "three"}}},
		{name: "cluster scoped: name in the error", wantErr: "thing a: ", obj: map[string]any{
			"metadata": map[string]any{"name": "a"}, "spec": "not an object"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FromUnstructured[thing]("Thing", &unstructured.Unstructured{Object: tt.obj})
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("FromUnstructured = %+v, %v; want an error beginning %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != "a" || got.Namespace != "ns" || got.Spec.Size != tt.size || got.APIVersion != "outpost.dev/v1alpha1" {
				t.Fatalf("FromUnstructured = %+v", got)
			}
		})
	}
}

func TestGVR(t *testing.T) {
	if g := GVR("devices"); g.Group != "outpost.dev" || g.Version != "v1alpha1" || g.Resource != "devices" {
		t.Fatalf("GVR = %v", g)
	}
}
