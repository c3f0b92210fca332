package pods

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"outpost.dev/agent/cni"
	"outpost.dev/agent/runtime/containerd"
	"outpost.dev/wire"
)

// Source is where desired objects come from (the agent's store).
type Source interface {
	Objects(k wire.Kind) ([]wire.Object, error)
}

// Outbox takes status reports (the agent's durable outbox).
type Outbox interface {
	Append(key string, t wire.Type, body wire.Body) (uint64, error)
}

// Config configures a Reconciler.
type Config struct {
	Source Source
	// Changes signals that the store changed (desired.Applier.Changes).
	Changes <-chan struct{}
	Outbox  Outbox
	// Runtime says how to reach containerd.
	Runtime containerd.Config
	// NodeName is this node's name (spec.nodeName for the downward API).
	NodeName string
	// NodeInfo reads the node's facts: the first InternalIP is the pods'
	// hostIP, and the runtime condition report carries them.
	NodeInfo func() (wire.NodeInfo, error)
	// StateDir holds pods/<uid>/ (volumes, network namespace, hosts and
	// resolv.conf files).
	StateDir string
	// Network attaches pods (not hostNetwork ones) to the pod network
	// through CNI; nil leaves them with loopback only, as does a Network
	// with no conflist and no pod CIDR.
	Network *cni.Network
	// ClusterDNS are the cluster DNS server addresses (the kubelet's
	// --cluster-dns) and ClusterDomain its domain (default
	// DefaultClusterDomain): dnsPolicy ClusterFirst uses them; without
	// ClusterDNS it falls back to Default, as a kubelet does.
	ClusterDNS    []string
	ClusterDomain string
	// ResolvConf is the node's resolver file (dnsPolicy Default); default
	// DefaultResolvConf.
	ResolvConf string
	// LogDir holds container logs; default StateDir/logs.
	LogDir string
	// SeccompDir holds the Localhost seccomp profiles pods may name;
	// default StateDir/seccomp.
	SeccompDir string
	// AllowedUnsafeSysctls are the sysctls admitted beyond the safe set
	// (names, or prefixes ending in "*").
	AllowedUnsafeSysctls []string
	// LogBinary is the binary containerd's shim runs as the containers'
	// logger ("LogBinary logger PATH …", normally the agent itself); empty
	// writes raw output through the shim instead (not the CRI format).
	LogBinary string
	// PauseBinary holds the shared PID namespace of a pod with
	// shareProcessNamespace, started as "PauseBinary pod-pid-namespace
	// UID" (normally the agent itself; see IsPauseCall).
	PauseBinary string
	// LogInAgent has the agent copy containers' output into their logs
	// itself (containerd.Spec.LogInAgent, FIFOs in Runtime.LogFIFODir,
	// default StateDir/logfifo) instead of a LogBinary process each.
	LogInAgent bool
	// LogMaxSize and LogMaxFiles bound each container's log files.
	LogMaxSize  int64
	LogMaxFiles int
	// MaxPods bounds the pods admitted; more are reported Failed
	// (OutOfpods), as a kubelet does. Default 110.
	MaxPods int
	// MaxPulls bounds concurrent image pulls; default 2.
	MaxPulls int
	Log      *slog.Logger

	// Poll is how often container states are checked; default 1s.
	Poll time.Duration
	// Resync is how often everything is re-read from the store; default 1m.
	Resync time.Duration
	// BackoffBase and BackoffMax are the crash and image-pull back-off,
	// 10s doubling to 5m by default (a kubelet's).
	BackoffBase, BackoffMax time.Duration
	// BackoffReset is how long a container must run before its crash
	// back-off starts again at BackoffBase; default 10m.
	BackoffReset time.Duration
}

