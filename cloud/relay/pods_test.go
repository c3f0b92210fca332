package relay_test

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"outpost.dev/wire"
)

// TestInitialPodSync: after the hello-ack the relay sends the pods bound
// to the node, Initial and Complete, and nothing of other nodes.
func TestInitialPodSync(t *testing.T) {
	tr := newTestRelay(t, nil)
	ctx := context.Background()
	for _, p := range []struct{ name, node string }{{"mine", "gw-pods"}, {"theirs", "gw-other"}} {
		_, err := tr.client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: "default", UID: types.UID("uid-" + p.name), ResourceVersion: "1"},
			Spec:       corev1.PodSpec{NodeName: p.node, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	c := tr.hello(t, "gw-pods")
	f, err := recvAny(t, c)
	if err != nil {
		t.Fatal(err)
	}
	if f.Type != wire.TypeSync {
		t.Fatalf("got %s, want sync", f.Type)
	}
	var s wire.Sync
	if err := f.DecodeBody(&s); err != nil {
		t.Fatal(err)
	}
	if !s.Initial || !s.Complete || len(s.Deletes) != 0 || len(s.Upserts) != 1 || s.Upserts[0].Name != "mine" {
		t.Fatalf("initial sync %+v", s)
	}
	// The connection still answers while the sync runs.
	send(t, c, encode(t, wire.TypeHeartbeat, 0, nil))
	mustRecv(t, c, wire.TypeHeartbeat)
}
