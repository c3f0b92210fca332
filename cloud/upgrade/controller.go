package upgrade

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"outpost.dev/cloud/coalesce"
	"outpost.dev/cloud/listwatch"
	"outpost.dev/cloud/watchcache"
	"outpost.dev/wire"
)

// Defaults for Config fields left zero.
const (
	DefaultResync = 10 * time.Second
	// maxQueue bounds the AgentUpgrades waiting for a status write.
	maxQueue   = 1024
	apiTimeout = 10 * time.Second
	retryMin   = 200 * time.Millisecond
	retryMax   = 10 * time.Second
)

// Node is an edge node as the relay knows it.
type Node struct {
	Name   string
	Labels map[string]string
}

// Config is what a Controller needs. Dynamic, Nodes and CacheDir are
// required.
type Config struct {
	// Dynamic reads AgentUpgrades and writes their status, as the relay.
	Dynamic dynamic.Interface
	// Nodes lists the edge Nodes (the relay's informer): the selector
	// picks among them, and they are the total.
	Nodes func() []Node
	// CacheDir holds the artifacts this replica fetched.
	CacheDir string
	// CacheFiles bounds them (DefaultCacheFiles).
	CacheFiles int
	// HTTPClient fetches artifacts; nil means a client with a 10-minute
	// timeout.
	HTTPClient *http.Client
	// Resync is how often every AgentUpgrade is looked at again without
	// an event (DefaultResync).
	Resync time.Duration
	Log    *slog.Logger
}

// Agent sends frames to one connected agent; false means the connection
// is gone.
type Agent interface {
	Send(t wire.Type, body wire.Body) bool
}

// Controller rolls AgentUpgrades out to the agents connected to this
// replica. Several replicas share nothing but the API server: each
// AgentUpgrade's status lists every admitted node with its phase, and a
// node is admitted only by a status write carrying the resourceVersion
// the decision was made on, so two replicas never both fill the last
// slot of maxUnavailable.
type Controller struct {
	cfg   Config
	log   *slog.Logger
	api   dynamic.NamespaceableResourceInterface
	cache *watchcache.Cache
	art   *artifacts
	q     *coalesce.Queue[string, *change]
	wake  chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	sessions map[string]*Session // by node
}

// change is what waits to be written into one AgentUpgrade's status.
type change struct {
	// uid is the object the change was decided on ("" for agents'
	// reports, which name the AgentUpgrade and its version instead).
	uid   types.UID
	set   map[string]NodeStatus // by node
	about map[string]string     // by node: the version a report is about
	admit map[string]bool
	done  []func()
	tries int
}

func (c *change) merge(n *change) *change {
	if c.uid != "" && n.uid != "" && c.uid != n.uid {
		// The object was replaced: what was meant for the old one goes.
		for _, d := range c.done {
			d()
		}
		return n
	}
	if c.uid == "" {
		c.uid = n.uid
	}
	for k, v := range n.set {
		if old, ok := c.set[k]; ok && old.Phase.Terminal() && !v.Phase.Terminal() {
			continue // a node's upgrade ended; a later step is stale
		}
		c.set[k] = v
		if n.about[k] != "" {
			c.about[k] = n.about[k]
		} else {
			delete(c.about, k)
		}
	}
	for k := range n.admit {
		c.admit[k] = true
	}
	c.done = append(c.done, n.done...)
	return c
}

func newChange(uid types.UID) *change {
	return &change{uid: uid, set: map[string]NodeStatus{}, about: map[string]string{}, admit: map[string]bool{}}
}

