package join

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"outpost.dev/cloud/listwatch"
	"outpost.dev/cloud/nodes"
)

// Cache holds what join reads on every request: the edge Nodes, from an
// informer (selected by label, trimmed to what join and revocation look
// at), so a join request costs the API server no Node read until its
// token has been checked.
//
// Token Secrets are not cached: a cache would need list and watch of
// Secrets in kube-system, which RBAC cannot narrow to bootstrap tokens, and
// the relay must not be able to read every Secret there. Each token is
// read by its name (bootstrap-token-ID) instead, and since anyone may send
// ids, those reads share one budget for all callers together, beside the
// per-address limit in front of the endpoint.
type Cache struct {
	client kubernetes.Interface
	nodes  cache.SharedIndexInformer
	tokens *bucket
}

// Token reads: for all callers together, a rate the API server shrugs at
// that still lets a fleet join at a useful pace.
const (
	tokenRate  = 20
	tokenBurst = 50
)

// NewCache builds the informers; Run starts them.
func NewCache(client kubernetes.Interface) *Cache {
	c := &Cache{
		client: client,
		nodes: cache.NewSharedIndexInformer(
			listwatch.Selected(client, client.CoreV1().Nodes(), "", nodes.EdgeRoleLabel), &corev1.Node{}, 0, cache.Indexers{}),
		tokens: newBucket(tokenRate, tokenBurst, time.Now()),
	}
	// A replica may watch thousands of edge Nodes: keep only what is read.
	_ = c.nodes.SetTransform(func(o any) (any, error) {
		n, ok := o.(*corev1.Node)
		if !ok {
			return o, nil
		}
		t := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion, Labels: n.Labels},
			Spec: corev1.NodeSpec{PodCIDR: n.Spec.PodCIDR, PodCIDRs: n.Spec.PodCIDRs}}
		for _, c := range n.Status.Conditions {
			if c.Type == nodes.ConditionLinkReady || c.Type == corev1.NodeReady {
				t.Status.Conditions = append(t.Status.Conditions, corev1.NodeCondition{Type: c.Type, Status: c.Status})
			}
		}
		return t, nil
	})
	return c
}

// Run runs the informer until ctx ends.
func (c *Cache) Run(ctx context.Context) { go c.nodes.RunWithContext(ctx) }

// Synced reports whether the informer has listed once.
func (c *Cache) Synced() bool { return c.nodes.HasSynced() }

// NodeInformer is the edge Node informer, for handlers that act when an
// edge Node goes (revocation) or its pod CIDRs change. Its Nodes carry
// only name, UID, labels, pod CIDRs and the EdgeLinkReady and Ready
// conditions' statuses.
func (c *Cache) NodeInformer() cache.SharedIndexInformer { return c.nodes }

// Secrets reads and writes token Secrets through the API, reads within the
// shared budget.
func (c *Cache) Secrets() SecretUpdater { return budgetedSecrets{c} }

// Nodes reads edge Nodes from the cache. A name the cache does not hold is
// read from the API server: it may be a kubelet's node, which join must
// not shadow; join asks only after the token checked.
func (c *Cache) Nodes() NodeGetter { return cachedNodes{c} }

// EdgeNode reports whether the cache holds name as an edge Node, without
// asking the API server; synced is false until the informer has listed.
func (c *Cache) EdgeNode(name string) (edge, synced bool) {
	if !c.nodes.HasSynced() {
		return false, false
	}
	o, ok, _ := c.nodes.GetStore().GetByKey(name)
	if !ok {
		return false, true
	}
	n, ok := o.(*corev1.Node)
	return ok && nodes.IsEdge(n), true
}

type budgetedSecrets struct{ c *Cache }

func (s budgetedSecrets) Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Secret, error) {
	if !s.c.tokens.allow(time.Now()) {
		return nil, apierrors.NewTooManyRequests("too many joins at once", 1)
	}
	return s.c.client.CoreV1().Secrets(TokenNamespace).Get(ctx, name, opts)
}

func (s budgetedSecrets) Update(ctx context.Context, sec *corev1.Secret, opts metav1.UpdateOptions) (*corev1.Secret, error) {
	return s.c.client.CoreV1().Secrets(TokenNamespace).Update(ctx, sec, opts)
}

type cachedNodes struct{ c *Cache }

func (n cachedNodes) Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Node, error) {
	if n.c.nodes.HasSynced() {
		if o, ok, _ := n.c.nodes.GetStore().GetByKey(name); ok {
			return o.(*corev1.Node).DeepCopy(), nil
		}
	}
	return n.c.client.CoreV1().Nodes().Get(ctx, name, opts)
}

// bucket is a token bucket: rate tokens a second, at most burst.
type bucket struct {
	rate, burst float64
	mu          sync.Mutex
	tokens      float64
	last        time.Time
}

func newBucket(rate, burst float64, now time.Time) *bucket {
	return &bucket{rate: rate, burst: burst, tokens: burst, last: now}
}

// allow takes a token if one is there at now.
func (b *bucket) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// refill adds the tokens earned since the last call; b.mu is held.
func (b *bucket) refill(now time.Time) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.burst, b.tokens+d.Seconds()*b.rate)
	}
	b.last = now
}

// full reports whether the bucket has refilled completely, so forgetting
// it changes nothing.
func (b *bucket) full(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now)
	return b.tokens >= b.burst
}
