package stack

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"outpost.dev/cloud/asnode"
	"outpost.dev/cloud/nodegrant"
	"outpost.dev/cloud/pki"
	"outpost.dev/cloud/relay"
	"outpost.dev/test/harness"
	"outpost.dev/test/wait"
)

// InProcess is a real control plane with what a relay served in the test's
// own process (cloud/relay/relaytest) needs on it: API clients as the
// cluster admin, node impersonation, a relay CA and the relay's
// namespace. Tests and benchmarks of the relay's own behaviour use it
// where the relay's binary and shipped RBAC (Start) are not the point.
type InProcess struct {
	CP *harness.ControlPlane
	// Client is the cluster admin's, for setting a test's scene.
	Client kubernetes.Interface
	// Relay and AsNode are what the relay acts with: its own client and
	// its node impersonation, the admin's unless UseRelayRBAC made them
	// the relay ServiceAccount's.
	Relay   kubernetes.Interface
	AsNode  *asnode.Impersonating
	Dynamic dynamic.Interface
	CA      *pki.CA
	cfg     *rest.Config // the admin's, for its QPS and burst
	rbac    bool         // UseRelayRBAC was called
}

// StartInProcess starts the control plane with opts, stopped when tb
// ends, and makes the clients, each allowed qps requests a second (burst
// at once).
func StartInProcess(tb testing.TB, ctx context.Context, opts harness.Options, qps float32, burst int) *InProcess {
	tb.Helper()
	cp, err := harness.StartControlPlane(ctx, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cp.Stop() })
	cfg := cp.RESTConfig()
	cfg.QPS, cfg.Burst = qps, burst
	e := &InProcess{CP: cp, cfg: cfg}
	if e.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		tb.Fatal(err)
	}
	e.Relay = e.Client
	if e.Dynamic, err = dynamic.NewForConfig(cfg); err != nil {
		tb.Fatal(err)
	}
	if e.AsNode, err = asnode.New(cfg); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.AsNode.Close)
	if e.CA, err = pki.Generate(time.Now()); err != nil {
		tb.Fatal(err)
	}
	// Where the relay keeps its node identity records.
	_, err = e.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: relay.DefaultNamespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		tb.Fatal(err)
	}
	return e
}

// UseRelayRBAC makes Relay and AsNode act with the relay's shipped rights
// (cloud/deploy/rbac.yaml and policy.yaml, applied to the control plane),
// each allowed as many requests as Client, so that a test of what the
// relay writes also shows that the relay may write it.
func (e *InProcess) UseRelayRBAC(tb testing.TB, ctx context.Context) {
	tb.Helper()
	cfg, err := RelayRESTConfig(ctx, e.CP)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.QPS, cfg.Burst = e.cfg.QPS, e.cfg.Burst
	if e.Relay, err = kubernetes.NewForConfig(cfg); err != nil {
		tb.Fatal(err)
	}
	if e.AsNode, err = asnode.New(cfg); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.AsNode.Close)
	e.rbac = true
}

// AllowNode lets the relay act as node (cloud/nodegrant, as "outpost-relay
// node allow" does) and waits until the API server lets AsNode read as it.
// Under the admin's rights (no UseRelayRBAC) there is nothing to allow.
func (e *InProcess) AllowNode(tb testing.TB, ctx context.Context, node string) {
	tb.Helper()
	if !e.rbac {
		return
	}
	if err := nodegrant.Allow(ctx, e.Client, node); err != nil {
		tb.Fatal(err)
	}
	as, err := e.AsNode.For(node)
	if err != nil {
		tb.Fatal(err)
	}
	// The grant is aggregated by the controller manager, then seen by
	// the API server's authorizer: a read as the node says when.
	wait.State(tb, ctx, time.Minute, "the relay allowed to act as node "+node, func() (bool, string) {
		_, err := as.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		return err == nil || apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}

// RelayConfig is a relay's configuration with e's client, node
// impersonation and CA, logging to log. It leaves Dynamic nil (no Device
// or AgentUpgrade controllers): a caller that wants them sets it.
func (e *InProcess) RelayConfig(log *slog.Logger) relay.Config {
	return relay.Config{Client: e.Relay, AsNode: e.AsNode, CA: e.CA, Log: log}
}
