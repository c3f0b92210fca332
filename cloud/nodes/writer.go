package nodes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"outpost.dev/cloud/asnode"
	"outpost.dev/cloud/coalesce"
)

// WriterConfig configures a Writer.
type WriterConfig struct {
	// Client is the relay's own identity. It only creates a Node that
	// does not exist yet, with the edge role label, which NodeRestriction
	// does not let a node set on itself; every other read and write is
	// made as the node (SessionConfig.Client).
	Client kubernetes.Interface
	// LeaseDuration is written into each Lease; the Lease is renewed every
	// quarter of it, as the kubelet does, or up to three quarters of it
	// while the API server takes the renewals more slowly than they come
	// (leasePace).
	LeaseDuration time.Duration
	Log           *slog.Logger
	// Registerer receives the API write failure counter; nil registers
	// nothing.
	Registerer prometheus.Registerer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// KubeletAddress and KubeletPort, if set, are where the API server
	// reaches the kubelet API this relay replica serves for its agents
	// (kubectl logs): every Node written gets KubeletAddress as its first
	// InternalIP and KubeletPort as its kubelet endpoint port.
	KubeletAddress string
	KubeletPort    int32
	// Workers bounds the sessions making writes at once, across all
	// connections; 0 means DefaultWorkers.
	Workers int
}

// DefaultWorkers is WriterConfig.Workers when it is zero: enough for
// the relay's default API budget (200 requests a second) with writes
// taking up to 80 ms. A larger budget needs more (WorkersFor).
const DefaultWorkers = 16

// writeLatency is the API server's time for one write that WorkersFor
// plans for; with 10,000 nodes on a loaded 2-core machine its p99 was
// 136 ms (docs/benchmarks.md, "Relay memory per connected agent").
const writeLatency = 100 * time.Millisecond

// WorkersFor is the number of workers that can spend an API budget of qps
// requests a second on node writes while each write takes writeLatency.
// The workers bound the writes in flight, and each waits for its answer,
// so too few of them cap the write rate below the budget whatever the
// API server could take: 10,000 nodes renewing their Leases every 10 s
// need 1,000 writes a second, 16 workers at 100 ms make 160.
func WorkersFor(qps float64) int {
	return max(DefaultWorkers, int(math.Ceil(qps*writeLatency.Seconds())))
}

// Writer writes edge Nodes and their Leases. Its Sessions keep the
// per-node state; its queue (one key per session with a step due) is
// served by at most Workers goroutines, which exist only while a step is
// due, so a connected session costs no goroutine.
type Writer struct {
	cfg      WriterConfig
	failures *prometheus.CounterVec
	q        *coalesce.Queue[*Session, struct{}]
	pace     *leasePace
}

// NewWriter builds a Writer.
func NewWriter(cfg WriterConfig) (*Writer, error) {
	if cfg.Client == nil {
		return nil, errors.New("nodes: Client is required")
	}
	if cfg.LeaseDuration < 4*time.Millisecond {
		return nil, fmt.Errorf("nodes: lease duration %s is too short", cfg.LeaseDuration)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	w := &Writer{
		cfg: cfg,
		// One key per session: the bound is never reached.
		q: coalesce.New[*Session, struct{}](math.MaxInt),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_relay_api_write_failures_total",
			Help: "Failed writes to the Kubernetes API server, by object.",
		}, []string{"object"}),
		pace: newLeasePace(cfg.LeaseDuration),
	}
	if cfg.Registerer != nil {
		period := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outpost_relay_lease_renew_period_seconds",
			Help: "How often each node's Lease is renewed: a quarter of the Lease duration, longer while the API server falls behind.",
		}, func() float64 { return w.pace.period().Seconds() })
		for _, c := range []prometheus.Collector{w.failures, period} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("nodes: register metrics: %w", err)
			}
		}
	}
	w.q.Serve(cfg.Workers, w.step)
	return w, nil
}

// Apply creates Node name from rep, or writes its status and, if the
// relay's labels are missing, its labels: the whole status the relay owns,
// with Ready=True and a fresh heartbeat. The status is written every time,
// since after the node lifecycle controller marked a node Unknown only a
// status write with Ready=True makes it Ready again. It returns the Node as
// stored after the write.
//
// last, if not nil, is the Node as the relay last wrote it: only its UID
// and its conditions' types and statuses are used, and the status is
// patched without reading the Node first. A Node that is not the one last
// written (deleted, or deleted and created again) is read afresh. A Node
// of that name that is not an edge node yields ErrNotEdge. as is the client
// acting as the node (package asnode); only the create is made as the
// relay itself.
func (w *Writer) Apply(ctx context.Context, as asnode.Client, name string, rep *Report, last *corev1.Node) (*corev1.Node, error) {
	var kept *nodeState
	if last != nil {
		kept = stateOf(last)
	}
	return w.apply(ctx, as, name, rep, kept, CreateHooks{})
}

