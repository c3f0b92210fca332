package satoken

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	testpeer "outpost.dev/test/peer"
	"outpost.dev/wire"
)

// joinPeer joins node name through the relay's HTTP join protocol: a
// protocol-level agent that can say what a real agent never would.
func joinPeer(t *testing.T, ctx context.Context, name string) *testpeer.Peer {
	t.Helper()
	p, err := testpeer.Join(ctx, st, relay, name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// peerSession connects with a hello claiming held and returns the sync
// frames the relay sends, keeping the link alive until the test ends.
func peerSession(t *testing.T, ctx context.Context, p *testpeer.Peer, held []wire.ObjectVersion) <-chan wire.Sync {
	t.Helper()
	hello := testpeer.Hello(p.Name)
	hello.Objects = held
	syncs := make(chan wire.Sync, 64)
	s, err := p.Connect(ctx, hello, heartbeatInterval/2, func(ctx context.Context, f wire.Frame) bool {
		var s wire.Sync
		if f.Type != wire.TypeSync || f.DecodeBody(&s) != nil {
			return true
		}
		select {
		case syncs <- s:
			return true
		case <-ctx.Done():
			return false
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Cancel)
	go func() { <-s.Done; close(syncs) }()
	return syncs
}

// TestNodeCannotObtainAnotherNodesToken: node A's connection, claiming to
// hold the pod and token of a pod bound to node B, is told to delete them
// and never receives B's pod or a token for it; its own pod's token is
// bound to its own pod and node.
func TestNodeCannotObtainAnotherNodesToken(t *testing.T) {
	need(t)
	ctx := ctxFor(t, 5*time.Minute)
	theirs := defaultPod(t, ctx) // bound to the edge node (B)
	const nodeA = "sa-peer-a"
	pa := joinPeer(t, ctx, nodeA)
	kc := st.CP.Client()
	mine, err := kc.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "sa-peer-a-pod", Namespace: "default"},
		Spec:       corev1.PodSpec{NodeName: nodeA, Containers: []corev1.Container{{Name: "app", Image: st.Images[0].Ref, Command: []string{"sleep", "3600"}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kc.CoreV1().Pods("default").Delete(context.Background(), mine.Name, *metav1.NewDeleteOptions(0))
	})

	// A stale version makes a relay mint at once, were it B's pod to it.
	syncs := peerSession(t, ctx, pa, []wire.ObjectVersion{
		{Kind: wire.KindPod, UID: string(theirs.UID), Version: theirs.ResourceVersion},
		{Kind: wire.KindToken, UID: string(theirs.UID), Version: "1.2.0123456789ab"},
	})
	var got wire.Sync
	deadline := time.After(time.Minute)
	var myToken *wire.Object
	deletes := map[wire.Kind]bool{}
	quietUntil := time.Time{}
	for quietUntil.IsZero() || time.Now().Before(quietUntil) {
		select {
		case s, ok := <-syncs:
			if !ok {
				t.Fatal("connection closed")
			}
			got.Upserts = append(got.Upserts, s.Upserts...)
			for _, u := range s.Upserts {
				if u.UID == string(theirs.UID) || u.Name == theirs.Name {
					t.Fatalf("node A received %s of node B's pod %s", u.Kind, theirs.Name)
				}
				if u.Kind == wire.KindToken && u.UID == string(mine.UID) {
					o := u
					myToken = &o
				}
			}
			for _, d := range s.Deletes {
				if d.UID == string(theirs.UID) {
					deletes[d.Kind] = true
				}
			}
			if myToken != nil && deletes[wire.KindPod] && deletes[wire.KindToken] && quietUntil.IsZero() {
				// Watch a while longer: refreshes come every 20 s.
				quietUntil = time.Now().Add(refreshAfter + 10*time.Second)
			}
		case <-deadline:
			if quietUntil.IsZero() {
				t.Fatalf("after 1m: own token %v, deletes of B's pod and token %v", myToken != nil, deletes)
			}
		case <-time.After(time.Second):
		}
	}
	if len(myToken.Token.Items) != 1 {
		t.Fatalf("own token object %+v", myToken.Token)
	}
	mine, err = kc.CoreV1().Pods("default").Get(ctx, mine.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	review(t, ctx, myToken.Token.Items[0].Token, mine)
}