// Labels on the containers the reconciler creates.
const (
	labelPodUID       = "dev.outpost.pod.uid"
	labelPodName      = "dev.outpost.pod.name"
	labelPodNamespace = "dev.outpost.pod.namespace"
	labelContainer    = "dev.outpost.container.name"
	labelAttempt      = "dev.outpost.container.attempt"
	labelInit         = "dev.outpost.container.init"
	labelHash         = "dev.outpost.container.hash"
	labelGrace        = "dev.outpost.pod.grace"
	labelImageID      = "dev.outpost.container.image-id"
)

// Reconciler runs the desired pods in containerd. Create it with New and
// call Run.
type Reconciler struct {
	cfg   Config
	log   *slog.Logger
	pulls chan struct{}

	rtMu sync.Mutex
	rt   *containerd.Runtime

	mu        sync.Mutex
	workers   map[string]*worker
	hostIP    string
	alloc     wire.Resources // the node's allocatable, for the downward API
	runtimeUp bool
	noNetLog  bool // "no pod network" was logged
	netSwept  bool // the start-up sweep of gone pods' attachments ran
	swept     bool // the start-up sweep of gone pods' directories ran
	now       func() time.Time

	// wg counts the pod workers' running steps; once stopped is set no
	// more start, and Run waits for wg.
	wgMu    sync.Mutex
	stopped bool
	wg      sync.WaitGroup
}

// New returns a Reconciler; it does nothing until Run.
func New(cfg Config) *Reconciler {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.LogDir == "" {
		cfg.LogDir = filepath.Join(cfg.StateDir, "logs")
	}
	if cfg.Runtime.LogFIFODir == "" {
		cfg.Runtime.LogFIFODir = filepath.Join(cfg.StateDir, "logfifo")
	}
	if cfg.SeccompDir == "" {
		cfg.SeccompDir = filepath.Join(cfg.StateDir, "seccomp")
	}
	if cfg.MaxPods <= 0 {
		cfg.MaxPods = 110
	}
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = DefaultClusterDomain
	}
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = DefaultResolvConf
	}
	if cfg.MaxPulls <= 0 {
		cfg.MaxPulls = 2
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.Resync <= 0 {
		cfg.Resync = time.Minute
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = 10 * time.Second
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 5 * time.Minute
	}
	if cfg.BackoffReset <= 0 {
		cfg.BackoffReset = 2 * cfg.BackoffMax
	}
	cfg.Runtime.Log = cfg.Log
	return &Reconciler{
		cfg: cfg, log: cfg.Log, pulls: make(chan struct{}, cfg.MaxPulls),
		workers: map[string]*worker{}, now: time.Now, runtimeUp: true,
	}
}

func (r *Reconciler) runtime() *containerd.Runtime {
	r.rtMu.Lock()
	defer r.rtMu.Unlock()
	return r.rt
}

