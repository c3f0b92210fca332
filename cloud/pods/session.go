package pods

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"outpost.dev/cloud/asnode"
	"outpost.dev/cloud/coalesce"
	"outpost.dev/cloud/listwatch"
	"outpost.dev/cloud/nodes"
	"outpost.dev/cloud/watchcache"
	"outpost.dev/cloud/watchmux"
	"outpost.dev/wire"
)

// Condition reasons written on pods the relay refuses to send.
const (
	ReasonUnsupported = "UnsupportedField"
	ReasonTooLarge    = "ObjectTooLarge"
)

// Defaults for Config fields left zero.
const (
	DefaultRefSyncTimeout = 10 * time.Second
	statusRetry           = 5 * time.Second
	pollEvery             = 50 * time.Millisecond
	nodeWaitMin           = 100 * time.Millisecond
	nodeWaitMax           = 2 * time.Second
	nodeWaitCached        = 30 * time.Second
	apiTimeout            = 10 * time.Second
	// claimRetry is how often a pod waiting for its claim reads it again
	// (a kubelet's volume manager retries as often).
	claimRetry = 2 * time.Second
)

// Config configures the pod sync of one agent connection.
type Config struct {
	// Client acts as the node (package asnode): every read and write of
	// the session is the node's own, bounded by the Node authorizer and
	// NodeRestriction.
	Client asnode.Client
	// Node is the node name, from the client certificate.
	Node string
	// Held are the object versions of the agent's hello.
	Held []wire.ObjectVersion
	// Send writes one encoded TypeSync frame to the agent, within a
	// bounded time (it runs on a worker of the Syncer, which it holds
	// meanwhile); false means the connection is gone.
	Send func(frame []byte) bool
	Log  *slog.Logger
	// RefSyncTimeout bounds how long the initial sync waits for the
	// ConfigMaps and Secrets its pods reference (a watch that cannot list,
	// for one); zero means DefaultRefSyncTimeout.
	RefSyncTimeout time.Duration
	// Component is the event source component; "" means outpost-relay.
	Component string
	// Extra, if set, adds more objects of the node (its Devices) to the
	// same sync: one initial sync, one Complete, one set of deltas.
	Extra Extra
	// Nodes, if set, is the relay's cache of edge Nodes, where the
	// session checks that its Node is an edge node before the sync. Once
	// the cache has listed, a Node it does not hold is waited for, never
	// read from the API server: whoever owns the cache calls NodeChanged
	// when it sees the node's Node (the relay's node session creates it
	// after the hello; a kubelet's Node of that name is not an edge node,
	// and the node session refuses that connection), and the session
	// looks in the cache again every nodeWaitCached besides. So a fleet
	// connecting faster than its Nodes can be written costs the API
	// server nothing while it waits. Until the cache has listed, and
	// with no cache, the session reads its Node from Client, backing off
	// from nodeWaitMin to nodeWaitMax.
	Nodes EdgeNodes
	// TokenRefreshAfter, if positive, refreshes service-account tokens at
	// most this long after issue instead of at 80 % of their lifetime
	// (tokens.go); for tests, as the API server issues none shorter than
	// ten minutes.
	TokenRefreshAfter time.Duration
	// Syncer runs the session's passes; nil means one shared by the
	// process, with DefaultWorkers.
	Syncer *Syncer
}

// EdgeNodes is a cache of edge Nodes.
type EdgeNodes interface {
	// EdgeNode reports whether the cache holds name as an edge Node;
	// synced is false until the cache has listed once.
	EdgeNode(name string) (edge, synced bool)
}

// Extra is another source of objects for the agent, watched by its owner.
type Extra interface {
	// Synced reports whether the source has listed; the initial sync
	// waits for it (at most RefSyncTimeout).
	Synced() bool
	// OnChange sets f to be called when Objects may have changed. f does
	// not block; the source must not call it while holding what Objects
	// or Synced take.
	OnChange(f func())
	// Objects returns every object the agent should hold, translated and
	// checked to be bound to the node.
	Objects() []wire.Object
}

// DefaultWorkers is the number of goroutines the default Syncer runs
// passes on at most: with passes that read only caches this is plenty,
// and a pass waiting on the API server (a Node read, a claim read, a
// refusal written) holds one for at most apiTimeout per request.
const DefaultWorkers = 16

