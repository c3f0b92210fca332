// Package identity records which node certificates the relay accepts, so
// that a certificate can be revoked before it expires and every relay
// replica agrees on it.
//
// Each joined node has one record: a ConfigMap named RecordName(node) in
// the relay's namespace, written with the relay's own credentials at join
// and by an administrator's `outpost-relay node revoke`. A node's identity
// (system:node:NAME) cannot write there. Every replica watches the records
// and refuses a certificate unless its record
//
//   - exists and is not revoked, and
//   - lists the certificate's serial number: a join records the new
//     certificate as the only one, so re-joining a node (with a token bound
//     to it) revokes every certificate it had before; a rotation on the
//     link (AddSerial) adds the new one next to the current one, and the
//     old one is dropped (Prune) once the node connected with the new;
//
// and, once the node's Node was created, unless that Node still exists
// with the UID recorded: deleting an edge Node revokes its certificates,
// and the relay never re-creates a deleted Node from an old certificate.
// A join for a name that has a record needs a token bound to that name.
package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"

	"outpost.dev/cloud/listwatch"
)

// Label marks identity records; its value is the node name.
const Label = "outpost.dev/node-identity"

// Keys of a record's data.
const (
	keyNode    = "node"
	keySerials = "serials" // hex serial numbers accepted, comma-separated
	keyNodeUID = "nodeUID" // UID of the Node created for this identity
	keyRevoked = "revoked" // RFC 3339 time of the revocation
	keyReason  = "reason"
)

// maxSerials bounds the certificates a record accepts at once.
const maxSerials = 2

// RecordName is the name of node's record.
func RecordName(node string) string { return "outpost-node-" + node }

// Serial is how a certificate's serial number is recorded.
func Serial(c *x509.Certificate) string { return c.SerialNumber.Text(16) }

// RejoinHint ends every refusal that a re-join cures.
func RejoinHint(node string) string {
	return fmt.Sprintf(`re-join it with a token bound to it ("outpost-relay token create --node %s --uses 1")`, node)
}

// Record is one node's identity record.
type Record struct {
	Node    string
	Serials []string
	NodeUID string
	Revoked time.Time // zero if not revoked
	Reason  string
}

// Accepts says whether the record accepts a certificate with serial.
func (r *Record) Accepts(serial string) bool {
	return r.Revoked.IsZero() && slices.Contains(r.Serials, serial)
}

func parse(cm *corev1.ConfigMap) *Record {
	r := &Record{Node: cm.Data[keyNode], NodeUID: cm.Data[keyNodeUID], Reason: cm.Data[keyReason]}
	for _, s := range strings.Split(cm.Data[keySerials], ",") {
		if s = strings.TrimSpace(s); s != "" && len(r.Serials) < maxSerials {
			r.Serials = append(r.Serials, s)
		}
	}
	if t, err := time.Parse(time.RFC3339, cm.Data[keyRevoked]); err == nil {
		r.Revoked = t
	} else if cm.Data[keyRevoked] != "" {
		r.Revoked = time.Unix(0, 0) // unreadable: revoked all the same
	}
	return r
}

func (r *Record) write(cm *corev1.ConfigMap) {
	cm.Data = map[string]string{keyNode: r.Node, keySerials: strings.Join(r.Serials, ","), keyNodeUID: r.NodeUID}
	if !r.Revoked.IsZero() {
		cm.Data[keyRevoked] = r.Revoked.UTC().Format(time.RFC3339)
		cm.Data[keyReason] = r.Reason
	}
}

// Registry reads and writes the records of one namespace.
type Registry struct {
	client    kubernetes.Interface
	namespace string
	informer  cache.SharedIndexInformer
	now       func() time.Time
}

// New builds a registry for the records in namespace. Run starts its
// informer; a registry that is not run reads the API server.
func New(client kubernetes.Interface, namespace string) *Registry {
	r := &Registry{
		client: client, namespace: namespace, now: time.Now,
		informer: cache.NewSharedIndexInformer(listwatch.Selected(client, client.CoreV1().ConfigMaps(namespace), "", Label),
			&corev1.ConfigMap{}, 0, cache.Indexers{}),
	}
	// A replica holds a record per node: keep the parsed record alone.
	_ = r.informer.SetTransform(cached)
	return r
}

