package identity

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
)

func TestRecordLifecycle(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	r := New(client, "outpost-system")

	if rec, err := r.Get(ctx, "gw-1"); err != nil || rec != nil {
		t.Fatalf("no record yet: %v %v", rec, err)
	}
	if why := (*Record)(nil).Refusal("gw-1", "a1"); !strings.Contains(why, "no identity record") || !strings.Contains(why, "token create --node gw-1") {
		t.Errorf("refusal without a record: %q", why)
	}
	if err := r.Issue(ctx, "gw-1", "a1", "", false); err != nil {
		t.Fatal(err)
	}
	if err := r.Issue(ctx, "gw-1", "b2", "", false); !errors.Is(err, ErrTaken) {
		t.Fatalf("second first-join: %v, want ErrTaken", err)
	}
	rec, _ := r.Get(ctx, "gw-1")
	if !rec.Accepts("a1") || rec.Accepts("b2") || rec.Refusal("gw-1", "a1") != "" {
		t.Fatalf("record %+v", rec)
	}
	if why := rec.Refusal("gw-1", "b2"); !strings.Contains(why, "replaced by a later join") {
		t.Errorf("refusal of another serial: %q", why)
	}

	if err := r.BindNode(ctx, "gw-1", "uid-1"); err != nil {
		t.Fatal(err)
	}
	if err := r.BindNode(ctx, "gw-1", "uid-2"); err != nil {
		t.Fatal(err)
	}
	if rec, _ = r.Fresh(ctx, "gw-1"); rec.NodeUID != "uid-1" {
		t.Fatalf("bound to %q, want the first Node's uid-1", rec.NodeUID)
	}

	if err := r.Revoke(ctx, "gw-1", "stolen"); err != nil {
		t.Fatal(err)
	}
	rec, _ = r.Fresh(ctx, "gw-1")
	if rec.Accepts("a1") || rec.Revoked.IsZero() || !strings.Contains(rec.Refusal("gw-1", "a1"), "revoked at") ||
		!strings.Contains(rec.Refusal("gw-1", "a1"), "(stolen)") {
		t.Fatalf("revoked record %+v: %q", rec, rec.Refusal("gw-1", "a1"))
	}
	// A re-join lifts the revocation with a new certificate only.
	if err := r.Issue(ctx, "gw-1", "c3", "uid-1", true); err != nil {
		t.Fatal(err)
	}
	if rec, _ = r.Fresh(ctx, "gw-1"); !rec.Accepts("c3") || rec.Accepts("a1") || !rec.Revoked.IsZero() {
		t.Fatalf("after re-join: %+v", rec)
	}
	// Revoking a node that was never recorded records the revocation.
	if err := r.Revoke(ctx, "gw-old", ""); err != nil {
		t.Fatal(err)
	}
	if rec, _ = r.Fresh(ctx, "gw-old"); rec == nil || rec.Revoked.IsZero() {
		t.Fatalf("revoked unknown node: %+v", rec)
	}
}

// A record someone edited by hand into nonsense refuses everything.
func TestUnreadableRevocationStillRevokes(t *testing.T) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: RecordName("gw-1"), Namespace: "ns", Labels: map[string]string{Label: "gw-1"}},
		Data: map[string]string{keyNode: "gw-1", keySerials: "a1", keyRevoked: "yesterday"}}
	if rec := FromObject(cm); rec == nil || rec.Accepts("a1") {
		t.Fatalf("record with an unreadable revocation accepts: %+v", rec)
	}
}