// Syncer runs the passes of its Sessions on at most a fixed number of
// goroutines, which exist only while some Session has a pass due: a
// Session has no goroutine of its own. Its queue (cloud/coalesce) holds a
// Session at most once and never runs two passes of one Session at once.
//
// The Syncer also keeps what would otherwise cost each Session a context
// and timers of its own: the end of the contexts its Sessions were started
// with is observed once per context (one context.AfterFunc for all the
// Sessions started with it), and one sweep a minute wakes every Session
// that has not stepped for idleWake.
type Syncer struct {
	q *coalesce.Queue[*Session, struct{}]

	mu sync.Mutex
	// first links the live Sessions (Session.prev and next).
	first *Session
	// parents counts the live Sessions by the Done channel of the
	// context they were started with, and holds its AfterFunc.
	parents map[<-chan struct{}]*parent
	// sweep is set while there are Sessions.
	sweep *time.Timer
}

// parent is a context whose Sessions a Syncer ends with it.
type parent struct {
	sessions int
	stop     func() bool
}

// A Session with nothing due is woken again after idleWake, by the
// Syncer's sweep, which looks every sweepEvery.
const (
	idleWake   = time.Hour
	sweepEvery = time.Minute
)

// NewSyncer returns a Syncer running passes on at most workers goroutines
// (below 1 means DefaultWorkers).
func NewSyncer(workers int) *Syncer {
	if workers < 1 {
		workers = DefaultWorkers
	}
	y := &Syncer{q: coalesce.New[*Session, struct{}](math.MaxInt), parents: map[<-chan struct{}]*parent{}}
	y.q.Serve(workers, y.step)
	return y
}

// defaultSyncer serves the Sessions whose Config names no Syncer: one per
// process, so one per relay.
var defaultSyncer = sync.OnceValue(func() *Syncer { return NewSyncer(DefaultWorkers) })

// add links s in, and watches its context's end unless another Session
// of that context has it watched already.
func (y *Syncer) add(s *Session) {
	y.mu.Lock()
	defer y.mu.Unlock()
	s.next = y.first
	if y.first != nil {
		y.first.prev = s
	}
	y.first = s
	if y.sweep == nil {
		y.sweep = time.AfterFunc(sweepEvery, y.sweepIdle)
	}
	done := s.parent.Done()
	if done == nil {
		return // never ends
	}
	p := y.parents[done]
	if p == nil {
		p = &parent{}
		p.stop = context.AfterFunc(s.parent, func() { y.parentEnded(done) })
		y.parents[done] = p
	}
	p.sessions++
}

// remove unlinks s, once it ended.
func (y *Syncer) remove(s *Session) {
	y.mu.Lock()
	defer y.mu.Unlock()
	if s.prev != nil {
		s.prev.next = s.next
	} else {
		y.first = s.next
	}
	if s.next != nil {
		s.next.prev = s.prev
	}
	s.prev, s.next = nil, nil
	if y.first == nil && y.sweep != nil {
		y.sweep.Stop()
		y.sweep = nil
	}
	done := s.parent.Done()
	if p := y.parents[done]; p != nil {
		if p.sessions--; p.sessions == 0 {
			p.stop()
			delete(y.parents, done)
		}
	}
}

// wakeAll queues a step of every live Session for which f holds.
func (y *Syncer) wakeAll(f func(*Session) bool) {
	y.mu.Lock()
	var due []*Session
	for s := y.first; s != nil; s = s.next {
		if f(s) {
			due = append(due, s)
		}
	}
	y.mu.Unlock()
	for _, s := range due {
		s.wake()
	}
}

// parentEnded wakes the Sessions of the context whose Done channel is
// done: their next step ends them.
func (y *Syncer) parentEnded(done <-chan struct{}) {
	y.wakeAll(func(s *Session) bool { return s.parent.Done() == done })
}

// sweepIdle wakes the Sessions that have not stepped for idleWake.
func (y *Syncer) sweepIdle() {
	idle := time.Now().Add(-idleWake).UnixNano()
	y.wakeAll(func(s *Session) bool { return s.stepped.Load() <= idle })
	y.mu.Lock()
	if y.sweep != nil {
		y.sweep.Reset(sweepEvery)
	}
	y.mu.Unlock()
}