// Run reconciles until ctx ends, then waits for the pod workers to stop.
// Containers keep running when it returns: stopping the agent does not
// stop pods.
func (r *Reconciler) Run(ctx context.Context) error {
	defer func() {
		r.wgMu.Lock()
		r.stopped = true
		r.wgMu.Unlock()
		r.wg.Wait()
	}()
	if err := os.MkdirAll(filepath.Join(r.cfg.StateDir, "pods"), 0o700); err != nil {
		return fmt.Errorf("pods: %w", err)
	}
	if err := os.MkdirAll(r.cfg.LogDir, 0o755); err != nil {
		return fmt.Errorf("pods: %w", err)
	}
	r.readHostIP()
	if !r.connect(ctx) {
		return nil
	}
	defer r.runtime().Close()

	poll := time.NewTicker(r.cfg.Poll)
	defer poll.Stop()
	var (
		desired    []wire.Object
		refs       *refs
		loaded     bool
		lastLoad   time.Time
		retryAfter time.Time
		backoff    = time.Second
		lastPrint  = map[string]string{}
	)
	for {
		now := r.now()
		if resync := now.Sub(lastLoad) >= r.cfg.Resync; !loaded || resync {
			if resync && !lastLoad.IsZero() {
				r.readHostIP()
			}
			d, rf, err := r.load()
			if err != nil {
				r.log.Error("pods: reading desired pods from the store", "err", err)
			} else {
				desired, refs, loaded, lastLoad = d, rf, true, now
				if resync {
					lastPrint = map[string]string{} // hand everything to the workers again
				}
			}
		}
		if loaded && !now.Before(retryAfter) {
			if err := r.pass(ctx, desired, refs, lastPrint); err != nil {
				if errors.Is(err, containerd.ErrUnavailable) {
					r.setRuntimeUp(false, err)
					retryAfter = now.Add(backoff)
					backoff = min(backoff*2, 30*time.Second)
				} else {
					r.log.Warn("pods: pass", "err", err)
				}
			} else {
				backoff = time.Second
				if r.setRuntimeUp(true, nil) {
					lastPrint = map[string]string{}
					r.pokeAll()
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.cfg.Changes:
			loaded = false
		case <-poll.C:
		}
	}
}

// connect creates the runtime, retrying with back-off while containerd
// does not answer.
func (r *Reconciler) connect(ctx context.Context) bool {
	backoff := time.Second
	for {
		rt, err := containerd.New(ctx, r.cfg.Runtime)
		if err == nil {
			// Before any pass reaps an exited task whose shim still
			// holds output for the agent.
			if err := rt.AttachLogs(ctx); err != nil {
				r.log.Warn("pods: copying containers' output into their logs again", "err", err)
			}
			r.rtMu.Lock()
			r.rt = rt
			r.rtMu.Unlock()
			r.setRuntimeUp(true, nil)
			return true
		}
		r.setRuntimeUp(false, err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// setRuntimeUp records whether containerd answers and reports a change
// once (log line and node condition). While containerd stays down the
// condition is queued again on every retry: a hello after a link drop, or
// a node-facts report, rewrites the Node without it. It returns true when
// containerd came back.
func (r *Reconciler) setRuntimeUp(up bool, err error) bool {
	r.mu.Lock()
	changed := r.runtimeUp != up
	r.runtimeUp = up
	r.mu.Unlock()
	if !changed && up {
		return false
	}
	cond := wire.Condition{Type: "ContainerRuntimeReady", Status: "True", Reason: "ContainerdReady", Message: "containerd answers on " + r.address()}
	if up {
		r.log.Info("pods: containerd is reachable again; reconciling", "address", r.address())
	} else {
		msg := fmt.Sprintf("containerd at %s does not answer: %v; retrying with back-off (is the containerd service running?)", r.address(), err)
		if changed {
			r.log.Error("pods: " + msg)
		} else {
			r.log.Debug("pods: containerd still does not answer", "address", r.address(), "err", err)
		}
		cond = wire.Condition{Type: "ContainerRuntimeReady", Status: "False", Reason: "ContainerdUnreachable", Message: truncate(msg, 1000)}
	}
	if r.cfg.NodeInfo != nil && r.cfg.Outbox != nil {
		ni, nerr := r.cfg.NodeInfo()
		if nerr == nil {
			if _, aerr := r.cfg.Outbox.Append("node/runtime", wire.TypeNodeStatus, &wire.NodeStatus{Node: ni, Conditions: []wire.Condition{cond}}); aerr != nil {
				r.log.Warn("pods: runtime condition not queued", "err", aerr)
			}
		}
	}
	return up
}

func (r *Reconciler) address() string {
	if r.cfg.Runtime.Address == "" {
		return "/run/containerd/containerd.sock"
	}
	return r.cfg.Runtime.Address
}

func (r *Reconciler) readHostIP() {
	if r.cfg.NodeInfo == nil {
		return
	}
	ni, err := r.cfg.NodeInfo()
	if err != nil {
		r.log.Warn("pods: reading node addresses", "err", err)
		return
	}
	r.mu.Lock()
	r.alloc = ni.Allocatable
	r.mu.Unlock()
	for _, a := range ni.Addresses {
		if a.Type == "InternalIP" {
			r.mu.Lock()
			r.hostIP = a.Address
			r.mu.Unlock()
			return
		}
	}
}

func (r *Reconciler) allocatable() wire.Resources {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.alloc
}

func (r *Reconciler) getHostIP() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hostIP
}

// refs are the ConfigMaps and Secrets in the store, by namespace/name,
// and the pods' service-account tokens, by pod UID.
type refs struct {
	configMaps map[string]*wire.ConfigMap
	secrets    map[string]*wire.Secret
	tokens     map[string]*wire.PodTokens
}

func (r *Reconciler) load() ([]wire.Object, *refs, error) {
	pods, err := r.cfg.Source.Objects(wire.KindPod)
	if err != nil {
		return nil, nil, err
	}
	cms, err := r.cfg.Source.Objects(wire.KindConfigMap)
	if err != nil {
		return nil, nil, err
	}
	secs, err := r.cfg.Source.Objects(wire.KindSecret)
	if err != nil {
		return nil, nil, err
	}
	toks, err := r.cfg.Source.Objects(wire.KindToken)
	if err != nil {
		return nil, nil, err
	}
	rf := &refs{configMaps: map[string]*wire.ConfigMap{}, secrets: map[string]*wire.Secret{}, tokens: map[string]*wire.PodTokens{}}
	for i := range toks {
		rf.tokens[toks[i].UID] = toks[i].Token
	}
	for i := range cms {
		rf.configMaps[cms[i].Namespace+"/"+cms[i].Name] = cms[i].ConfigMap
	}
	for i := range secs {
		rf.secrets[secs[i].Namespace+"/"+secs[i].Name] = secs[i].Secret
	}
	return pods, rf, nil
}

// pass looks at every container and task (two calls), hands each worker
// its pod when the pod or its containers changed, starts workers for new
// pods and for containers of pods no longer desired.
func (r *Reconciler) pass(ctx context.Context, desired []wire.Object, rf *refs, lastPrint map[string]string) error {
	rt := r.runtime()
	cs, err := rt.List(ctx)
	if err != nil {
		return err
	}
	tasks, err := rt.Tasks(ctx)
	if err != nil {
		return err
	}
	prints := map[string][]string{}
	defer func() {
		if !r.netSwept {
			keep := map[string]bool{}
			for i := range desired {
				keep[desired[i].UID] = true
			}
			for uid := range prints {
				keep[uid] = true
			}
			// A pod directory's worker detaches its pod as it tears it down.
			dirs, _ := os.ReadDir(filepath.Join(r.cfg.StateDir, "pods"))
			for _, d := range dirs {
				keep[d.Name()] = true
			}
			r.sweepNetwork(ctx, keep)
		}
	}()
	for _, c := range cs {
		if !c.Managed() || c.Labels[labelPodUID] == "" {
			continue
		}
		uid := c.Labels[labelPodUID]
		if wire.CheckUID("uid", uid) != nil {
			// Not one the agent made: its pod directory would be no
			// directory of ours to remove.
			r.log.Debug("pods: container with a malformed pod UID label left alone", "container", c.ID)
			continue
		}
		t := tasks[c.ID]
		prints[uid] = append(prints[uid], fmt.Sprintf("%s:%s:%d", c.ID, t.State, t.ExitCode))
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	// Admission: pods already admitted first, then the rest by name, up
	// to MaxPods.
	sort.SliceStable(desired, func(i, j int) bool {
		_, ai := r.workers[desired[i].UID]
		_, aj := r.workers[desired[j].UID]
		if ai != aj {
			return ai
		}
		return desired[i].Namespace+"/"+desired[i].Name < desired[j].Namespace+"/"+desired[j].Name
	})
	want := map[string]bool{}
	admitted := 0
	for i := range desired {
		o := &desired[i]
		if o.Pod == nil {
			continue
		}
		want[o.UID] = true
		w := r.workers[o.UID]
		finished := o.Pod.Finished != ""
		if w == nil && admitted >= r.cfg.MaxPods && !finished {
			r.reject(o, lastPrint, "OutOfpods", fmt.Sprintf("Node didn't have enough resource: pods (maxPods %d)", r.cfg.MaxPods))
			continue
		}
		if w == nil && !finished {
			if why := forbiddenSysctl(o.Pod, r.cfg.AllowedUnsafeSysctls); why != "" {
				r.reject(o, lastPrint, "SysctlForbidden", "Pod "+why)
				continue
			}
		}
		if !finished { // a finished pod holds no place, as on a kubelet
			admitted++
		}
		if w == nil || w.orphan() {
			if w != nil { // a cleanup still running for a UID desired again: let it finish
				continue
			}
			w = newWorker(r, o.UID)
			r.workers[o.UID] = w
			w.begin(ctx)
		}
		slices.Sort(prints[o.UID])
		fp := o.Version + "|" + strings.Join(prints[o.UID], ",")
		if lastPrint[o.UID] != fp || rf != w.refsSeen() {
			lastPrint[o.UID] = fp
			w.set(o, rf)
		}
	}
	for uid := range prints {
		if want[uid] {
			continue
		}
		w := r.workers[uid]
		if w == nil {
			w = newWorker(r, uid)
			r.workers[uid] = w
			w.begin(ctx)
		}
		if !w.orphan() {
			w.set(nil, nil)
		}
	}
	// Workers of pods that vanished without containers (never started).
	for uid, w := range r.workers {
		if !want[uid] && prints[uid] == nil && !w.orphan() {
			w.set(nil, nil)
		}
	}
	if !r.swept {
		// Once after start: pod directories of pods gone while the agent
		// was down, with no container left (a crash between making a
		// pod's network and its first container), are torn down too.
		r.swept = true
		dirs, _ := os.ReadDir(filepath.Join(r.cfg.StateDir, "pods"))
		for _, d := range dirs {
			uid := d.Name()
			if want[uid] || prints[uid] != nil || r.workers[uid] != nil || wire.CheckUID("uid", uid) != nil || !d.IsDir() {
				continue
			}
			w := newWorker(r, uid)
			r.workers[uid] = w
			w.begin(ctx)
			w.set(nil, nil)
		}
	}
	return nil
}

// reject reports a pod the node does not admit (beyond MaxPods, a
// forbidden sysctl) as a kubelet does: Failed, with reason and message.
func (r *Reconciler) reject(o *wire.Object, lastPrint map[string]string, reason, message string) {
	key := "rejected|" + o.Version
	if lastPrint[o.UID] == key {
		return
	}
	lastPrint[o.UID] = key
	r.log.Warn("pods: pod not admitted", "pod", o.Namespace+"/"+o.Name, "reason", reason, "message", message)
	st := &wire.PodStatus{UID: o.UID, Namespace: o.Namespace, Name: o.Name, Phase: "Failed",
		Reason: reason, Message: message, HostIP: r.hostIP}
	if o.Pod.Deleting {
		st.Terminated = true
	}
	if _, err := r.cfg.Outbox.Append("pod/"+o.UID, wire.TypePodStatus, st); err != nil {
		r.log.Warn("pods: status not queued", "pod", o.Namespace+"/"+o.Name, "err", err)
	}
}

func (r *Reconciler) pokeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.workers {
		w.poke()
	}
}

// spawn counts a worker's goroutine that is about to start, unless Run is
// ending.
func (r *Reconciler) spawn() bool {
	r.wgMu.Lock()
	defer r.wgMu.Unlock()
	if r.stopped {
		return false
	}
	r.wg.Add(1)
	return true
}

func (r *Reconciler) removeWorker(w *worker) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.workers[w.uid] == w {
		delete(r.workers, w.uid)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
