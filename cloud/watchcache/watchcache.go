// Package watchcache keeps the objects of one list+watch in memory on a
// single goroutine: the per-connection watches the relay makes as a node
// (a node's pods, each ConfigMap and Secret its pods reference).
//
// A client-go informer costs about six goroutines, a DeltaFIFO and an
// indexed store per watch; the relay holds one such watch per connected
// node (the Node authorizer lets a node list only its own pods, with its
// own field selector, so one watch cannot serve several nodes), and that
// was most of a connected agent's cost. A Cache lists, then watches from
// the list's resourceVersion with bookmarks, applies each event to a map
// and calls a notify function; a watch that ends is resumed from the last
// resourceVersion seen, one that expired (410 Gone) relists, and errors
// are retried after a jittered, capped back-off. There is no resync and
// no queue: the caller re-reads the whole map when notified, which is
// what the relay's level-based sync does anyway.
package watchcache

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// Back-off between failed lists or watches, doubled up to the cap, each
// wait drawn at random between half and all of it.
const (
	backoffMin = 500 * time.Millisecond
	backoffMax = 30 * time.Second
	// A watch is closed by the API server after TimeoutSeconds and
	// resumed, between 5 and 10 minutes as client-go's reflector does.
	watchMin = 5 * time.Minute
)

// Cache holds the objects of one list+watch, keyed namespace/name.
type Cache struct {
	lw        cache.ListerWatcherWithContext
	transform func(runtime.Object) runtime.Object
	notify    func()
	started   time.Time
	cancel    context.CancelFunc
	done      chan struct{}
	synced    atomic.Bool

	mu    sync.RWMutex
	items map[string]runtime.Object
}

// Options configures a Cache.
type Options struct {
	// Transform, if set, is applied to each object before it is stored
	// (to drop what nobody reads); it must not change its argument.
	Transform func(runtime.Object) runtime.Object
	// Notify, if set, is called after each change of the contents and
	// after the first list, from the Cache's goroutine; it must not block.
	Notify func()
}

// Start lists and watches through lw until ctx ends or Stop is called.
func Start(ctx context.Context, lw cache.ListerWatcher, o Options) *Cache {
	ctx, cancel := context.WithCancel(ctx)
	c := &Cache{
		lw: cache.ToListerWatcherWithContext(lw), transform: o.Transform, notify: o.Notify,
		started: time.Now(), cancel: cancel, done: make(chan struct{}), items: map[string]runtime.Object{},
	}
	if c.notify == nil {
		c.notify = func() {}
	}
	go c.run(ctx)
	return c
}

// Stop ends the watch and waits for its goroutine.
func (c *Cache) Stop() {
	c.cancel()
	<-c.done
}

// HasSynced reports whether the first list completed.
func (c *Cache) HasSynced() bool { return c.synced.Load() }

// Started is when Start was called.
func (c *Cache) Started() time.Time { return c.started }

// Get returns the object namespace/name (name alone for a cluster-scoped
// one).
func (c *Cache) Get(key string) (runtime.Object, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	o, ok := c.items[key]
	return o, ok
}

// List returns every object, in no particular order. The objects are
// shared: read them, never change them.
func (c *Cache) List() []runtime.Object {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]runtime.Object, 0, len(c.items))
	for _, o := range c.items {
		out = append(out, o)
	}
	return out
}

// errExpired is a watch whose resourceVersion is too old: relist.
var errExpired = errors.New("watch expired")

func (c *Cache) run(ctx context.Context) {
	defer close(c.done)
	backoff := backoffMin
	fail := func() bool {
		t := time.NewTimer(backoff/2 + rand.N(backoff/2+1))
		defer t.Stop()
		backoff = min(2*backoff, backoffMax)
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	for ctx.Err() == nil {
		rv, err := c.list(ctx)
		if err != nil {
			if ctx.Err() != nil || !fail() {
				return
			}
			continue
		}
		backoff = backoffMin
		for ctx.Err() == nil {
			var progressed bool
			rv, progressed, err = c.watch(ctx, rv)
			if ctx.Err() != nil || errors.Is(err, errExpired) {
				break
			}
			if progressed {
				backoff = backoffMin
			}
			// A watch that failed, or ended without bringing anything
			// (not even a bookmark), is resumed after the back-off.
			if (err != nil || !progressed) && !fail() {
				return
			}
		}
	}
}

// list replaces the contents with a fresh list and returns its
// resourceVersion.
func (c *Cache) list(ctx context.Context) (string, error) {
	obj, err := c.lw.ListWithContext(ctx, metav1.ListOptions{})
	if err != nil {
		return "", err
	}
	la, err := meta.ListAccessor(obj)
	if err != nil {
		return "", err
	}
	objs, err := meta.ExtractList(obj)
	if err != nil {
		return "", err
	}
	items := make(map[string]runtime.Object, len(objs))
	for _, o := range objs {
		key, err := cache.MetaNamespaceKeyFunc(o)
		if err != nil {
			continue
		}
		items[key] = c.stored(o)
	}
	c.mu.Lock()
	c.items = items
	c.mu.Unlock()
	c.synced.Store(true)
	c.notify()
	return la.GetResourceVersion(), nil
}

func (c *Cache) stored(o runtime.Object) runtime.Object {
	if c.transform != nil {
		return c.transform(o)
	}
	return o
}

// watch applies events from rv on until the watch ends; it returns the
// last resourceVersion seen and whether any event arrived.
func (c *Cache) watch(ctx context.Context, rv string) (string, bool, error) {
	timeout := int64((watchMin + rand.N(watchMin)) / time.Second)
	w, err := c.lw.WatchWithContext(ctx, metav1.ListOptions{
		ResourceVersion: rv, AllowWatchBookmarks: true, TimeoutSeconds: &timeout,
	})
	if err != nil {
		if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
			return rv, false, errExpired
		}
		return rv, false, err
	}
	defer w.Stop()
	progressed := false
	for {
		select {
		case <-ctx.Done():
			return rv, progressed, ctx.Err()
		case ev, ok := <-w.ResultChan():
			if !ok {
				return rv, progressed, nil // closed by the server: resume
			}
			if ev.Type == watch.Error {
				err := apierrors.FromObject(ev.Object)
				if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
					return rv, progressed, errExpired
				}
				return rv, progressed, err
			}
			m, err := meta.Accessor(ev.Object)
			if err != nil {
				continue
			}
			progressed = true
			if v := m.GetResourceVersion(); v != "" {
				rv = v
			}
			if ev.Type == watch.Bookmark {
				continue
			}
			key, err := cache.MetaNamespaceKeyFunc(ev.Object)
			if err != nil {
				continue
			}
			c.mu.Lock()
			switch ev.Type {
			case watch.Added, watch.Modified:
				c.items[key] = c.stored(ev.Object)
			case watch.Deleted:
				delete(c.items, key)
			}
			c.mu.Unlock()
			c.notify()
		}
	}
}
