// Package asnode hands out the API clients the relay uses on an edge
// node's behalf. Each acts as the node itself: it impersonates
// system:node:<name>, so the API server's Node authorizer and
// NodeRestriction admission bound what the relay can do for a node exactly
// as they bound a kubelet (its own Node, Lease and pods, the ConfigMaps,
// Secrets, service-account tokens, PersistentVolumeClaims and
// PersistentVolumes those pods use, events).
//
// The relay's service account holds no such rights itself: only the
// constrained impersonation verbs (impersonate:arbitrary-node on the
// node, impersonate-on:arbitrary-node:<verb> on each resource it uses,
// see cloud/deploy/rbac.yaml). Nothing but the user name is sent; the API
// server sets the group system:nodes.
//
// All nodes share one connection pool, one client-side rate limiter and
// one REST client per API group; a node's client is its user name and a
// few small structs, built once per connection, which set the
// Impersonate-User header on each of its requests. Its long-lived watches
// can go as HTTP/2 streams of one cloud/watchmux Mux (Streams), which
// holds no goroutine per watch.
package asnode

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	coordinationv1 "k8s.io/client-go/kubernetes/typed/coordination/v1"
	corev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"
	"k8s.io/client-go/util/flowcontrol"

	"outpost.dev/cloud/watchmux"
)

// UserPrefix is how the API server names a node: system:node:<name>.
const UserPrefix = "system:node:"

// Verb is the constrained impersonation verb for a node, which the API
// server checks on resource nodes of API group authentication.k8s.io with
// the node's name (cloud/nodegrant grants it node by node).
const Verb = "impersonate:arbitrary-node"

// NotAllowed reports whether err is the API server refusing the relay to
// act as a node: it holds no grant for that node.
func NotAllowed(err error) bool {
	return apierrors.IsForbidden(err) && strings.Contains(err.Error(), Verb)
}

// NotAllowedHint says what to do about a NotAllowed error for node.
func NotAllowedHint(node string) string {
	return fmt.Sprintf("the relay may not act as node %q: an administrator must allow it with \"outpost-relay node allow %s\"", node, node)
}

// Client is what the relay may use while acting as one node: the API
// groups a kubelet writes. A kubernetes.Interface satisfies it (client-go's
// fake clientset too, for unit tests).
type Client interface {
	CoreV1() corev1.CoreV1Interface
	CoordinationV1() coordinationv1.CoordinationV1Interface
}

// Streams is a Client whose watches go as cloud/watchmux streams: path is
// the resource's (e.g. /api/v1/pods), h gets the events on the
// connection's reader goroutine.
type Streams interface {
	WatchStream(ctx context.Context, path string, opts metav1.ListOptions, h watchmux.Handler) (*watchmux.Stream, error)
}

// Provider hands out the client acting as node.
type Provider interface {
	For(node string) (Client, error)
}

// Impersonating is the Provider of a running relay: clients that
// impersonate system:node:<name> over the relay's own credentials.
type Impersonating struct {
	// core and coord are the REST clients of all nodes, as the relay
	// itself: every request of a node's client is given its
	// Impersonate-User header (asUser).
	core  rest.Interface
	coord rest.Interface
	// mux carries the nodes' watches; nil when the configuration is one
	// it does not support (muxErr says why), and client-go watches.
	mux    *watchmux.Mux
	muxErr error
}

// New builds an Impersonating provider from the relay's own client
// configuration. cfg must not impersonate anyone already. Its QPS and
// Burst bound the requests made as all nodes together.
func New(cfg *rest.Config) (*Impersonating, error) {
	if cfg.Impersonate.UserName != "" || len(cfg.Impersonate.Groups) > 0 || cfg.Impersonate.UID != "" || len(cfg.Impersonate.Extra) > 0 {
		return nil, errors.New("asnode: the relay's own configuration must not impersonate anyone; remove the impersonation from its kubeconfig")
	}
	cfg = rest.CopyConfig(cfg)
	if cfg.RateLimiter == nil && cfg.QPS > 0 {
		burst := max(cfg.Burst, 1)
		cfg.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, burst)
	}
	rt, err := rest.TransportFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("asnode: transport: %w", err)
	}
	hc := &http.Client{Transport: rt, Timeout: cfg.Timeout}
	core, err := corev1.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("asnode: client: %w", err)
	}
	coord, err := coordinationv1.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("asnode: client: %w", err)
	}
	p := &Impersonating{core: core.RESTClient(), coord: coord.RESTClient()}
	p.mux, p.muxErr = watchmux.New(cfg, watchmux.Options{})
	return p, nil
}

// StreamsUnavailable says why the nodes' watches are client-go's rather
// than watchmux streams (an unsupported configuration: not https, or
// authentication other than a client certificate or bearer token), nil
// when they are streams.
func (p *Impersonating) StreamsUnavailable() error { return p.muxErr }

// Close closes the watch streams' connections.
func (p *Impersonating) Close() {
	if p.mux != nil {
		p.mux.Close()
	}
}

// For returns the client acting as node. It does not fail: New built
// what all nodes share.
func (p *Impersonating) For(node string) (Client, error) {
	user := UserPrefix + node
	c := client{core: corev1.New(&asUser{p.core, user}), coord: coordinationv1.New(&asUser{p.coord, user})}
	if p.mux != nil {
		return &streamClient{c, p.mux, user}, nil
	}
	return &c, nil
}

// asUser is a REST client whose requests impersonate user, and nothing
// else: the API server sets the node's group itself.
type asUser struct {
	rest rest.Interface
	user string
}

func (a *asUser) as(r *rest.Request) *rest.Request {
	return r.SetHeader(transport.ImpersonateUserHeader, a.user)
}

func (a *asUser) GetRateLimiter() flowcontrol.RateLimiter { return a.rest.GetRateLimiter() }
func (a *asUser) Verb(verb string) *rest.Request          { return a.as(a.rest.Verb(verb)) }
func (a *asUser) Post() *rest.Request                     { return a.as(a.rest.Post()) }
func (a *asUser) Put() *rest.Request                      { return a.as(a.rest.Put()) }
func (a *asUser) Patch(pt types.PatchType) *rest.Request  { return a.as(a.rest.Patch(pt)) }
func (a *asUser) Get() *rest.Request                      { return a.as(a.rest.Get()) }
func (a *asUser) Delete() *rest.Request                   { return a.as(a.rest.Delete()) }
func (a *asUser) APIVersion() schema.GroupVersion         { return a.rest.APIVersion() }

type client struct {
	core  *corev1.CoreV1Client
	coord *coordinationv1.CoordinationV1Client
}

// streamClient is a client whose watches are watchmux streams.
type streamClient struct {
	client
	mux  *watchmux.Mux
	user string
}

func (c *streamClient) WatchStream(ctx context.Context, path string, opts metav1.ListOptions, h watchmux.Handler) (*watchmux.Stream, error) {
	return c.mux.Watch(ctx, watchmux.Request{Path: path, Options: opts, User: c.user}, h)
}

func (c *client) CoreV1() corev1.CoreV1Interface                         { return c.core }
func (c *client) CoordinationV1() coordinationv1.CoordinationV1Interface { return c.coord }

// Same is a Provider whose client is c for every node: for unit tests
// with a fake clientset, which cannot impersonate.
type Same struct{ C Client }

// For returns s.C.
func (s Same) For(string) (Client, error) { return s.C, nil }
