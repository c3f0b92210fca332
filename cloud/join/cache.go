package join

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"outpost.dev/cloud/listwatch"
	"outpost.dev/cloud/nodes"
)

// Cache holds what join reads on every request, from informers: the
// bootstrap-token Secrets of kube-system (selected by type) and the edge
// Nodes (selected by label, trimmed to what join and revocation look at).
// A join request then costs the API server nothing until its token has
// been checked.
//
// Leases are not cached: every renewal of every node would stream to every
// replica. Join reads one Lease, and only for a request whose token
// checked.
type Cache struct {
	client  kubernetes.Interface
	secrets cache.SharedIndexInformer
	nodes   cache.SharedIndexInformer
	// missed bounds the API reads of token ids the cache does not hold (a
	// token created a moment ago, before its watch event arrived; any id
	// while the cache starts): anyone may send unknown ids, so those reads
	// share one small budget.
	missed *bucket
}

// Missed-token reads: a few a second for all callers together.
const (
	missRate  = 2
	missBurst = 10
)

// NewCache builds the informers; Run starts them.
func NewCache(client kubernetes.Interface) *Cache {
	typeSel := fields.OneTermEqualSelector("type", string(TokenSecretType)).String()
	c := &Cache{
		client: client,
		secrets: cache.NewSharedIndexInformer(
			listwatch.Selected(client, client.CoreV1().Secrets(TokenNamespace), typeSel, ""), &corev1.Secret{}, 0, cache.Indexers{}),
		nodes: cache.NewSharedIndexInformer(
			listwatch.Selected(client, client.CoreV1().Nodes(), "", nodes.EdgeRoleLabel), &corev1.Node{}, 0, cache.Indexers{}),
		missed: newBucket(missRate, missBurst, time.Now()),
	}
	// A replica may watch thousands of edge Nodes: keep only what is read.
	_ = c.nodes.SetTransform(func(o any) (any, error) {
		n, ok := o.(*corev1.Node)
		if !ok {
			return o, nil
		}
		t := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion, Labels: n.Labels}}
		for _, c := range n.Status.Conditions {
			if c.Type == nodes.ConditionLinkReady {
				t.Status.Conditions = []corev1.NodeCondition{{Type: c.Type, Status: c.Status}}
			}
		}
		return t, nil
	})
	return c
}

// Run runs the informers until ctx ends.
func (c *Cache) Run(ctx context.Context) {
	go c.secrets.RunWithContext(ctx)
	go c.nodes.RunWithContext(ctx)
}

// Synced reports whether both informers have listed once.
func (c *Cache) Synced() bool { return c.secrets.HasSynced() && c.nodes.HasSynced() }

// NodeInformer is the edge Node informer, for handlers that act when an
// edge Node goes (revocation).
func (c *Cache) NodeInformer() cache.SharedIndexInformer { return c.nodes }

// Secrets reads token Secrets from the cache and writes through the API.
func (c *Cache) Secrets() SecretUpdater { return cachedSecrets{c} }

// Nodes reads edge Nodes from the cache. A name the cache does not hold is
// read from the API server: it may be a kubelet's node, which join must
// not shadow; join asks only after the token checked.
func (c *Cache) Nodes() NodeGetter { return cachedNodes{c} }

type cachedSecrets struct{ c *Cache }

func (s cachedSecrets) Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Secret, error) {
	api := s.c.client.CoreV1().Secrets(TokenNamespace)
	synced := s.c.secrets.HasSynced()
	if synced {
		if o, ok, _ := s.c.secrets.GetStore().GetByKey(TokenNamespace + "/" + name); ok {
			return o.(*corev1.Secret).DeepCopy(), nil
		}
	}
	if !s.c.missed.allow(time.Now()) {
		if synced {
			return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
		}
		// Starting: the cache knows nothing yet, so "not found" would lie.
		return nil, apierrors.NewServiceUnavailable("join cache not synced yet")
	}
	return api.Get(ctx, name, opts)
}

func (s cachedSecrets) Update(ctx context.Context, sec *corev1.Secret, opts metav1.UpdateOptions) (*corev1.Secret, error) {
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