// New starts a Controller; Close stops it.
func New(cfg Config) (*Controller, error) {
	if cfg.Dynamic == nil || cfg.Nodes == nil || cfg.CacheDir == "" {
		return nil, errors.New("upgrade: Dynamic, Nodes and CacheDir are required")
	}
	if cfg.Resync <= 0 {
		cfg.Resync = DefaultResync
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	art, err := newArtifacts(cfg.CacheDir, cfg.HTTPClient, cfg.CacheFiles)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Controller{
		cfg: cfg, log: cfg.Log.With("component", "upgrade"), api: cfg.Dynamic.Resource(GVR), art: art,
		q: coalesce.New[string, *change](maxQueue), wake: make(chan struct{}, 1),
		ctx: ctx, cancel: cancel, sessions: map[string]*Session{},
	}
	c.cache = watchcache.Start(ctx, listwatch.Selected(cfg.Dynamic, c.api, "", ""), watchcache.Options{
		Transform: withoutManagedFields,
		Notify:    c.poke,
	})
	c.wg.Go(c.reconcileLoop)
	c.wg.Go(c.writeLoop)
	return c, nil
}

// withoutManagedFields is o without its managedFields, for the cache: a
// new object sharing everything else with o, which is left as it was.
func withoutManagedFields(o runtime.Object) runtime.Object {
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return o
	}
	md, ok := u.Object["metadata"].(map[string]any)
	if !ok || md["managedFields"] == nil {
		return o
	}
	md = maps.Clone(md)
	delete(md, "managedFields")
	obj := maps.Clone(u.Object)
	obj["metadata"] = md
	return &unstructured.Unstructured{Object: obj}
}

// Close stops the controller and waits for it.
func (c *Controller) Close() {
	c.cancel()
	c.q.Close()
	c.cache.Stop()
	c.wg.Wait()
}

func (c *Controller) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Session is one connected agent's part in the rollouts.
type Session struct {
	c        *Controller
	node     string
	arch     string
	version  string
	capable  bool
	agent    Agent
	requests chan wire.UpgradeChunkRequest
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}

	mu      sync.Mutex
	offered map[string]*served // by AgentUpgrade name: sent on this connection
}

// served is what an offer on this connection lets the agent download.
type served struct {
	offer *wire.UpgradeOffer
	url   string
}

// Connect registers node's agent, connected to this replica: arch and
// version from its hello, capable if the hello says it takes upgrades.
// Every AgentUpgrade in flight for it is offered (again) from here.
func (c *Controller) Connect(node, arch, version string, capable bool, a Agent) *Session {
	ctx, cancel := context.WithCancel(c.ctx)
	s := &Session{c: c, node: node, arch: arch, version: version, capable: capable, agent: a,
		requests: make(chan wire.UpgradeChunkRequest, 1), ctx: ctx, cancel: cancel, done: make(chan struct{}),
		offered: map[string]*served{}}
	go s.serve()
	c.mu.Lock()
	old := c.sessions[node]
	c.sessions[node] = s
	c.mu.Unlock()
	if old != nil {
		old.Close()
	}
	c.poke()
	return s
}

// Close ends the session (the connection ended).
func (s *Session) Close() {
	s.c.mu.Lock()
	if s.c.sessions[s.node] == s {
		delete(s.c.sessions, s.node)
	}
	s.c.mu.Unlock()
	s.cancel()
	<-s.done
}

// ErrBusy is returned by ChunkRequest while the previous request is
// still being answered: the agent asks for one window at a time.
var ErrBusy = errors.New("upgrade-chunk-request: the previous window is still being sent; ask for one window at a time")

// ChunkRequest queues the agent's request; it never blocks.
func (s *Session) ChunkRequest(r *wire.UpgradeChunkRequest) error {
	select {
	case s.requests <- *r:
		return nil
	default:
		return ErrBusy
	}
}

// serve answers chunk requests from the artifact cache, one chunk frame
// at a time: each waits for the link's writer like any frame, so
// heartbeats and status never wait behind more than one chunk.
func (s *Session) serve() {
	defer close(s.done)
	for {
		select {
		case <-s.ctx.Done():
			return
		case r := <-s.requests:
			s.handle(&r)
		}
	}
}

// handle answers r with chunks, or with a chunk saying why not.
func (s *Session) handle(r *wire.UpgradeChunkRequest) {
	if err := s.answer(r); err != nil {
		s.c.log.Info("upgrade chunk request refused", "node", s.node, "version", r.Version, "offset", r.Offset, "err", err)
		s.agent.Send(wire.TypeUpgradeChunk, &wire.UpgradeChunk{Version: r.Version, Offset: r.Offset, Error: truncate(err.Error(), 1000)})
	}
}

