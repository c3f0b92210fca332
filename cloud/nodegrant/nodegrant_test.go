package nodegrant

import (
	"context"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestAllowGrantsExactlyOneNode(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientset(&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: AggregatedRole}})
	for _, bad := range []string{"", "UPPER", "a/b"} {
		if err := Allow(ctx, c, bad); err == nil {
			t.Errorf("Allow(%q) succeeded; an empty or invalid name must be refused (an empty resourceNames matches every node)", bad)
		}
	}
	if err := Allow(ctx, c, "gw-1"); err != nil {
		t.Fatal(err)
	}
	if err := Allow(ctx, c, "gw-1"); err != nil {
		t.Fatalf("allowing a node twice: %v", err)
	}
	r, err := c.RbacV1().ClusterRoles().Get(ctx, RoleName("gw-1"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Labels[AggregateLabel] != "true" || len(r.Rules) != 1 {
		t.Fatalf("grant %+v", r)
	}
	got := r.Rules[0]
	if len(got.ResourceNames) != 1 || got.ResourceNames[0] != "gw-1" || len(got.Verbs) != 1 || got.Verbs[0] != "impersonate:arbitrary-node" ||
		len(got.APIGroups) != 1 || got.APIGroups[0] != "authentication.k8s.io" || len(got.Resources) != 1 || got.Resources[0] != "nodes" {
		t.Fatalf("rule %+v", got)
	}

	// The aggregated role carries it once the controller manager copied it.
	if ok, err := Allowed(ctx, c, "gw-1"); ok || err != nil {
		t.Fatalf("Allowed before aggregation: %v %v", ok, err)
	}
	agg, _ := c.RbacV1().ClusterRoles().Get(ctx, AggregatedRole, metav1.GetOptions{})
	agg.Rules = append(agg.Rules, got)
	if _, err := c.RbacV1().ClusterRoles().Update(ctx, agg, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if ok, err := Allowed(ctx, c, "gw-1"); !ok || err != nil {
		t.Fatalf("Allowed after aggregation: %v %v", ok, err)
	}
	if ok, _ := Allowed(ctx, c, "gw-2"); ok {
		t.Fatal("gw-2 allowed by gw-1's grant")
	}
}