// Session keeps one agent in step with the pods bound to its node and the
// ConfigMaps and Secrets they reference. It has no goroutine of its own:
// its watches' changes, its Extra source's, its context's end (seen by
// its Syncer), its Syncer's hourly sweep and a timer while a step is due
// sooner (the next poll, retry, token refresh or claim read) queue it in
// its Syncer, whose workers run one step of it at a time. Its state is
// rebuilt from the hello and the API server on every connection.
type Session struct {
	cfg    Config
	syncer *Syncer
	// parent is the context Start was given: its end ends the session,
	// and the session's requests are made under it.
	parent context.Context
	done   chan struct{}
	// pods is the node's pod watch, once it started.
	pods atomic.Pointer[watchcache.Cache]
	// over is set when the session ends (Stop, a failed Send, a panic,
	// its context's end): a step queued later does nothing.
	over    atomic.Bool
	endOnce sync.Once
	// stepped is when the last step ended (Unix nanoseconds).
	stepped atomic.Int64
	// prev and next link the Syncer's live Sessions; under its mu.
	prev, next *Session

	// reqCtx is the context of the session's own requests, made on the
	// first (most sessions make none once their Node is known: their
	// watches have their own), cancelled by the session's end; under mu.
	mu        sync.Mutex
	reqCtx    context.Context
	reqCancel context.CancelFunc

	// What the steps keep from one to the next. Only the step running
	// touches it: the Syncer never runs a session on two workers at once.
	st *state
	// timer wakes the session when a step is due within idleWake; nil
	// until one first is.
	timer *time.Timer
	// The wait for an edge Node, before the pod watch starts: the next
	// read is due at nodeAt, and the one after nodeWait later.
	nodeAt   time.Time
	nodeWait time.Duration
}

// Start begins the sync for cfg.Node. Call it after the HelloAck was
// written, and Stop when the connection ends; the end of ctx ends it too.
func Start(ctx context.Context, cfg Config) *Session {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.RefSyncTimeout <= 0 {
		cfg.RefSyncTimeout = DefaultRefSyncTimeout
	}
	if cfg.Component == "" {
		cfg.Component = "outpost-relay"
	}
	if cfg.Syncer == nil {
		cfg.Syncer = defaultSyncer()
	}
	s := &Session{cfg: cfg, syncer: cfg.Syncer, parent: ctx, done: make(chan struct{}), nodeWait: nodeWaitMin}
	// The state's other maps, and mintSem, are made on first use: most
	// nodes run few pods, some none.
	s.st = &state{s: s, sent: HeldVersions(cfg.Held)}
	s.cfg.Held = nil // kept as sent; the hello can go
	s.stepped.Store(time.Now().UnixNano())
	s.syncer.add(s)
	s.wake()
	return s
}

// ctx returns the context of the session's requests: made on first use,
// under the parent's, and cancelled when the session ends.
func (s *Session) ctx() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reqCtx == nil {
		s.reqCtx, s.reqCancel = context.WithCancel(s.parent)
		if s.over.Load() {
			s.reqCancel()
		}
	}
	return s.reqCtx
}

// cancelRequests cancels the session's requests in flight; s.over is set.
func (s *Session) cancelRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reqCancel != nil {
		s.reqCancel()
	}
}

// ended reports whether the session is over or its context ended.
func (s *Session) ended() bool { return s.over.Load() || s.parent.Err() != nil }

// after sets the session's timer to wake it after d.
func (s *Session) after(d time.Duration) {
	if s.timer == nil {
		s.timer = time.AfterFunc(d, s.wake)
		return
	}
	s.timer.Reset(d)
}

// wake queues a step of s; one queued already covers it, and one put
// while a step runs runs after it.
func (s *Session) wake() {
	s.syncer.q.Put(context.Background(), s, struct{}{}, nil)
}

// Stop ends the session and returns once no step of it runs, its
// watches have stopped and its token requests have returned.
func (s *Session) Stop() {
	s.over.Store(true)
	s.cancelRequests()
	s.syncer.q.WaitIdle(s)
	s.end()
}

// end releases what the session holds and closes Done; once, by the step
// that ended it or by Stop (after the last step).
func (s *Session) end() {
	s.endOnce.Do(func() {
		s.over.Store(true)
		s.cancelRequests()
		s.syncer.remove(s)
		if s.timer != nil {
			s.timer.Stop()
		}
		s.st.stopWatches()
		s.st.wg.Wait()
		close(s.done)
	})
}

