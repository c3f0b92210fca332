package demo

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// TestSample: the sample fills in its node and image everywhere and stays
// a Deployment that kubectl can apply, pinned to the edge node.
func TestSample(t *testing.T) {
	s := Sample("edge-7", "127.0.0.1:5000/test/busybox:1")
	if strings.Contains(s, "{{") {
		t.Fatalf("a placeholder is left:\n%s", s)
	}
	docs := strings.Split(s, "\n---\n")
	if len(docs) != 2 || !strings.Contains(docs[1], "nodeName: \"edge-7\"") || !strings.Contains(docs[1], "%RH") {
		t.Fatalf("want a Deployment and a Device on edge-7:\n%s", s)
	}
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict([]byte(docs[0]), &d); err != nil {
		t.Fatal(err)
	}
	spec := d.Spec.Template.Spec
	if d.Name != "hello" || spec.NodeSelector["kubernetes.io/hostname"] != "edge-7" || spec.Containers[0].Image != "127.0.0.1:5000/test/busybox:1" {
		t.Errorf("deployment %s: node selector %v, image %s", d.Name, spec.NodeSelector, spec.Containers[0].Image)
	}
}