// A rotation keeps both serials until the node connects with the new one.
func TestRotationKeepsBothThenPrunes(t *testing.T) {
	ctx := context.Background()
	r := New(fake.NewClientset(), "outpost-system")
	if err := r.Issue(ctx, "gw-1", "a1", "uid-1", false); err != nil {
		t.Fatal(err)
	}
	if err := r.AddSerial(ctx, "gw-1", "zz", "b2"); !errors.Is(err, ErrNotAccepted) {
		t.Fatalf("rotation from a serial the record does not accept: %v", err)
	}
	if err := r.AddSerial(ctx, "gw-1", "a1", "b2"); err != nil {
		t.Fatal(err)
	}
	rec, _ := r.Fresh(ctx, "gw-1")
	if !rec.Accepts("a1") || !rec.Accepts("b2") || rec.NodeUID != "uid-1" || rec.Rotated("a1") || !rec.Rotated("b2") {
		t.Fatalf("during the overlap: %+v", rec)
	}
	// A second rotation from the old certificate replaces the pending one.
	if err := r.AddSerial(ctx, "gw-1", "a1", "c3"); err != nil {
		t.Fatal(err)
	}
	if rec, _ = r.Fresh(ctx, "gw-1"); rec.Accepts("b2") || !rec.Accepts("c3") || len(rec.Serials) != 2 {
		t.Fatalf("second rotation: %+v", rec)
	}
	if err := r.Prune(ctx, "gw-1", "c3"); err != nil {
		t.Fatal(err)
	}
	if rec, _ = r.Fresh(ctx, "gw-1"); rec.Accepts("a1") || !rec.Accepts("c3") || rec.Rotated("c3") {
		t.Fatalf("after pruning: %+v", rec)
	}
	if err := r.Revoke(ctx, "gw-1", ""); err != nil {
		t.Fatal(err)
	}
	if err := r.AddSerial(ctx, "gw-1", "c3", "d4"); !errors.Is(err, ErrNotAccepted) {
		t.Fatalf("rotation of a revoked node: %v", err)
	}
}

// The informer keeps the parsed record alone, not the ConfigMap: Get and
// FromObject answer from it as from the ConfigMap, and the transform
// leaves the ConfigMap it is given as it was.
func TestCacheKeepsParsedRecords(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewClientset()
	r := New(client, "outpost-system")
	if err := r.Issue(ctx, "gw-1", "a1", "uid-1", false); err != nil {
		t.Fatal(err)
	}
	if err := r.Revoke(ctx, "gw-2", "stolen"); err != nil {
		t.Fatal(err)
	}
	r.Run(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), r.Informer().HasSynced) {
		t.Fatal("informer never synced")
	}
	for _, o := range r.Informer().GetStore().List() {
		if _, ok := o.(*cachedRecord); !ok {
			t.Errorf("cache holds %T, want *cachedRecord", o)
		}
	}
	rec, err := r.Get(ctx, "gw-1")
	if err != nil || rec == nil || rec.Node != "gw-1" || rec.NodeUID != "uid-1" || !rec.Accepts("a1") || rec.Accepts("b2") {
		t.Fatalf("gw-1 from the cache: %+v %v", rec, err)
	}
	rec.Serials[0] = "changed"
	if again, _ := r.Get(ctx, "gw-1"); !again.Accepts("a1") {
		t.Error("changing a record Get returned changed the cache")
	}
	rec, err = r.Get(ctx, "gw-2")
	if err != nil || rec == nil || rec.Revoked.IsZero() || rec.Reason != "stolen" {
		t.Fatalf("gw-2 from the cache: %+v %v", rec, err)
	}

	cm, err := client.CoreV1().ConfigMaps("outpost-system").Get(ctx, RecordName("gw-1"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "outpost-relay"}}
	before := cm.DeepCopy()
	o, err := cached(cm)
	if err != nil {
		t.Fatal(err)
	}
	if !apiequality.Semantic.DeepEqual(cm, before) {
		t.Error("the transform changed the ConfigMap it was given")
	}
	if got := FromObject(o); got == nil || got.Node != "gw-1" || !got.Accepts("a1") {
		t.Errorf("record from the transformed object: %+v", got)
	}
	if got := FromObject(cache.DeletedFinalStateUnknown{Key: "x", Obj: o}); got == nil || got.Node != "gw-1" {
		t.Errorf("record from a deletion's final state: %+v", got)
	}
	other := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "unrelated"}}
	if o, _ := cached(other); o != any(other) || FromObject(o) != nil {
		t.Errorf("a ConfigMap that is no record became %#v", o)
	}
}