// Bound reports whether the pod namespace/name is bound to the session's
// node, as the node's pod watch last saw it.
func (s *Session) Bound(namespace, name string) bool {
	st := s.pods.Load()
	if st == nil {
		return false
	}
	o, ok := st.Get(namespace + "/" + name)
	if !ok {
		return false
	}
	p, ok := o.(*corev1.Pod)
	return ok && p.Spec.NodeName == s.cfg.Node
}

// Done is closed when the session has ended (Stop, the connection
// failed a write, or its context ended).
func (s *Session) Done() <-chan struct{} { return s.done }

// step runs one step of s on a worker of the Syncer.
func (y *Syncer) step(s *Session, _ struct{}) {
	defer y.q.Done(s)
	if s.over.Load() {
		return
	}
	if !s.step() {
		s.end()
	}
}

// step waits for an edge Node, or runs a pass, and sets the timer for
// when the next step is due. It returns false when the session is over.
// A panic ends this session, not the relay.
func (s *Session) step() (alive bool) {
	defer func() {
		if r := recover(); r != nil {
			s.cfg.Log.Error("pod sync panicked; this connection gets no more pod updates", "panic", r)
			alive = false
		}
	}()
	if s.ended() {
		return false
	}
	defer func() { s.stepped.Store(time.Now().UnixNano()) }()
	st := s.st
	if st.pods == nil {
		if time.Now().Before(s.nodeAt) {
			return true // woken early: the timer brings the next read
		}
		if !s.edgeNode() {
			return !s.ended()
		}
		st.pods = st.watch(listwatch.PodsOnNode(s.cfg.Client, s.cfg.Node), "/api/v1/pods", listwatch.OnNode(s.cfg.Node))
		s.pods.Store(st.pods)
		if s.cfg.Extra != nil {
			s.cfg.Extra.OnChange(s.wake)
		}
	}
	poll := true
	if st.pods.HasSynced() {
		var ok bool
		if ok, poll = st.pass(); !ok {
			return false // the connection is gone
		}
	}
	wait := idleWake
	if poll {
		wait = pollEvery
	}
	if !st.retryAt.IsZero() {
		wait = min(wait, max(time.Until(st.retryAt), time.Millisecond))
	}
	for _, at := range []time.Time{st.tokenWake, st.claimWake} {
		if !at.IsZero() {
			wait = min(wait, max(time.Until(at), time.Millisecond))
		}
	}
	switch {
	case wait < idleWake:
		s.after(wait)
	case s.timer != nil:
		// Nothing due: the Syncer's sweep wakes the session after
		// idleWake, and the timer goes.
		s.timer.Stop()
		s.timer = nil
	}
	return true
}

// edgeNode reports whether the session's Node is an edge node, so pods
// of a node the relay does not own are never sent (the node session
// closes such a connection): from the cache (Config.Nodes) once it has
// listed, else read once from the API server. Otherwise the timer, or
// NodeChanged, brings the next look, after a back-off for a read.
func (s *Session) edgeNode() bool {
	if s.cfg.Nodes != nil {
		edge, synced := s.cfg.Nodes.EdgeNode(s.cfg.Node)
		if edge {
			return true
		}
		if synced {
			s.nodeAt = time.Time{} // a wake looks again at once
			s.after(nodeWaitCached)
			return false
		}
	}
	ctx, cancel := context.WithTimeout(s.ctx(), apiTimeout)
	n, err := s.cfg.Client.CoreV1().Nodes().Get(ctx, s.cfg.Node, metav1.GetOptions{})
	cancel()
	switch {
	case s.ended():
		return false
	case err == nil && nodes.IsEdge(n):
		return true
	case err == nil:
		s.cfg.Log.Warn("node is not an edge node; sending it no pods")
	case !apierrors.IsNotFound(err):
		s.cfg.Log.Warn("reading node before the pod sync", "err", err)
	}
	s.nodeAt = time.Now().Add(s.nodeWait)
	s.after(s.nodeWait)
	s.nodeWait = min(2*s.nodeWait, nodeWaitMax)
	return false
}

// NodeChanged tells a session waiting for its Node (Config.Nodes) that
// the cache may hold it now.
func (s *Session) NodeChanged() {
	if s.pods.Load() == nil {
		s.wake()
	}
}

// ready reports whether w has listed, or has tried for longer than
// patience (a watch that cannot list must not hold pods back forever).
func ready(w *watchcache.Cache, patience time.Duration) bool {
	return w.HasSynced() || time.Since(w.Started()) > patience
}

