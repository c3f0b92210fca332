// Package nodegrant says which nodes the relay may act as.
//
// The relay impersonates system:node:<name> for everything it does on a
// node's behalf (package asnode). RBAC cannot limit that right to nodes
// with a label, so the relay is given it node by node instead: one
// ClusterRole per edge node, outpost-relay-node:<name>, whose single rule
// is the verb impersonate:arbitrary-node on that node's name, aggregated
// (by the controller manager) into the ClusterRole outpost-relay-nodes
// that cloud/deploy/rbac.yaml binds to the relay. The relay cannot add
// names itself: it holds no right on RBAC objects, and creating such a
// role takes the right it grants (RBAC's escalation check), so it is an
// administrator's act, done with "outpost-relay node allow NAME" and the
// administrator's kubeconfig.
// A compromised relay can therefore act only as the edge nodes an
// administrator allowed, never as a control-plane or worker node.
package nodegrant

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"outpost.dev/cloud/asnode"
	"outpost.dev/cloud/nodes"
)

// Names shared with cloud/deploy/rbac.yaml.
const (
	// AggregatedRole is the ClusterRole bound to the relay that gathers
	// every node's grant.
	AggregatedRole = "outpost-relay-nodes"
	// AggregateLabel, set to "true", puts a ClusterRole's rules into
	// AggregatedRole.
	AggregateLabel = "outpost.dev/aggregate-to-relay-nodes"
	// Verb is the constrained impersonation verb for a node, checked on
	// resource nodes of API group authentication.k8s.io with the node's
	// name.
	Verb       = "impersonate:arbitrary-node"
	rolePrefix = "outpost-relay-node:"
)

// RoleName is the name of node's grant.
func RoleName(node string) string { return rolePrefix + node }

// rule is the one rule of node's grant.
func rule(node string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"nodes"},
		ResourceNames: []string{node}, Verbs: []string{asnode.Verb}}
}

// Allow lets the relay act as node: it creates node's grant, or leaves
// one already there. c must be an administrator's.
func Allow(ctx context.Context, c kubernetes.Interface, node string) error {
	// An empty name would make the rule match every node.
	if err := nodes.CheckName(node); err != nil {
		return err
	}
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: RoleName(node), Labels: map[string]string{AggregateLabel: "true"}},
		Rules:      []rbacv1.PolicyRule{rule(node)},
	}
	_, err := c.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{})
	switch {
	case err == nil, apierrors.IsAlreadyExists(err):
		return nil
	case apierrors.IsForbidden(err):
		return fmt.Errorf("allow the relay to act as node %q: %w (use an administrator's kubeconfig: granting impersonation of a node takes that right)", node, err)
	default:
		return fmt.Errorf("allow the relay to act as node %q: %w", node, err)
	}
}

// Allowed reports whether AggregatedRole carries node's grant, which the
// controller manager adds shortly after Allow.
func Allowed(ctx context.Context, c kubernetes.Interface, node string) (bool, error) {
	r, err := c.RbacV1().ClusterRoles().Get(ctx, AggregatedRole, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, fmt.Errorf("ClusterRole %s not found: apply cloud/deploy/rbac.yaml first", AggregatedRole)
	}
	if err != nil {
		return false, err
	}
	want := rule(node)
	return slices.ContainsFunc(r.Rules, func(r rbacv1.PolicyRule) bool {
		return slices.Equal(r.APIGroups, want.APIGroups) && slices.Equal(r.Resources, want.Resources) &&
			slices.Equal(r.ResourceNames, want.ResourceNames) && slices.Equal(r.Verbs, want.Verbs)
	}), nil
}

// WaitAllowed polls Allowed until it holds or ctx ends.
func WaitAllowed(ctx context.Context, c kubernetes.Interface, node string) error {
	for {
		ok, err := Allowed(ctx, c, node)
		if ok || (err != nil && ctx.Err() == nil && !isTransient(err)) {
			return err
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New("the controller manager has not aggregated it yet: is kube-controller-manager running with the clusterrole-aggregation controller?")
			}
			return fmt.Errorf("waiting for ClusterRole %s to include node %q: %w", AggregatedRole, node, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func isTransient(err error) bool {
	return apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) || apierrors.IsServiceUnavailable(err)
}