func (s *Session) answer(r *wire.UpgradeChunkRequest) error {
	var sv *served
	s.mu.Lock()
	for _, o := range s.offered {
		if o.offer.Version == r.Version {
			sv = o
		}
	}
	s.mu.Unlock()
	if sv == nil {
		return fmt.Errorf("no upgrade to %s was offered on this connection", r.Version)
	}
	if r.Offset >= sv.offer.Size {
		return fmt.Errorf("offset %d: %w (%d bytes)", r.Offset, errPastEnd, sv.offer.Size)
	}
	f, err := s.c.art.open(s.ctx, sv.url, sv.offer.Size, sv.offer.SHA256)
	if err != nil {
		return err
	}
	defer f.Close()
	end := min(r.Offset+r.Length, sv.offer.Size)
	buf := make([]byte, wire.MaxUpgradeChunk)
	for off := r.Offset; off < end; {
		n := int(min(int64(len(buf)), end-off))
		if _, err := f.ReadAt(buf[:n], off); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("reading the cached artifact: %w", err)
		}
		if !s.agent.Send(wire.TypeUpgradeChunk, &wire.UpgradeChunk{Version: r.Version, Offset: off, Data: buf[:n]}) {
			return nil // the connection is gone
		}
		off += int64(n)
	}
	return nil
}

// Report takes an agent's durable report about this node; done is called
// once it is in the AgentUpgrade's status, or dropped for good (no such
// AgentUpgrade, or one of another version). It is checked against the
// object as the API server has it when written, not against this
// replica's watch, which may not have listed yet. It waits while the
// controller's queue is full.
func (s *Session) Report(r *wire.UpgradeReport, done func()) {
	s.c.put(s.report(r, done))
}

// TryReport is Report without waiting: false, with nothing queued and
// done not called, when the controller's queue is full (a report merged
// into a change of its AgentUpgrade already waiting needs no room) or
// closed. A caller that must not wait tries first and calls Report
// elsewhere only then.
func (s *Session) TryReport(r *wire.UpgradeReport, done func()) bool {
	name, ch := s.report(r, done)
	return s.c.q.TryPut(name, ch, func(w *change) *change { return w.merge(ch) })
}

// report is the change r makes to its AgentUpgrade's status.
func (s *Session) report(r *wire.UpgradeReport, done func()) (string, *change) {
	ch := newChange("")
	ch.set[s.node] = NodeStatus{Name: s.node, Phase: r.Phase, Reason: r.Reason, Bytes: r.Bytes}
	ch.about[s.node] = r.Version
	ch.done = append(ch.done, done)
	if r.Phase.Terminal() || r.Phase == wire.UpgradeSwitching {
		s.mu.Lock()
		delete(s.offered, r.Name) // done again by a Report after a refused TryReport: no matter
		s.mu.Unlock()
	}
	return r.Name, ch
}

func (c *Controller) put(name string, ch *change) {
	if !c.q.Put(c.ctx, name, ch, func(w *change) *change { return w.merge(ch) }) {
		for _, d := range ch.done {
			d()
		}
	}
}

func (c *Controller) reconcileLoop() {
	t := time.NewTicker(c.cfg.Resync)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.wake:
		case <-t.C:
		}
		if c.cache.HasSynced() {
			c.reconcile()
		}
	}
}