// translated caches the translation of one object version.
type translated struct {
	version string
	obj     wire.Object
	size    int
	err     error
	// retryAt is set when err may pass with time (a claim not bound
	// yet): the translation is made again from then on.
	retryAt time.Time
}

type state struct {
	s     *Session
	wg    sync.WaitGroup // token requests in flight
	pods  *watchcache.Cache
	refs  map[Ref]*watchcache.Cache
	cache map[types.UID]*translated
	sent  Versions
	// reported is the pod version and message of the refusal written, so
	// a pass does not read the condition again until the pod or the
	// refusal changes (a claim's may without the pod changing).
	reported map[types.UID]reportedRefusal
	retryAt  time.Time
	// initialSent is set once the initial sync has been written.
	initialSent bool

	// Service-account tokens (tokens.go), by pod UID; tokenWake is when
	// the next one is due.
	tokens    map[types.UID]*podToken
	tokenWake time.Time
	// claimWake is when the next pod waiting for its claim is tried again;
	// claims holds the resolved claims of pods by UID (a pod's volumes
	// cannot change, nor can a bound claim's PersistentVolume).
	claimWake time.Time
	claims    map[types.UID]Claims
	mintSem   chan struct{}
	mintMu    sync.Mutex
	minted    []mintResult
}

// stopWatches stops the session's watches and waits for them.
func (st *state) stopWatches() {
	if st.pods != nil {
		st.pods.Stop()
	}
	for _, w := range st.refs {
		w.Stop()
	}
}

func (st *state) notify() { st.s.wake() }

// watch starts a watch (as the node) whose events queue a step of the
// session.
// Stopped by the session's end, or by Stop when a reference is dropped.
// lw lists; the watch is a watchmux stream of path with fieldSelector
// when the client has them (asnode.Streams), else lw's.
func (st *state) watch(lw cache.ListerWatcher, path, fieldSelector string) *watchcache.Cache {
	o := watchcache.Options{Transform: dropManagedFields, Notify: st.notify}
	if sc, ok := st.s.cfg.Client.(asnode.Streams); ok {
		o.Watch = func(ctx context.Context, opts metav1.ListOptions, h watchmux.Handler) (watchcache.Stream, error) {
			opts.FieldSelector = fieldSelector
			s, err := sc.WatchStream(ctx, path, opts, h)
			if err != nil {
				return nil, err
			}
			return s, nil
		}
	}
	return watchcache.Start(st.s.parent, lw, o)
}

// dropManagedFields keeps the watch caches to what translation reads. It
// strips a copy: an object handed to the cache may be shared with its
// source (client-go's fake clientset does), and must not change under it.
func dropManagedFields(o runtime.Object) runtime.Object {
	m, ok := o.(metav1.Object)
	if !ok || len(m.GetManagedFields()) == 0 {
		return o
	}
	c := o.DeepCopyObject()
	c.(metav1.Object).SetManagedFields(nil)
	return c
}

// refListWatch watches one ConfigMap or Secret by name, as the kubelet's
// watch-based ConfigMap and Secret managers do. It returns the list and
// the watch's path and field selector.
func refListWatch(c asnode.Client, r Ref) (lw cache.ListerWatcher, path, fieldSelector string) {
	sel := fields.OneTermEqualSelector("metadata.name", r.Name).String()
	ns := "/api/v1/namespaces/" + url.PathEscape(r.Namespace)
	if r.Kind == wire.KindConfigMap {
		return listwatch.Selected(c, c.CoreV1().ConfigMaps(r.Namespace), sel, ""), ns + "/configmaps", sel
	}
	return listwatch.Selected(c, c.CoreV1().Secrets(r.Namespace), sel, ""), ns + "/secrets", sel
}

// refused is a pod the agent does not get, and why.
type refused struct {
	pod    *corev1.Pod
	reason string
	err    error
}

