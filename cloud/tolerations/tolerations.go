// Package tolerations keeps pods on edge nodes bound while their node is
// offline.
//
// When a node stops reporting, the node lifecycle controller taints it
// node.kubernetes.io/unreachable (or not-ready) with effect NoExecute, and
// the taint-eviction controller deletes every pod on it whose matching
// toleration has run out: the DefaultTolerationSeconds admission plugin
// gives every pod 300 s. An edge gateway loses its uplink for hours as a
// matter of course and keeps running its pods, so for an edge node that
// eviction is a storm with nothing to gain: the pods are not rescheduled
// anywhere useful, and the edge would stop them on reconnect.
//
// The Controller therefore watches edge nodes (label
// node-role.kubernetes.io/edge) and, per node that is offline or going
// offline (EdgeLinkReady or Ready not True), the pods bound to it
// (fieldSelector spec.nodeName, as a kubelet does), and removes
// tolerationSeconds from each pod's NoExecute tolerations of those
// two taints: the taint-eviction controller uses the first toleration that
// matches a taint, and one without tolerationSeconds tolerates it forever.
// Pod update validation allows exactly this change. The seconds removed
// are recorded in an annotation, so opting out later puts them back.
//
// Watching only nodes that are offline keeps a connected agent's cost in
// the relay to its session's own pod watch; pods keep the patched
// tolerations after the node comes back.
//
// Opting out: the label outpost.dev/evict-when-offline=true on the Node,
// or the annotation outpost.dev/evict-when-offline: "true" on the pod. The
// pod then keeps (or, the next time the node is offline, gets back) its
// tolerations and is evicted as on any node.
//
// The pods of a node are watched as that node (package asnode), as the
// relay's pod sync does, so the relay itself needs no right to read pods.
// The patch is the relay's own: NodeRestriction lets a node write only its
// pods' status, and a Node may not change its pods' specs. That right
// (patch on pods, cluster-wide, which RBAC cannot narrow) is held in check
// by the ValidatingAdmissionPolicy in cloud/deploy/policy.yaml, which
// lets the relay's identity change nothing of a pod but these
// tolerations and the annotation recording them.
//
// Every relay replica runs a Controller. Patches carry the pod's
// resourceVersion, so replicas racing on a pod make one write and one
// conflict, after which the loser finds nothing left to do.
package tolerations

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"outpost.dev/cloud/asnode"
	"outpost.dev/cloud/listwatch"
	"outpost.dev/cloud/nodes"
)

// Names users set and the relay writes.
const (
	// OptOut, as a Node label or a pod annotation with value "true",
	// keeps the default eviction for that node's pods or that pod.
	OptOut = "outpost.dev/evict-when-offline"
	// Original records, on a pod the relay changed, the tolerationSeconds
	// it removed: "<taint key>=<seconds>" pairs joined by commas ("*" for a
	// toleration with no key).
	Original = "outpost.dev/offline-toleration-seconds"
)

// EdgeRoleLabel marks edge Nodes (the same label cloud/nodes writes).
const EdgeRoleLabel = "node-role.kubernetes.io/edge"

// offlineTaints are the taints the node lifecycle controller puts on a
// node that stops reporting.
var offlineTaints = []string{corev1.TaintNodeNotReady, corev1.TaintNodeUnreachable}

// Config configures a Controller.
type Config struct {
	// Client is the relay's own identity: it watches edge Nodes and
	// patches pods' tolerations.
	Client kubernetes.Interface
	// AsNode hands out the client acting as a node, which watches that
	// node's pods.
	AsNode asnode.Provider
	Log    *slog.Logger
	// Registerer receives the patch counter; nil registers nothing.
	Registerer prometheus.Registerer
	// Workers patch pods concurrently; default 2.
	Workers int
	// Resync re-checks every pod this often; default 10 minutes.
	Resync time.Duration
}

// Controller keeps edge pods' offline tolerations; see the package doc.
type Controller struct {
	cfg     Config
	log     *slog.Logger
	queue   workqueue.TypedRateLimitingInterface[podKey]
	patches *prometheus.CounterVec

	mu    sync.Mutex
	nodes map[string]*nodeWatch // by node name
}

// podKey names a pod on a node; the node says which informer holds it.
type podKey struct{ node, namespace, name string }

type nodeWatch struct {
	informer cache.SharedIndexInformer
	stop     context.CancelFunc
	optOut   bool
}

// New returns a Controller; it does nothing until Run.
func New(cfg Config) (*Controller, error) {
	if cfg.Client == nil || cfg.AsNode == nil {
		return nil, errors.New("tolerations: Client and AsNode are required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 10 * time.Minute
	}
	c := &Controller{
		cfg: cfg, log: cfg.Log, nodes: map[string]*nodeWatch{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[podKey](),
			workqueue.TypedRateLimitingQueueConfig[podKey]{Name: "edge-tolerations"}),
		patches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_relay_toleration_patches_total",
			Help: "Patches of edge pods' offline tolerations, by action (keep: made forever; restore: opted out) and result.",
		}, []string{"action", "result"}),
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(c.patches); err != nil {
			return nil, fmt.Errorf("tolerations: register metrics: %w", err)
		}
	}
	return c, nil
}