// CreateHooks guard the creation of a Node that does not exist.
type CreateHooks struct {
	// Before, if set, is asked before the Node is created; an error
	// stops the write with ErrGone (the Node was deleted, and the relay
	// must not bring it back).
	Before func(ctx context.Context) error
	// After, if set, is told of the Node created.
	After func(ctx context.Context, n *corev1.Node)
}

// ErrGone is returned when the Node does not exist and may not be created
// again: it was deleted, which revoked the node's certificates.
var ErrGone = errors.New("node was deleted")

func (w *Writer) apply(ctx context.Context, as asnode.Client, name string, rep *Report, kept *nodeState, hooks CreateHooks) (*corev1.Node, error) {
	api := as.CoreV1().Nodes()
	if kept != nil {
		n, err := w.patchStatus(ctx, as, name, rep, kept)
		if err == nil {
			return n, nil
		}
		if !apierrors.IsNotFound(err) && !uidChanged(err) {
			w.count("node_status", err)
			return nil, fmt.Errorf("write node %q: %w", name, err)
		}
		// Not the Node last written: read it afresh.
	}
	get := func() (*corev1.Node, error) { return api.Get(ctx, name, metav1.GetOptions{}) }
	create := func() (*corev1.Node, error) {
		if hooks.Before != nil {
			if err := hooks.Before(ctx); err != nil {
				return nil, fmt.Errorf("%w: %v", ErrGone, err)
			}
		}
		n := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: Labels(name, &rep.Info)},
			Status:     Status(metav1.NewTime(w.cfg.Now()), name, rep),
		}
		PointKubelet(&n.Status, w.cfg.KubeletAddress, w.kubeletPort(rep))
		// Created as the relay itself (a node may not create Nodes); the
		// API server keeps the status given on create.
		created, err := w.cfg.Client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{FieldManager: FieldManager})
		if err != nil {
			w.count("node", err)
			return nil, err
		}
		if hooks.After != nil {
			hooks.After(ctx, created)
		}
		return created, nil
	}
	// The labels, when some of the relay's are missing (a new board, or
	// someone removed one): an update of the Node read, from a fresh read
	// again on a conflict. The status is patched after.
	labels := func(cur *corev1.Node) (*corev1.Node, error) {
		if !IsEdge(cur) {
			return nil, ErrNotEdge
		}
		want := Labels(name, &rep.Info)
		if hasLabels(cur.Labels, want) {
			return cur, nil
		}
		upd := cur.DeepCopy()
		if upd.Labels == nil {
			upd.Labels = map[string]string{}
		}
		maps.Copy(upd.Labels, want)
		res, err := api.Update(ctx, upd, metav1.UpdateOptions{FieldManager: FieldManager})
		if err != nil {
			w.count("node", err)
		}
		return res, err
	}
	created := false
	cur, err := upsert(schema.GroupResource{Resource: "nodes"}, name, get, func() (*corev1.Node, error) {
		n, err := create()
		created = err == nil
		return n, err
	}, labels)
	if err == nil && !created {
		// The status, onto the Node as read (or as its labels' update
		// left it).
		cur, err = w.patchStatus(ctx, as, name, rep, stateOf(cur))
		if err != nil {
			w.count("node_status", err)
		}
	}
	if err != nil {
		if errors.Is(err, ErrNotEdge) {
			return nil, fmt.Errorf("node %q: %w (no %s label): the relay will not take it over", name, ErrNotEdge, EdgeRoleLabel)
		}
		return nil, fmt.Errorf("write node %q: %w", name, err)
	}
	return cur, nil
}

// patchStatus writes the status for rep onto the Node prev says is stored
// (see statusPatch).
func (w *Writer) patchStatus(ctx context.Context, as asnode.Client, name string, rep *Report, prev *nodeState) (*corev1.Node, error) {
	now := metav1.NewTime(w.cfg.Now())
	st := Status(now, name, rep)
	PointKubelet(&st, w.cfg.KubeletAddress, w.kubeletPort(rep))
	body, err := statusPatchFor(now, prev, &st)
	if err != nil {
		return nil, err
	}
	return as.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, body,
		metav1.PatchOptions{FieldManager: FieldManager}, "status")
}

// upsert is the node writer's one read-modify-write loop: update a fresh
// read of the object, create it when it does not exist, and start again
// on a conflict or when another relay replica created it first.
func upsert[T any](gr schema.GroupResource, name string, get func() (*T, error), create func() (*T, error), update func(cur *T) (*T, error)) (*T, error) {
	var out *T
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		cur, err := get()
		if apierrors.IsNotFound(err) {
			created, err := create()
			if apierrors.IsAlreadyExists(err) {
				return apierrors.NewConflict(gr, name, err)
			}
			out = created
			return err
		}
		if err != nil {
			return err
		}
		res, err := update(cur)
		out = res
		return err
	})
	return out, err
}