// pass compares what the agent should hold with what it holds and sends
// the difference. It returns ok=false when the connection is gone, and
// poll=true when something waits for referenced objects to be listed: the
// initial sync, or a new pod (so the agent gets a pod's ConfigMaps and
// Secrets no later than the pod).
func (st *state) pass() (ok, poll bool) {
	st.tokenWake = time.Time{} // recomputed by podTokens
	st.claimWake = time.Time{} // recomputed below
	node := st.s.cfg.Node
	initial := !st.initialSent
	patience := st.s.cfg.RefSyncTimeout
	var podList []*corev1.Pod
	for _, o := range st.pods.List() {
		p := o.(*corev1.Pod)
		// The field selector already says so; checked again because the
		// relay must never send another node's pod.
		if p.Spec.NodeName != node {
			continue
		}
		podList = append(podList, p)
	}
	sort.Slice(podList, func(i, j int) bool {
		if podList[i].Namespace != podList[j].Namespace {
			return podList[i].Namespace < podList[j].Namespace
		}
		return podList[i].Name < podList[j].Name
	})

	// Translate pods, collect their references.
	type candidate struct {
		pod  *corev1.Pod
		obj  *translated
		refs []Ref
	}
	var (
		cands    []candidate
		refuse   []refused
		wanted   = map[Ref]bool{}
		liveUID  = map[types.UID]bool{}
		finished []wire.Object
		keep     []wire.Object
	)
	for _, p := range podList {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			// A finished pod stays with the agent that ran it, so that its
			// logs can be read until it is deleted, as on a kubelet; it
			// needs neither references nor tokens, and one the agent never
			// held (or that could not be translated) is not sent at all.
			if _, held := st.sent[wire.ObjectRef{Kind: wire.KindPod, UID: string(p.UID)}]; held {
				if t := st.translate(p.UID, p.ResourceVersion, func() (wire.Object, error) { return st.podObject(p) }); t.err == nil {
					finished = append(finished, t.obj)
				}
			}
			continue
		}
		liveUID[p.UID] = true
		t := st.translate(p.UID, p.ResourceVersion, func() (wire.Object, error) { return st.podObject(p) })
		if t.err != nil {
			reason := ReasonUnsupported
			switch {
			case errors.Is(t.err, ErrObjectTooLarge):
				reason = ReasonTooLarge
			case isClaimPending(t.err):
				reason = ReasonClaimPending
				if st.claimWake.IsZero() || t.retryAt.Before(st.claimWake) {
					st.claimWake = t.retryAt
				}
				ref := wire.ObjectRef{Kind: wire.KindPod, UID: string(p.UID)}
				if v, held := st.sent[ref]; held {
					// A pod the agent runs (from before this connection)
					// whose claim cannot be read now: it keeps what it
					// holds, as a kubelet keeps a mounted volume.
					keep = append(keep, wire.Object{Kind: wire.KindPod, UID: ref.UID, Namespace: p.Namespace, Name: p.Name, Version: v})
					continue
				}
			}
			refuse = append(refuse, refused{p, reason, t.err})
			continue
		}
		c := candidate{pod: p, obj: t, refs: Refs(p)}
		for _, r := range c.refs {
			wanted[r] = true
		}
		cands = append(cands, c)
	}

	// Watch what is referenced; stop watching what no longer is.
	for r, w := range st.refs {
		if !wanted[r] {
			w.Stop()
			delete(st.refs, r)
		}
	}
	synced := true
	for r := range wanted {
		w := st.refs[r]
		if w == nil {
			w = st.watch(refListWatch(st.s.cfg.Client, r))
			setKey(&st.refs, r, w)
		}
		if !ready(w, patience) {
			synced = false
		}
	}
	if extra := st.s.cfg.Extra; extra != nil && !extra.Synced() && time.Since(st.pods.Started()) < patience {
		synced = false
	}
	if initial && !synced {
		return true, true
	}

	// Look the references up; a pod whose reference cannot travel is
	// refused too.
	refObjs := map[Ref]*translated{}
	for r := range wanted {
		if t := st.lookupRef(r); t != nil {
			liveUID[types.UID(t.obj.UID)] = true
			refObjs[r] = t
		}
	}
	var want []wire.Object
	included := map[Ref]bool{}
	st.collectMints(liveUID)
	tokensPending := false
	for _, c := range cands {
		_, held := st.sent[wire.ObjectRef{Kind: wire.KindPod, UID: string(c.pod.UID)}]
		if !held && !st.refsReady(c.refs, patience) {
			poll = true // a new pod waits for its references to be listed
			continue
		}
		var tooLarge error
		for _, r := range c.refs {
			if t := refObjs[r]; t != nil && t.err != nil {
				tooLarge = t.err
				break
			}
		}
		if tooLarge != nil {
			refuse = append(refuse, refused{c.pod, ReasonTooLarge, tooLarge})
			continue
		}
		tok, ready, pending := st.podTokens(c.pod, held)
		tokensPending = tokensPending || pending
		if !ready {
			continue // a new pod waits for its service-account tokens
		}
		if tok != nil {
			want = append(want, *tok)
		}
		want = append(want, c.obj.obj)
		for _, r := range c.refs {
			if t := refObjs[r]; t != nil && !included[r] {
				included[r] = true
				want = append(want, t.obj)
			}
		}
	}
	if initial && tokensPending {
		// The initial sync carries the pods' first tokens too, as it
		// carries their references (bounded by the same patience).
		return true, true
	}
	for _, o := range finished {
		liveUID[types.UID(o.UID)] = true // its translation stays cached
		want = append(want, o)
	}
	want = append(want, keep...)
	if st.s.cfg.Extra != nil {
		want = append(want, st.s.cfg.Extra.Objects()...)
	}
	for uid := range st.cache {
		if !liveUID[uid] {
			delete(st.cache, uid)
		}
	}
	for uid := range st.claims {
		if !liveUID[uid] {
			delete(st.claims, uid)
		}
	}

	ups, dels := Diff(st.sent, want)
	if initial || len(ups)+len(dels) > 0 {
		frames, err := Frames(ups, dels, initial)
		if err != nil {
			st.s.cfg.Log.Error("building sync frames", "err", err)
		} else {
			for _, f := range frames {
				if !st.s.cfg.Send(f) {
					return false, false
				}
			}
			for _, d := range dels {
				delete(st.sent, d)
			}
			for _, u := range ups {
				st.sent[wire.ObjectRef{Kind: u.Kind, UID: u.UID}] = u.Version
			}
			if initial {
				st.initialSent = true
				st.s.cfg.Log.Info("pods synced", "upserts", len(ups), "deletes", len(dels), "frames", len(frames))
			}
		}
	}

	st.report(refuse, liveUID)
	return true, poll
}