// reconcile looks at every AgentUpgrade against the agents connected
// here: admits nodes (by a status write), offers in-flight ones, and
// records nodes that need no upgrade or cannot take one.
func (c *Controller) reconcile() {
	objs := c.cache.List()
	ups := make([]*AgentUpgrade, 0, len(objs))
	for _, o := range objs {
		a, err := FromUnstructured(o.(*unstructured.Unstructured))
		if err == nil {
			ups = append(ups, a)
		}
	}
	sort.Slice(ups, func(i, j int) bool { return ups[i].Name < ups[j].Name })
	// A node upgrading under one AgentUpgrade is not admitted by another.
	busy := map[string]string{}
	for _, a := range ups {
		for _, n := range a.Status.Nodes {
			if inFlight(n.Phase) {
				busy[n.Name] = a.Name
			}
		}
	}
	nodes := c.cfg.Nodes()
	c.mu.Lock()
	sessions := make([]*Session, 0, len(c.sessions))
	for _, s := range c.sessions {
		sessions = append(sessions, s)
	}
	c.mu.Unlock()
	for _, a := range ups {
		p, err := parse(a)
		if err != nil {
			c.log.Warn("AgentUpgrade not rolled out", "name", a.Name, "err", err)
			continue
		}
		selected := map[string]bool{}
		for _, n := range nodes {
			if p.selector.Matches(labels.Set(n.Labels)) {
				selected[n.Name] = true
			}
		}
		cur := map[string]NodeStatus{}
		for _, n := range a.Status.Nodes {
			cur[n.Name] = n
		}
		ch := newChange(a.UID)
		for _, s := range sessions {
			if !selected[s.node] {
				continue
			}
			st, ok := cur[s.node]
			switch {
			case !ok && s.version == a.Spec.Version:
				ch.set[s.node] = NodeStatus{Name: s.node, Phase: wire.UpgradeHealthy, Reason: "running " + a.Spec.Version + " already"}
			case !ok && !s.capable:
				ch.set[s.node] = NodeStatus{Name: s.node, Phase: wire.UpgradeFailed, Reason: "the agent does not take upgrades: no upgradePublicKey is pinned in its configuration, or it was not started by outpost-boot"}
			case !ok && p.offers[s.arch] == nil:
				ch.set[s.node] = NodeStatus{Name: s.node, Phase: wire.UpgradeFailed, Reason: "no artifact for " + s.arch}
			case !ok && busy[s.node] == "" && !a.Spec.Paused:
				ch.admit[s.node] = true
			case ok && s.version != a.Spec.Version && (st.Phase == wire.UpgradePending || st.Phase == wire.UpgradeDownloading || st.Phase == wire.UpgradeVerifying):
				s.offer(p, a.Spec.Version)
			}
		}
		counts := countStatus(a.Status.Nodes, selected)
		if len(ch.set) > 0 || len(ch.admit) > 0 || counts != statusCounts(&a.Status) {
			c.put(a.Name, ch)
		}
	}
}

// offer sends the AgentUpgrade's offer once per connection.
func (s *Session) offer(p *parsed, version string) {
	o := p.offers[s.arch]
	if o == nil {
		return
	}
	s.mu.Lock()
	if sv := s.offered[o.Name]; sv != nil && sv.offer.Version == version {
		s.mu.Unlock()
		return
	}
	s.offered[o.Name] = &served{offer: o, url: p.urls[s.arch]}
	s.mu.Unlock()
	if s.agent.Send(wire.TypeUpgradeOffer, o) {
		s.c.log.Info("upgrade offered", "node", s.node, "name", o.Name, "version", version)
	}
}

type counts struct{ total, updated, inFlight, failed int }

func statusCounts(s *Status) counts {
	return counts{s.Total, s.Updated, s.InFlight, s.Failed}
}

// countStatus counts the selected nodes by phase. A node taken out of
// the selector (or whose Node is gone) no longer counts, in flight or
// not: that is how an administrator frees the slot of a gateway that
// never comes back.
func countStatus(nodes []NodeStatus, selected map[string]bool) counts {
	k := counts{total: len(selected)}
	for _, n := range nodes {
		switch {
		case !selected[n.Name]:
		case inFlight(n.Phase):
			k.inFlight++
		case n.Phase == wire.UpgradeHealthy:
			k.updated++
		default:
			k.failed++
		}
	}
	return k
}