// kubeletPort is the kubelet endpoint port written for rep's node.
func (w *Writer) kubeletPort(rep *Report) int32 {
	if rep.KubeletPort != 0 {
		return rep.KubeletPort
	}
	return w.cfg.KubeletPort
}

// count records a failed write of what, unless it is a conflict or a lost
// create race, which the caller retries, or was cancelled (Stop cancels
// the step running).
func (w *Writer) count(what string, err error) {
	if !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) && !errors.Is(err, context.Canceled) {
		w.failures.WithLabelValues(what).Inc()
	}
}

// FieldManager names the relay in managedFields.
const FieldManager = "outpost-relay"

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

// RenewLease renews the Lease of node from a fresh read, creating it
// (owned by the Node, as the kubelet does, so it goes when the Node goes)
// if it is missing. as is the client acting as the node.
func (w *Writer) RenewLease(ctx context.Context, as asnode.Client, node *corev1.Node) (*coordinationv1.Lease, error) {
	api := as.CoordinationV1().Leases(LeaseNamespace)
	secs := w.leaseSeconds()
	owner := metav1.OwnerReference{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}
	get := func() (*coordinationv1.Lease, error) { return api.Get(ctx, node.Name, metav1.GetOptions{}) }
	create := func() (*coordinationv1.Lease, error) {
		now := metav1.NewMicroTime(w.cfg.Now())
		l, err := api.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: node.Name, Namespace: LeaseNamespace, OwnerReferences: []metav1.OwnerReference{owner}},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: &node.Name, LeaseDurationSeconds: &secs, RenewTime: &now},
		}, metav1.CreateOptions{FieldManager: FieldManager})
		if err != nil {
			w.count("lease", err)
		}
		return l, err
	}
	update := func(cur *coordinationv1.Lease) (*coordinationv1.Lease, error) {
		now := metav1.NewMicroTime(w.cfg.Now())
		upd := cur.DeepCopy()
		upd.Spec.HolderIdentity = &node.Name
		upd.Spec.LeaseDurationSeconds = &secs
		upd.Spec.RenewTime = &now
		if !ownedBy(upd, node) {
			// A Lease left from an earlier Node of the same name: own it
			// anew so it is collected with this one.
			upd.OwnerReferences = []metav1.OwnerReference{owner}
		}
		l, err := api.Update(ctx, upd, metav1.UpdateOptions{FieldManager: FieldManager})
		if err != nil {
			w.count("lease", err)
		}
		return l, err
	}
	out, err := upsert(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, node.Name, get, create, update)
	if err != nil {
		return nil, fmt.Errorf("renew lease %s/%s: %w", LeaseNamespace, node.Name, err)
	}
	return out, nil
}

// renewLease renews the Lease of node. taken says the session took it,
// and uid is its UID then: the renewal is a merge patch of its spec with
// that UID, and no resourceVersion, so nothing more of the Lease need be
// kept; a Lease that is gone, or is another one by now, is renewed (or
// created) as RenewLease does. It returns the Lease's UID.
func (w *Writer) renewLease(ctx context.Context, as asnode.Client, node *corev1.Node, taken bool, uid types.UID) (types.UID, error) {
	if taken {
		p := map[string]any{"spec": map[string]any{"holderIdentity": node.Name, "leaseDurationSeconds": w.leaseSeconds(),
			"renewTime": metav1.NewMicroTime(w.cfg.Now())}}
		if uid != "" { // the API server gives every Lease one; fakes may not
			p["metadata"] = map[string]any{"uid": uid}
		}
		body, err := json.Marshal(p)
		if err != nil {
			return "", err
		}
		_, err = as.CoordinationV1().Leases(LeaseNamespace).Patch(ctx, node.Name, types.MergePatchType, body, metav1.PatchOptions{FieldManager: FieldManager})
		if err == nil {
			return uid, nil
		}
		if !apierrors.IsNotFound(err) && !uidChanged(err) {
			w.count("lease", err)
			return "", fmt.Errorf("renew lease %s/%s: %w", LeaseNamespace, node.Name, err)
		}
	}
	l, err := w.RenewLease(ctx, as, node)
	if err != nil {
		return "", err
	}
	return l.UID, nil
}

// leaseSeconds is LeaseDuration in whole seconds, at least 1.
func (w *Writer) leaseSeconds() int32 {
	return max(int32(w.cfg.LeaseDuration/time.Second), 1)
}

func ownedBy(l *coordinationv1.Lease, node *corev1.Node) bool {
	for _, o := range l.OwnerReferences {
		if o.Kind == "Node" && o.Name == node.Name && o.UID == node.UID {
			return true
		}
	}
	return false
}