// setKey sets m[k] to v, making m if it is nil.
func setKey[K comparable, V any](m *map[K]V, k K, v V) {
	if *m == nil {
		*m = map[K]V{}
	}
	(*m)[k] = v
}

func (st *state) refsReady(refs []Ref, patience time.Duration) bool {
	for _, r := range refs {
		if w := st.refs[r]; w == nil || !ready(w, patience) {
			return false
		}
	}
	return true
}

// translate returns the cached translation of uid at version, or makes it
// (again, once a translation waiting for a claim is due).
func (st *state) translate(uid types.UID, version string, f func() (wire.Object, error)) *translated {
	if t := st.cache[uid]; t != nil && t.version == version && (t.retryAt.IsZero() || time.Now().Before(t.retryAt)) {
		return t
	}
	t := &translated{version: version}
	t.obj, t.err = f()
	if t.err == nil {
		t.size, t.err = ObjectSize(&t.obj)
	}
	if isClaimPending(t.err) {
		t.retryAt = time.Now().Add(claimRetry)
	}
	setKey(&st.cache, uid, t)
	return t
}

// podObject translates p, with its claims resolved as its node sees them
// (a kubelet reads them once, when it mounts the pod's volumes; so does
// this, once per pod and connection, every claimRetry until they resolve).
func (st *state) podObject(p *corev1.Pod) (wire.Object, error) {
	claims, ok := st.claims[p.UID]
	if !ok && HasClaims(p) {
		ctx, cancel := context.WithTimeout(st.s.ctx(), apiTimeout)
		defer cancel()
		var err error
		if claims, err = ResolveClaims(ctx, st.s.cfg.Client.CoreV1(), p); err != nil {
			return wire.Object{}, err
		}
		setKey(&st.claims, p.UID, claims)
	}
	return PodObject(p, claims)
}

// lookupRef returns the translated object r names, or nil if it does not
// exist (or has not been listed yet).
func (st *state) lookupRef(r Ref) *translated {
	w := st.refs[r]
	if w == nil {
		return nil
	}
	o, ok := w.Get(r.Namespace + "/" + r.Name)
	if !ok {
		return nil
	}
	switch v := o.(type) {
	case *corev1.ConfigMap:
		return st.translate(v.UID, v.ResourceVersion, func() (wire.Object, error) { return ConfigMapObject(v), nil })
	case *corev1.Secret:
		return st.translate(v.UID, v.ResourceVersion, func() (wire.Object, error) { return SecretObject(v), nil })
	}
	return nil
}