// Run watches edge nodes and their pods until ctx is done.
func (c *Controller) Run(ctx context.Context) {
	defer c.queue.ShutDown()
	nodeInf := cache.NewSharedIndexInformer(listwatch.Selected(c.cfg.Client, c.cfg.Client.CoreV1().Nodes(), "", EdgeRoleLabel),
		&corev1.Node{}, 0, cache.Indexers{})
	_, _ = nodeInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { c.nodeChanged(ctx, o) },
		UpdateFunc: func(_, o any) { c.nodeChanged(ctx, o) },
		DeleteFunc: func(o any) {
			if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			if n, ok := o.(*corev1.Node); ok {
				c.nodeGone(n.Name)
			}
		},
	})
	go nodeInf.RunWithContext(ctx)
	var wg sync.WaitGroup
	for range c.cfg.Workers {
		wg.Go(func() {
			for c.next(ctx) {
			}
		})
	}
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
	c.mu.Lock()
	for name, nw := range c.nodes {
		nw.stop()
		delete(c.nodes, name)
	}
	c.mu.Unlock()
}

// Nodes returns the names of the edge nodes whose pods are watched.
func (c *Controller) Nodes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.nodes))
	for n := range c.nodes {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (c *Controller) nodeChanged(ctx context.Context, o any) {
	n, ok := o.(*corev1.Node)
	if !ok {
		return
	}
	optOut := n.Labels[OptOut] == "true"
	c.mu.Lock()
	nw := c.nodes[n.Name]
	if online(n) {
		// Nothing taints an online node, so its pods need no watch; they
		// are looked at when it next goes offline, which the relay's
		// EdgeLinkReady=False shows at once, well before the node
		// controller's grace period and the tolerations' seconds run out.
		if nw != nil {
			nw.stop()
			delete(c.nodes, n.Name)
		}
		c.mu.Unlock()
		return
	}
	if nw == nil {
		nw, err := c.watchPods(ctx, n.Name)
		if err != nil {
			c.mu.Unlock()
			c.log.Error("cannot watch the pods of an offline edge node", "node", n.Name, "err", err)
			return
		}
		nw.optOut = optOut
		c.nodes[n.Name] = nw
		c.mu.Unlock()
		return
	}
	changed := nw.optOut != optOut
	nw.optOut = optOut
	c.mu.Unlock()
	if changed {
		// Every pod of the node is to be done the other way now.
		for _, p := range nw.informer.GetStore().List() {
			c.enqueue(n.Name, p)
		}
	}
}

// online reports whether n's agent is connected (EdgeLinkReady True) and
// the node controller sees it Ready: then no offline taint is coming. A
// node without EdgeLinkReady counts as offline, so its pods are watched.
func online(n *corev1.Node) bool {
	link, ready := false, false
	for _, c := range n.Status.Conditions {
		switch c.Type {
		case nodes.ConditionLinkReady:
			link = c.Status == corev1.ConditionTrue
		case corev1.NodeReady:
			ready = c.Status == corev1.ConditionTrue
		}
	}
	return link && ready
}

func (c *Controller) nodeGone(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if nw := c.nodes[name]; nw != nil {
		nw.stop()
		delete(c.nodes, name)
	}
}

// watchPods starts the pod informer of node name, watching as that node;
// c.mu is held.
func (c *Controller) watchPods(ctx context.Context, name string) (*nodeWatch, error) {
	as, err := c.cfg.AsNode.For(name)
	if err != nil {
		return nil, err
	}
	inf := cache.NewSharedIndexInformer(listwatch.PodsOnNode(as, name), &corev1.Pod{}, c.cfg.Resync, cache.Indexers{})
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { c.enqueue(name, o) },
		UpdateFunc: func(_, o any) { c.enqueue(name, o) },
	})
	pctx, cancel := context.WithCancel(ctx)
	go inf.RunWithContext(pctx)
	return &nodeWatch{informer: inf, stop: cancel}, nil
}

func (c *Controller) enqueue(node string, o any) {
	p, ok := o.(*corev1.Pod)
	if !ok || p.Spec.NodeName != node {
		return
	}
	c.queue.Add(podKey{node: node, namespace: p.Namespace, name: p.Name})
}

// next handles one queued pod; false when the queue is shut down.
func (c *Controller) next(ctx context.Context) bool {
	k, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(k)
	err := c.sync(ctx, k)
	switch {
	case err == nil:
		c.queue.Forget(k)
	case ctx.Err() != nil:
	default:
		if !apierrors.IsConflict(err) {
			c.log.Warn("edge pod tolerations not patched; will retry", "pod", k.namespace+"/"+k.name, "node", k.node, "err", err)
		}
		c.queue.AddRateLimited(k)
	}
	return true
}

