// Package watchcache keeps the objects of one list+watch in memory with
// no goroutine of its own while it watches: the per-connection watches
// the relay makes as a node (a node's pods, each ConfigMap and Secret its
// pods reference).
//
// A client-go informer costs about six goroutines, a DeltaFIFO and an
// indexed store per watch; the relay holds one such watch per connected
// node (the Node authorizer lets a node list only its own pods, with its
// own field selector, so one watch cannot serve several nodes), and that
// was most of a connected agent's cost. A Cache lists (client-go, on a
// goroutine that lasts as long as the list), then watches from the list's
// resourceVersion with bookmarks, applies each event to a map and calls a
// notify function; a watch that ends is resumed from the last
// resourceVersion seen, one that expired (410 Gone) relists, and errors
// are retried after a jittered, capped back-off. There is no resync and
// no queue: the caller re-reads the whole map when notified, which is
// what the relay's level-based sync does anyway.
//
// With Options.Watch (cloud/watchmux streams) the events arrive as
// callbacks on the watch connection's reader goroutine, and waits between
// attempts are time.AfterFunc timers, which hold no goroutine until they
// fire; a Cache then holds no goroutine while it watches. Without it the
// ListerWatcher's watch is read on a goroutine per watch (for client-go's
// fake clientset in unit tests).
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

	"outpost.dev/cloud/watchmux"
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

// errStopped is a list not made: the Cache stopped, or Start's context
// ended.
var errStopped = errors.New("watchcache: stopped")

// Stream is an open watch; Cancel ends it and returns once no callback
// of its handler runs any more.
type Stream interface{ Cancel() }

// WatchFunc opens a watch whose events go to h, as watchmux.Mux.Watch
// does: h's methods must not block, and are never called from WatchFunc
// itself. ctx bounds the opening only: the stream lasts until it ends or
// is cancelled.
type WatchFunc func(ctx context.Context, opts metav1.ListOptions, h watchmux.Handler) (Stream, error)

// Cache holds the objects of one list+watch, keyed namespace/name.
type Cache struct {
	lw        cache.ListerWatcherWithContext
	watchFn   WatchFunc
	transform func(runtime.Object) runtime.Object
	notify    func()
	started   time.Time
	// ctx is Start's: the lists and the watches' openings are made under
	// it, each cancelled by Stop too (attempt).
	ctx    context.Context
	synced atomic.Bool
	// wg counts the list goroutines and the timers set to fire, so Stop
	// can wait for them.
	wg       sync.WaitGroup
	haltOnce sync.Once

	mu      sync.RWMutex
	items   map[string]runtime.Object
	stopped bool
	// cancel cancels the list or watch opening in flight, if any; its
	// attempt numbers it.
	cancel  context.CancelFunc
	attempt uint64
	stream  Stream
	timer   *time.Timer
	backoff time.Duration
	rv      string
	// progressed is set when the current watch brought an event (a
	// bookmark too).
	progressed bool
	// gen tells the current watch's callbacks from those of one that
	// ended or was given up.
	gen uint64
}

// Options configures a Cache.
type Options struct {
	// Transform, if set, is applied to each object before it is stored
	// (to drop what nobody reads); it must not change its argument.
	Transform func(runtime.Object) runtime.Object
	// Notify, if set, is called after each change of the contents and
	// after the first list; it must not block, and may be called from
	// different goroutines (a list's, a watch connection's).
	Notify func()
	// Watch, if set, opens the watches instead of the ListerWatcher.
	Watch WatchFunc
}

// Start lists through lw and watches until Stop is called. Its lists and
// watch openings are made under ctx: once ctx ended, none is tried again
// (an open watch goes on until Stop).
func Start(ctx context.Context, lw cache.ListerWatcher, o Options) *Cache {
	c := &Cache{
		lw: cache.ToListerWatcherWithContext(lw), watchFn: o.Watch, transform: o.Transform, notify: o.Notify,
		started: time.Now(), ctx: ctx, items: map[string]runtime.Object{}, backoff: backoffMin,
	}
	if c.notify == nil {
		c.notify = func() {}
	}
	if c.watchFn == nil {
		c.watchFn = goroutineWatch(c.lw)
	}
	c.wg.Add(1)
	go c.list()
	return c
}

// Stop ends the watch and waits until nothing of the Cache runs.
func (c *Cache) Stop() {
	c.haltOnce.Do(c.halt)
	c.wg.Wait()
}

// halt marks the Cache stopped, cancels a list or watch opening in
// flight, stops its timer and cancels its watch; run once, by haltOnce.
func (c *Cache) halt() {
	c.mu.Lock()
	c.stopped = true
	c.gen++
	if c.cancel != nil {
		c.cancel()
		c.cancel = nil
	}
	s := c.stream
	c.stream = nil
	if c.timer != nil && c.timer.Stop() {
		c.wg.Done() // it will not fire
	}
	c.timer = nil
	c.mu.Unlock()
	if s != nil {
		s.Cancel()
	}
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

// begin returns the context of a list or a watch opening, which Stop
// cancels, and end releases once it returned; ok is false once the Cache
// is stopped or Start's context ended. A context is made per attempt, so
// a Cache that watches holds none.
func (c *Cache) begin() (ctx context.Context, end func(), ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped || c.ctx.Err() != nil {
		return nil, nil, false
	}
	ctx, cancel := context.WithCancel(c.ctx)
	c.attempt++
	n := c.attempt
	c.cancel = cancel
	return ctx, func() {
		c.mu.Lock()
		if c.attempt == n && c.cancel != nil {
			c.cancel = nil
		}
		c.mu.Unlock()
		cancel()
	}, true
}

// later runs f after the back-off (now when immediate), and doubles the
// back-off; c.mu is held. Nothing is tried again once Start's context
// ended.
func (c *Cache) later(immediate bool, f func()) {
	if c.stopped || c.ctx.Err() != nil {
		return
	}
	d := time.Duration(0)
	if !immediate {
		d = c.backoff/2 + rand.N(c.backoff/2+1)
		c.backoff = min(2*c.backoff, backoffMax)
	}
	c.wg.Add(1)
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		defer c.wg.Done()
		c.mu.Lock()
		if c.timer == t {
			c.timer = nil
		}
		stopped := c.stopped
		c.mu.Unlock()
		if !stopped {
			f()
		}
	})
	c.timer = t
}