// cachedRecord is what the informer keeps of a record's ConfigMap: its
// name, namespace and resourceVersion (the informer's key and
// bookkeeping) and the parsed record, without the ConfigMap's maps and
// managedFields.
type cachedRecord struct {
	metav1.ObjectMeta
	rec Record
}

// cached is the informer's transform: a record's ConfigMap becomes a
// cachedRecord, built anew, leaving o as it was; anything else stays.
func cached(o any) (any, error) {
	cm, ok := o.(*corev1.ConfigMap)
	if !ok || cm.Labels[Label] == "" {
		return o, nil
	}
	return &cachedRecord{ObjectMeta: metav1.ObjectMeta{Name: cm.Name, Namespace: cm.Namespace, ResourceVersion: cm.ResourceVersion},
		rec: *parse(cm)}, nil
}

// Run runs the informer until ctx ends.
func (r *Registry) Run(ctx context.Context) { go r.informer.RunWithContext(ctx) }

// Informer is the records' informer, for handlers that act when a record
// changes (closing revoked links).
func (r *Registry) Informer() cache.SharedIndexInformer { return r.informer }

// FromObject is the record an informer event carries, or nil.
func FromObject(o any) *Record {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	switch o := o.(type) {
	case *cachedRecord:
		rec := o.rec
		rec.Serials = slices.Clone(rec.Serials) // the cache's stays as it is
		return &rec
	case *corev1.ConfigMap:
		if o.Labels[Label] != "" {
			return parse(o)
		}
	}
	return nil
}

// Get returns node's record, nil if it has none: from the cache when it
// holds one, else from the API server.
func (r *Registry) Get(ctx context.Context, node string) (*Record, error) {
	if r.informer.HasSynced() {
		if o, ok, _ := r.informer.GetStore().GetByKey(r.namespace + "/" + RecordName(node)); ok {
			if rec := FromObject(o); rec != nil {
				return rec, nil
			}
		}
	}
	return r.Fresh(ctx, node)
}

// Fresh returns node's record as the API server has it now, nil if none.
func (r *Registry) Fresh(ctx context.Context, node string) (*Record, error) {
	cm, err := r.client.CoreV1().ConfigMaps(r.namespace).Get(ctx, RecordName(node), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read identity record %s/%s: %w", r.namespace, RecordName(node), err)
	}
	return parse(cm), nil
}

// ErrTaken is Issue's answer when another join recorded the name first.
var ErrTaken = errors.New("another join recorded this node name a moment ago")

// Issue records serial as node's only certificate. A first join (rejoin
// false) creates the record and fails with ErrTaken if one exists; a
// re-join replaces it, revoking every earlier certificate and lifting a
// revocation. nodeUID is the UID of node's Node if it exists.
func (r *Registry) Issue(ctx context.Context, node, serial, nodeUID string, rejoin bool) error {
	api := r.client.CoreV1().ConfigMaps(r.namespace)
	rec := &Record{Node: node, Serials: []string{serial}, NodeUID: nodeUID}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: RecordName(node), Namespace: r.namespace,
		Labels: map[string]string{Label: node, "app.kubernetes.io/name": "outpost-relay"}}}
	rec.write(cm)
	if !rejoin {
		_, err := api.Create(ctx, cm, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return ErrTaken
		}
		return err
	}
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		cur, err := api.Get(ctx, cm.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = api.Create(ctx, cm, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return apierrors.NewConflict(corev1.Resource("configmaps"), cm.Name, err)
			}
			return err
		}
		if err != nil {
			return err
		}
		upd := cur.DeepCopy()
		upd.Labels = cm.Labels
		rec.write(upd)
		_, err = api.Update(ctx, upd, metav1.UpdateOptions{})
		return err
	})
}