func (c *Controller) sync(ctx context.Context, k podKey) error {
	c.mu.Lock()
	nw := c.nodes[k.node]
	c.mu.Unlock()
	if nw == nil {
		return nil // the node is gone, or no longer an edge node
	}
	o, ok, err := nw.informer.GetStore().GetByKey(k.namespace + "/" + k.name)
	if err != nil || !ok {
		return err
	}
	pod := o.(*corev1.Pod)
	c.mu.Lock()
	optOut := nw.optOut
	c.mu.Unlock()
	patch, action := Plan(pod, optOut)
	if patch == nil {
		return nil
	}
	_, err = c.cfg.Client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "outpost-relay"})
	switch {
	case err == nil:
		c.patches.WithLabelValues(action, "ok").Inc()
		c.log.Debug("edge pod tolerations patched", "pod", pod.Namespace+"/"+pod.Name, "node", k.node, "action", action)
		return nil
	case apierrors.IsNotFound(err):
		return nil
	case apierrors.IsConflict(err):
		// Another replica, or another writer, was first: the watch
		// brings the new version, which is looked at afresh.
		c.patches.WithLabelValues(action, "conflict").Inc()
		return err
	case apierrors.IsInvalid(err):
		// Refused for good (say, a validation this version does not
		// know); retrying the same patch cannot help.
		c.patches.WithLabelValues(action, "invalid").Inc()
		c.log.Error("edge pod tolerations refused by the API server; the pod keeps them", "pod", pod.Namespace+"/"+pod.Name, "err", err)
		return nil
	default:
		c.patches.WithLabelValues(action, "error").Inc()
		return err
	}
}

// Plan returns the merge patch that brings pod's offline tolerations where
// they belong (nil if they are there) and what it does: "keep" (made
// forever) or "restore" (opted out: seconds put back). The patch carries
// the pod's resourceVersion, so it applies only to the version looked at.
func Plan(pod *corev1.Pod, nodeOptOut bool) ([]byte, string) {
	if pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil, ""
	}
	optOut := nodeOptOut || pod.Annotations[OptOut] == "true"
	tols := slices.Clone(pod.Spec.Tolerations)
	var annotation *string // nil: unchanged; "": remove
	action := "keep"
	changed := false
	if optOut {
		rec, ok := pod.Annotations[Original]
		if !ok {
			return nil, ""
		}
		orig := parseOriginal(rec)
		for i := range tols {
			t := &tols[i]
			if s, ok := orig[keyOf(t)]; ok && t.TolerationSeconds == nil && offline(t) {
				t.TolerationSeconds = &s
				changed = true
			}
		}
		empty := ""
		annotation, action, changed = &empty, "restore", true
	} else {
		orig := parseOriginal(pod.Annotations[Original])
		for i := range tols {
			t := &tols[i]
			if t.TolerationSeconds == nil || !offline(t) {
				continue
			}
			if _, seen := orig[keyOf(t)]; !seen {
				orig[keyOf(t)] = *t.TolerationSeconds
			}
			t.TolerationSeconds = nil
			changed = true
		}
		if changed {
			s := formatOriginal(orig)
			annotation = &s
		}
	}
	if !changed {
		return nil, ""
	}
	meta := map[string]any{"resourceVersion": pod.ResourceVersion}
	if annotation != nil {
		var v any = *annotation
		if *annotation == "" {
			v = nil // merge patch: null removes the key
		}
		meta["annotations"] = map[string]any{Original: v}
	}
	b, err := json.Marshal(map[string]any{
		"metadata": meta,
		"spec":     map[string]any{"tolerations": tols},
	})
	if err != nil {
		return nil, ""
	}
	return b, action
}

// offline reports whether t is a NoExecute toleration that matches one of
// the offline taints (by key, or a key-less Exists that matches all).
func offline(t *corev1.Toleration) bool {
	if t.Effect != "" && t.Effect != corev1.TaintEffectNoExecute {
		return false
	}
	if t.Key == "" {
		return t.Operator == corev1.TolerationOpExists
	}
	if !slices.Contains(offlineTaints, t.Key) {
		return false
	}
	// The offline taints have no value: Exists matches, and so does Equal
	// with an empty value.
	return t.Operator == corev1.TolerationOpExists || t.Value == ""
}

func keyOf(t *corev1.Toleration) string {
	if t.Key == "" {
		return "*"
	}
	return t.Key
}

func parseOriginal(s string) map[string]int64 {
	out := map[string]int64{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			out[k] = n
		}
	}
	return out
}

func formatOriginal(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + strconv.FormatInt(m[k], 10)
	}
	return strings.Join(parts, ",")
}