func (c *Controller) writeLoop() {
	for {
		name, ch, ok := c.q.Take(c.ctx)
		if !ok {
			return
		}
		err := c.write(name, ch)
		switch {
		case err == nil:
			c.q.Done(name)
			for _, d := range ch.done {
				d()
			}
		case apierrors.IsNotFound(err) || errors.Is(err, errReplaced) || errors.Is(err, errSpec) || apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
			// For good: later acks of the agents must not wait on it.
			if !apierrors.IsNotFound(err) {
				c.log.Warn("AgentUpgrade status not written; dropped", "name", name, "err", err)
			}
			c.q.Done(name)
			for _, d := range ch.done {
				d()
			}
		default:
			ch.tries++
			wait := min(retryMax, retryMin<<min(ch.tries, 6))
			wait = wait/2 + rand.N(wait/2+1)
			if !apierrors.IsConflict(err) {
				c.log.Warn("AgentUpgrade status write failed; retrying", "name", name, "err", err, "in", wait)
			}
			c.q.Retry(name, ch, wait, func(newer *change) *change { return ch.merge(newer) })
		}
	}
}

var (
	errReplaced = errors.New("the AgentUpgrade was replaced")
	errSpec     = errors.New("the AgentUpgrade's spec cannot be rolled out")
)

// write applies ch to the AgentUpgrade as the API server has it now and
// updates its status with that resourceVersion: a replica that decided
// on an older one gets a conflict and decides again.
func (c *Controller) write(name string, ch *change) error {
	ctx, cancel := context.WithTimeout(c.ctx, apiTimeout)
	defer cancel()
	u, err := c.api.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if ch.uid != "" && u.GetUID() != ch.uid {
		return errReplaced
	}
	a, err := FromUnstructured(u)
	if err != nil {
		return err
	}
	p, err := parse(a)
	if err != nil {
		return fmt.Errorf("%w: %v", errSpec, err)
	}
	selected := map[string]bool{}
	for _, n := range c.cfg.Nodes() {
		if p.selector.Matches(labels.Set(n.Labels)) {
			selected[n.Name] = true
		}
	}
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	idx := map[string]int{}
	for i, n := range a.Status.Nodes {
		idx[n.Name] = i
	}
	changed := false
	for _, node := range slices.Sorted(maps.Keys(ch.set)) {
		ns := ch.set[node]
		if v := ch.about[node]; v != "" && v != a.Spec.Version {
			c.log.Info("upgrade report about another version; dropped", "name", name, "node", node, "version", v)
			continue
		}
		i, ok := idx[node]
		if !ok {
			ns.LastTransitionTime = now
			a.Status.Nodes = append(a.Status.Nodes, ns)
			idx[node] = len(a.Status.Nodes) - 1
			changed = true
			continue
		}
		old := a.Status.Nodes[i]
		if old.Phase.Terminal() && !ns.Phase.Terminal() {
			continue // a late report of an earlier step
		}
		if old.Phase != ns.Phase {
			ns.LastTransitionTime = now
		} else {
			ns.LastTransitionTime = old.LastTransitionTime
		}
		if old != ns {
			a.Status.Nodes[i] = ns
			changed = true
		}
	}
	k := countStatus(a.Status.Nodes, selected)
	limit, err := MaxUnavailable(a.Spec.MaxUnavailable, k.total)
	if err != nil {
		return fmt.Errorf("%w: %v", errSpec, err)
	}
	if !a.Spec.Paused {
		for _, node := range slices.Sorted(maps.Keys(ch.admit)) {
			if _, ok := idx[node]; ok || !selected[node] || k.inFlight >= limit {
				continue
			}
			a.Status.Nodes = append(a.Status.Nodes, NodeStatus{Name: node, Phase: wire.UpgradePending, LastTransitionTime: now})
			idx[node] = len(a.Status.Nodes) - 1
			k.inFlight++
			changed = true
		}
	}
	k = countStatus(a.Status.Nodes, selected)
	if !changed && k == statusCounts(&a.Status) {
		return nil
	}
	a.Status.Total, a.Status.Updated, a.Status.InFlight, a.Status.Failed = k.total, k.updated, k.inFlight, k.failed
	a.Status.Progress = fmt.Sprintf("%d/%d", k.updated, k.total)
	st, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&a.Status)
	if err != nil {
		return err
	}
	u.Object["status"] = st
	_, err = c.api.UpdateStatus(ctx, u, metav1.UpdateOptions{FieldManager: "outpost-relay"})
	if err == nil {
		c.poke() // offer what was admitted
	}
	return err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
