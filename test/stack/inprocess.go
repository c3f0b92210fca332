package stack

import (
	"context"
	"log/slog"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"outpost.dev/cloud/asnode"
	"outpost.dev/cloud/pki"
	"outpost.dev/cloud/relay"
	"outpost.dev/test/harness"
)

// InProcess is a real control plane with what a relay served in the test's
// own process (cloud/relay/relaytest) needs on it: API clients as the
// cluster admin, node impersonation, a relay CA and the relay's
// namespace. Tests and benchmarks of the relay's own behaviour use it
// where the relay's binary and shipped RBAC (Start) are not the point.
type InProcess struct {
	CP      *harness.ControlPlane
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	AsNode  *asnode.Impersonating
	CA      *pki.CA
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
	e := &InProcess{CP: cp}
	if e.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		tb.Fatal(err)
	}
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

// RelayConfig is a relay's configuration with e's client, node
// impersonation and CA, logging to log. It leaves Dynamic nil (no Device
// or AgentUpgrade controllers): a caller that wants them sets it.
func (e *InProcess) RelayConfig(log *slog.Logger) relay.Config {
	return relay.Config{Client: e.Client, AsNode: e.AsNode, CA: e.CA, Log: log}
}