// update applies change to node's record, read fresh, with its
// resourceVersion as precondition; a record that does not exist is
// created first when create says so.
func (r *Registry) update(ctx context.Context, node string, create bool, change func(*Record) bool) error {
	api := r.client.CoreV1().ConfigMaps(r.namespace)
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		cur, err := api.Get(ctx, RecordName(node), metav1.GetOptions{})
		if apierrors.IsNotFound(err) && create {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: RecordName(node), Namespace: r.namespace,
				Labels: map[string]string{Label: node, "app.kubernetes.io/name": "outpost-relay"}}}
			rec := &Record{Node: node}
			change(rec)
			rec.write(cm)
			_, err = api.Create(ctx, cm, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return apierrors.NewConflict(corev1.Resource("configmaps"), cm.Name, err)
			}
			return err
		}
		if err != nil {
			return err
		}
		rec := parse(cur)
		if !change(rec) {
			return nil
		}
		upd := cur.DeepCopy()
		rec.write(upd)
		_, err = api.Update(ctx, upd, metav1.UpdateOptions{})
		return err
	})
}

// Revoke revokes every certificate of node: no relay replica accepts one
// again, and live links are closed. A node without a record gets one that
// says so. Only a join with a token bound to node lifts it.
func (r *Registry) Revoke(ctx context.Context, node, reason string) error {
	at := r.now()
	if err := r.update(ctx, node, true, func(rec *Record) bool {
		rec.Serials, rec.Revoked, rec.Reason = nil, at, reason
		return true
	}); err != nil {
		return fmt.Errorf("revoke node %q: %w", node, err)
	}
	return nil
}

// BindNode records uid as the UID of node's Node, if none is recorded
// yet. From then on the Node's deletion revokes node's certificates.
func (r *Registry) BindNode(ctx context.Context, node, uid string) error {
	if err := r.update(ctx, node, false, func(rec *Record) bool {
		if rec.NodeUID != "" {
			return false
		}
		rec.NodeUID = uid
		return true
	}); err != nil {
		return fmt.Errorf("bind identity record of %q to its Node: %w", node, err)
	}
	return nil
}

// ErrNotAccepted is AddSerial's answer when the record no longer accepts
// the certificate the request came with (revoked, or replaced meanwhile).
var ErrNotAccepted = errors.New("the identity record no longer accepts this certificate")

// AddSerial records next as a rotated certificate of node, accepted next
// to current, the certificate of the connection that asked for it; any
// other serial is dropped, so a record holds at most the two. It fails
// with ErrNotAccepted unless the record, read fresh, still accepts current.
func (r *Registry) AddSerial(ctx context.Context, node, current, next string) error {
	accepted := true
	err := r.update(ctx, node, false, func(rec *Record) bool {
		if accepted = rec.Accepts(current); !accepted {
			return false
		}
		rec.Serials = []string{current, next}
		return true
	})
	if err == nil && !accepted {
		err = ErrNotAccepted
	}
	if err != nil {
		return fmt.Errorf("record the rotated certificate of %q: %w", node, err)
	}
	return nil
}

// Rotated says whether serial is the newer of two accepted serials: the
// node connected with a rotated certificate, and Prune may drop the old one.
func (rec *Record) Rotated(serial string) bool {
	return rec != nil && rec.Accepts(serial) && len(rec.Serials) > 1 && rec.Serials[len(rec.Serials)-1] == serial
}

// Prune makes serial the only certificate of node, if the record still
// accepts it: the node connected with its rotated certificate, so the one
// it replaced is no longer accepted.
func (r *Registry) Prune(ctx context.Context, node, serial string) error {
	if err := r.update(ctx, node, false, func(rec *Record) bool {
		if !rec.Accepts(serial) || len(rec.Serials) == 1 {
			return false
		}
		rec.Serials = []string{serial}
		return true
	}); err != nil {
		return fmt.Errorf("drop the replaced certificate of %q: %w", node, err)
	}
	return nil
}

// Refusal says why a certificate is not accepted, and what to do.
func (rec *Record) Refusal(node, serial string) string {
	switch {
	case rec == nil:
		return fmt.Sprintf("node %s has no identity record (it was never joined through this relay, or the record was deleted): %s", node, RejoinHint(node))
	case !rec.Revoked.IsZero():
		why := ""
		if rec.Reason != "" {
			why = " (" + rec.Reason + ")"
		}
		return fmt.Sprintf("the certificates of node %s were revoked at %s%s: %s", node, rec.Revoked.UTC().Format(time.RFC3339), why, RejoinHint(node))
	case !slices.Contains(rec.Serials, serial):
		return fmt.Sprintf("this certificate of node %s was replaced by a later join: use that identity, or %s", node, RejoinHint(node))
	}
	return ""
}
