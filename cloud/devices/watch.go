package devices

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"

	"outpost.dev/cloud/listwatch"
	"outpost.dev/wire"
)

// Hub is the relay's one watch of every Device, fanned out by
// spec.nodeName to the NodeDevices of the connections: a connected agent
// costs a subscription and its translations, not a watch. The relay reads
// Devices as itself (its own list and watch right on devices, which RBAC
// cannot narrow to a node anyway), so one watch serves every node; each
// object is checked against the node again before it is used.
type Hub struct {
	store   cache.Indexer
	ctl     cache.Controller
	started time.Time
	done    chan struct{}

	mu   sync.Mutex
	subs map[string]map[*NodeDevices]struct{} // by node
}

// byNode indexes Devices by spec.nodeName.
const byNode = "node"

// NewHub starts the watch of all Devices through dyn; it ends with ctx
// (Wait for it).
func NewHub(ctx context.Context, dyn dynamic.Interface) *Hub {
	h := &Hub{started: time.Now(), done: make(chan struct{}), subs: map[string]map[*NodeDevices]struct{}{}}
	lw := listwatch.Selected(dyn, dyn.Resource(GVR).Namespace(metav1.NamespaceAll), "", "")
	store, ctl := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: lw,
		ObjectType:    &unstructured.Unstructured{},
		Indexers: cache.Indexers{byNode: func(o any) ([]string, error) {
			if n := nodeOf(o); n != "" {
				return []string{n}, nil
			}
			return nil, nil
		}},
		Transform: func(o any) (any, error) {
			if u, ok := o.(*unstructured.Unstructured); ok {
				u.SetManagedFields(nil)
			}
			return o, nil
		},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc: func(o any) { h.notify(nodeOf(o)) },
			UpdateFunc: func(old, cur any) {
				// Status writes (the relay's own) move the resourceVersion
				// but not the generation: nothing for the agent.
				o, ok1 := old.(*unstructured.Unstructured)
				c, ok2 := cur.(*unstructured.Unstructured)
				if ok1 && ok2 && o.GetGeneration() == c.GetGeneration() && o.GetUID() == c.GetUID() && nodeOf(o) == nodeOf(c) {
					return
				}
				h.notify(nodeOf(old))
				h.notify(nodeOf(cur))
			},
			DeleteFunc: func(o any) {
				if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
					o = t.Obj
				}
				h.notify(nodeOf(o))
			},
		},
	})
	h.store, h.ctl = store.(cache.Indexer), ctl
	go func() {
		defer close(h.done)
		ctl.RunWithContext(ctx)
	}()
	return h
}

// Wait waits until the watch has ended (its context ended).
func (h *Hub) Wait() { <-h.done }

func nodeOf(o any) string {
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return ""
	}
	n, _, _ := unstructured.NestedString(u.Object, "spec", "nodeName")
	return n
}

func (h *Hub) notify(node string) {
	if node == "" {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for n := range h.subs[node] {
		if f := n.onChange.Load(); f != nil {
			(*f)()
		}
	}
}

// NodeDevices is one connection's view of the Devices bound to its node.
// It feeds the connection's downstream sync (it implements
// cloud/pods.Extra) and answers the twin report handler's lookups.
type NodeDevices struct {
	hub  *Hub
	node string
	log  *slog.Logger
	// onChange is what OnChange set, called under hub.mu.
	onChange atomic.Pointer[func()]

	mu    sync.Mutex
	cache map[string]translated // by UID
	// Link ids (linkids.go).
	ids    map[uint32]*linkEntry
	byUID  map[string][]uint32 // oldest first
	held   map[string]heldID   // from the hello, until adopted or refused
	nextID uint32
}

type translated struct {
	version string
	obj     wire.Object
	err     error
}

// Watch subscribes to node's Devices. Stop it when the connection ends.
func (h *Hub) Watch(node string, log *slog.Logger) *NodeDevices {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &NodeDevices{hub: h, node: node, log: log, cache: map[string]translated{},
		ids: map[uint32]*linkEntry{}, byUID: map[string][]uint32{}, held: map[string]heldID{}}
	h.mu.Lock()
	if h.subs[node] == nil {
		h.subs[node] = map[*NodeDevices]struct{}{}
	}
	h.subs[node][n] = struct{}{}
	h.mu.Unlock()
	return n
}

// Stop ends the subscription.
func (n *NodeDevices) Stop() {
	h := n.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs[n.node], n)
	if len(h.subs[n.node]) == 0 {
		delete(h.subs, n.node)
	}
}

// OnChange sets f to be called when the set of the node's Devices or a
// spec changed (nil: nothing is). f is called on the Device watch's
// goroutine and must not block.
func (n *NodeDevices) OnChange(f func()) {
	if f == nil {
		n.onChange.Store(nil)
		return
	}
	n.onChange.Store(&f)
}

// Synced reports whether the relay's Device watch has listed.
func (n *NodeDevices) Synced() bool { return n.hub.ctl.HasSynced() }

// WaitSynced waits until the first list completed or ctx ends.
func (n *NodeDevices) WaitSynced(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), n.hub.ctl.HasSynced)
}

// Get returns the cached Device namespace/name if it is bound to this
// node.
func (n *NodeDevices) Get(key string) (*Device, bool) {
	o, ok, _ := n.hub.store.GetByKey(key)
	if !ok {
		return nil, false
	}
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return nil, false
	}
	d, err := FromUnstructured(u)
	if err != nil || d.Spec.NodeName != n.node {
		return nil, false
	}
	return d, true
}

// Objects returns the agent's objects for every Device bound to the node
// that translates; one that does not is logged once per generation and
// left out.
func (n *NodeDevices) Objects() []wire.Object {
	n.mu.Lock()
	defer n.mu.Unlock()
	live := map[string]bool{}
	var out []wire.Object
	objs, _ := n.hub.store.ByIndex(byNode, n.node)
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		uid := string(u.GetUID())
		live[uid] = true
		version := strconv.FormatInt(u.GetGeneration(), 10)
		t, ok := n.cache[uid]
		if !ok || t.version != version {
			t = translated{version: version}
			d, err := FromUnstructured(u)
			switch {
			case err != nil:
				t.err = err
			case d.Spec.NodeName != n.node:
				// The field selector says so already; checked again because
				// the relay must never send another node's Device.
				t.err = errNotBound
			default:
				t.obj, t.err = Object(d)
			}
			if t.err == nil {
				t.obj.LinkID = n.linkID(uid, version, &t.obj)
				t.obj.Version = objectVersion(version, t.obj.LinkID)
			}
			if t.err != nil && t.err != errNotBound {
				n.log.Warn("device not sent to the agent", "device", u.GetNamespace()+"/"+u.GetName(), "err", t.err)
			}
			n.cache[uid] = t
		}
		if t.err == nil {
			out = append(out, t.obj)
		}
	}
	for uid := range n.cache {
		if !live[uid] {
			delete(n.cache, uid)
			n.forget(uid)
		}
	}
	return out
}

type bindErr struct{}

func (bindErr) Error() string { return "device not bound to this node" }

var errNotBound error = bindErr{}