// report writes the refusal of each pod to its status and as an event,
// once: a pod whose Ready condition already says so is left alone, so
// neither a relay restart nor the pod's own update causes another write.
func (st *state) report(refuse []refused, live map[types.UID]bool) {
	for uid := range st.reported {
		if !live[uid] {
			delete(st.reported, uid)
		}
	}
	now := time.Now()
	if now.Before(st.retryAt) {
		return
	}
	st.retryAt = time.Time{}
	for _, r := range refuse {
		p := r.pod
		if p.DeletionTimestamp != nil {
			if _, held := st.sent[wire.ObjectRef{Kind: wire.KindPod, UID: string(p.UID)}]; !held {
				// No container of it ever ran on the node: finish the
				// graceful delete, as the kubelet does for a pod it never
				// started.
				if err := st.finishDelete(p); err != nil {
					if st.s.ended() {
						return
					}
					st.s.cfg.Log.Warn("deleting a refused pod failed; will retry", "pod", p.Namespace+"/"+p.Name, "err", err)
					st.retryAt = now.Add(statusRetry)
					return
				}
				continue
			}
		}
		msg := r.err.Error()
		if st.reported[p.UID] == (reportedRefusal{p.ResourceVersion, msg}) {
			continue
		}
		if hasCondition(p, r.reason, msg) {
			setKey(&st.reported, p.UID, reportedRefusal{p.ResourceVersion, msg})
			continue
		}
		if err := st.writeRefusal(p, r.reason, msg); err != nil {
			if st.s.ended() {
				return
			}
			st.s.cfg.Log.Warn("writing the status of a refused pod failed; will retry", "pod", p.Namespace+"/"+p.Name, "err", err)
			st.retryAt = now.Add(statusRetry)
			return
		}
		st.s.cfg.Log.Info("pod refused", "pod", p.Namespace+"/"+p.Name, "reason", r.reason, "message", msg)
	}
}

// finishDelete deletes p, which is being deleted, at once. The UID
// precondition never deletes a newer pod of the same name.
func (st *state) finishDelete(p *corev1.Pod) error {
	ctx, cancel := context.WithTimeout(st.s.ctx(), apiTimeout)
	defer cancel()
	uid := p.UID
	err := st.s.cfg.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{
		GracePeriodSeconds: new(int64),
		Preconditions:      &metav1.Preconditions{UID: &uid},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete: %w", err)
	}
	st.s.cfg.Log.Info("refused pod deleted", "pod", p.Namespace+"/"+p.Name)
	return nil
}

// reportedRefusal is a refusal written to a pod's status.
type reportedRefusal struct{ version, msg string }

func hasCondition(p *corev1.Pod, reason, msg string) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionFalse && c.Reason == reason && c.Message == msg
		}
	}
	return false
}

// writeRefusal patches the pod's Ready condition (the pod stays Pending) and
// records an event.
func (st *state) writeRefusal(p *corev1.Pod, reason, msg string) error {
	ctx, cancel := context.WithTimeout(st.s.ctx(), apiTimeout)
	defer cancel()
	now := metav1.Now()
	patch, err := json.Marshal(map[string]any{
		// The uid is a precondition: never write a newer pod of the same name.
		"metadata": map[string]any{"uid": p.UID},
		"status": map[string]any{"conditions": []corev1.PodCondition{{
			Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: reason, Message: msg, LastTransitionTime: now,
		}}},
	})
	if err != nil {
		return err
	}
	pods := st.s.cfg.Client.CoreV1().Pods(p.Namespace)
	np, err := pods.Patch(ctx, p.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // gone or replaced: the watch brings what is there now
	}
	if err != nil {
		return fmt.Errorf("patch status: %w", err)
	}
	setKey(&st.reported, p.UID, reportedRefusal{np.ResourceVersion, msg})
	_, err = st.s.cfg.Client.CoreV1().Events(p.Namespace).Create(ctx, &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: p.Name + ".", Namespace: p.Namespace},
		InvolvedObject: corev1.ObjectReference{
			APIVersion: "v1", Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID, ResourceVersion: np.ResourceVersion,
		},
		Reason: reason, Message: msg, Type: corev1.EventTypeWarning,
		Source:         corev1.EventSource{Component: st.s.cfg.Component, Host: st.s.cfg.Node},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}, metav1.CreateOptions{})
	if err != nil {
		// The condition is what matters; the event is a courtesy.
		st.s.cfg.Log.Warn("recording an event for a refused pod", "pod", p.Namespace+"/"+p.Name, "err", err)
	}
	return nil
}
