package devices

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"

	"outpost.dev/cloud/listwatch"
	"outpost.dev/wire"
)

// NodeDevices watches the Devices bound to one node, for one agent
// connection. It feeds the connection's downstream sync (it implements
// cloud/pods.Extra) and answers the twin report handler's lookups.
type NodeDevices struct {
	node    string
	log     *slog.Logger
	store   cache.Store
	ctl     cache.Controller
	started time.Time
	cancel  context.CancelFunc
	done    chan struct{}
	changed chan struct{}

	mu    sync.Mutex
	cache map[string]translated // by UID
}

type translated struct {
	version string
	obj     wire.Object
	err     error
}

// Watch starts watching node's Devices. Stop it when the connection ends.
func Watch(ctx context.Context, dyn dynamic.Interface, node string, log *slog.Logger) *NodeDevices {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	n := &NodeDevices{
		node: node, log: log, cancel: cancel, started: time.Now(),
		done: make(chan struct{}), changed: make(chan struct{}, 1), cache: map[string]translated{},
	}
	lw := listwatch.Selected(dyn, dyn.Resource(GVR).Namespace(metav1.NamespaceAll), listwatch.OnNode(node), "")
	n.store, n.ctl = cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: lw,
		ObjectType:    &unstructured.Unstructured{},
		Transform: func(o any) (any, error) {
			if u, ok := o.(*unstructured.Unstructured); ok {
				u.SetManagedFields(nil)
			}
			return o, nil
		},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { n.notify() },
			UpdateFunc: func(old, cur any) {
				// Status writes (the relay's own) move the resourceVersion
				// but not the generation: nothing for the agent.
				o, ok1 := old.(*unstructured.Unstructured)
				c, ok2 := cur.(*unstructured.Unstructured)
				if ok1 && ok2 && o.GetGeneration() == c.GetGeneration() && o.GetUID() == c.GetUID() {
					return
				}
				n.notify()
			},
			DeleteFunc: func(any) { n.notify() },
		},
	})
	go func() {
		defer close(n.done)
		n.ctl.RunWithContext(ctx)
	}()
	return n
}

// Stop ends the watch and waits for it.
func (n *NodeDevices) Stop() {
	n.cancel()
	<-n.done
}

func (n *NodeDevices) notify() {
	select {
	case n.changed <- struct{}{}:
	default:
	}
}

// Changed receives a value when the set of Devices or a spec changed.
func (n *NodeDevices) Changed() <-chan struct{} { return n.changed }

// Synced reports whether the first list completed.
func (n *NodeDevices) Synced() bool { return n.ctl.HasSynced() }

// WaitSynced waits until the first list completed or ctx ends.
func (n *NodeDevices) WaitSynced(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), n.ctl.HasSynced)
}

// Get returns the cached Device namespace/name if it is bound to this
// node.
func (n *NodeDevices) Get(key string) (*Device, bool) {
	o, ok, _ := n.store.GetByKey(key)
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
	for _, o := range n.store.List() {
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
		}
	}
	return out
}

type bindErr struct{}

func (bindErr) Error() string { return "device not bound to this node" }

var errNotBound error = bindErr{}