// list replaces the contents with a fresh list and watches from its
// resourceVersion; it runs on a goroutine of its own, or a timer's.
func (c *Cache) list() {
	defer c.wg.Done()
	rv, err := c.relist()
	c.mu.Lock()
	if err != nil {
		c.later(false, c.goList)
		c.mu.Unlock()
		return
	}
	c.backoff = backoffMin
	c.rv = rv
	c.mu.Unlock()
	c.watch()
}

// goList lists again on a new goroutine (from a timer's, which is one).
func (c *Cache) goList() {
	c.wg.Add(1)
	c.list()
}

func (c *Cache) relist() (string, error) {
	ctx, end, ok := c.begin()
	if !ok {
		return "", errStopped
	}
	obj, err := c.lw.ListWithContext(ctx, metav1.ListOptions{})
	end()
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

// watch opens the watch from c.rv.
func (c *Cache) watch() {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return
	}
	c.gen++
	h := &handler{c: c, gen: c.gen}
	rv := c.rv
	c.progressed = false
	c.mu.Unlock()
	timeout := int64((watchMin + rand.N(watchMin)) / time.Second)
	ctx, end, ok := c.begin()
	if !ok {
		return
	}
	s, err := c.watchFn(ctx, metav1.ListOptions{
		ResourceVersion: rv, AllowWatchBookmarks: true, TimeoutSeconds: &timeout,
	}, h)
	end()
	c.mu.Lock()
	if err != nil {
		if h.gen == c.gen {
			c.failed(err)
		}
		c.mu.Unlock()
		return
	}
	if h.gen == c.gen {
		c.stream = s
		c.mu.Unlock()
		return
	}
	// Stopped meanwhile, or it already ended: Cancel is a no-op then.
	// Not under c.mu, which the stream's callbacks take.
	c.mu.Unlock()
	s.Cancel()
}

// failed schedules what follows a watch that failed; c.mu is held.
func (c *Cache) failed(err error) {
	if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
		c.later(true, c.goList)
		return
	}
	c.later(false, c.watch)
}

// handler receives the events of one of the Cache's watches.
type handler struct {
	c   *Cache
	gen uint64
}

func (h *handler) Event(ev watch.Event) bool {
	c := h.c
	c.mu.Lock()
	if h.gen != c.gen {
		c.mu.Unlock()
		return false
	}
	if ev.Type == watch.Error {
		c.gen++
		c.stream = nil
		c.failed(apierrors.FromObject(ev.Object))
		c.mu.Unlock()
		return false
	}
	m, err := meta.Accessor(ev.Object)
	if err != nil {
		c.mu.Unlock()
		return true
	}
	if !c.progressed {
		c.progressed = true
		c.backoff = backoffMin
	}
	if v := m.GetResourceVersion(); v != "" {
		c.rv = v
	}
	key, err := cache.MetaNamespaceKeyFunc(ev.Object)
	if ev.Type == watch.Bookmark || err != nil {
		c.mu.Unlock()
		return true
	}
	switch ev.Type {
	case watch.Added, watch.Modified:
		c.items[key] = c.stored(ev.Object)
	case watch.Deleted:
		delete(c.items, key)
	}
	c.mu.Unlock()
	c.notify()
	return true
}

// End resumes a watch that ended: at once when the server closed one
// that brought events, after the back-off otherwise.
func (h *handler) End(err error) {
	c := h.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if h.gen != c.gen {
		return
	}
	c.gen++
	c.stream = nil
	if err != nil {
		c.failed(err)
		return
	}
	c.later(c.progressed, c.watch)
}

// goroutineWatch reads a ListerWatcher's watches on a goroutine each. A
// client-go watch lasts as long as its request's context, so each gets
// its own, which ctx cancels only while the watch is being opened.
func goroutineWatch(lw cache.ListerWatcherWithContext) WatchFunc {
	return func(ctx context.Context, opts metav1.ListOptions, h watchmux.Handler) (Stream, error) {
		wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		stop := context.AfterFunc(ctx, cancel)
		w, err := lw.WatchWithContext(wctx, opts)
		stop()
		if err != nil {
			cancel()
			return nil, err
		}
		g := &goWatch{w: w, cancel: cancel, stop: make(chan struct{}), done: make(chan struct{})}
		go g.run(h)
		return g, nil
	}
}

type goWatch struct {
	w      watch.Interface
	cancel context.CancelFunc
	once   sync.Once
	stop   chan struct{}
	done   chan struct{}
}

func (g *goWatch) run(h watchmux.Handler) {
	defer close(g.done)
	defer g.cancel()
	defer g.w.Stop()
	for {
		select {
		case <-g.stop:
			return
		case ev, ok := <-g.w.ResultChan():
			if !ok {
				select {
				case <-g.stop:
				default:
					h.End(nil)
				}
				return
			}
			if !h.Event(ev) {
				return
			}
		}
	}
}

func (g *goWatch) Cancel() {
	g.once.Do(func() { close(g.stop) })
	<-g.done
}
