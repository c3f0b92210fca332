package watchcache_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/cloud/asnode"
	"outpost.dev/cloud/listwatch"
	"outpost.dev/cloud/watchcache"
	"outpost.dev/cloud/watchmux"
	"outpost.dev/test/harness"
	"outpost.dev/test/wait"
)

// Caches of different nodes' pods, listed and watched as each node over
// watchmux streams against a real API server: each holds only its node's
// pods, none holds a goroutine while it watches, and all resume when
// their connection is cut.
func TestCachesAsNodesOverStreams(t *testing.T) {
	ctx := t.Context()
	cp, err := harness.StartControlPlane(ctx, harness.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Stop()
	cfg := cp.RESTConfig()
	client := cp.Client()
	an, err := asnode.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer an.Close()
	if err := an.StreamsUnavailable(); err != nil {
		t.Fatal(err)
	}
	mux, err := watchmux.New(cfg, watchmux.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer mux.Close()

	createPod := func(node, name string) {
		t.Helper()
		_, err := client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "example.invalid/c"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	const n = 20
	before := runtime.NumGoroutine()
	caches := make([]*watchcache.Cache, n)
	for i := range n {
		node := fmt.Sprintf("edge-%d", i)
		if _, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		createPod(node, node+"-a")
		c, err := an.For(node)
		if err != nil {
			t.Fatal(err)
		}
		watchFn := func(ctx context.Context, o metav1.ListOptions, h watchmux.Handler) (watchcache.Stream, error) {
			o.FieldSelector = listwatch.OnNode(node)
			s, err := mux.Watch(ctx, watchmux.Request{Path: "/api/v1/pods", Options: o, User: asnode.UserPrefix + node}, h)
			if err != nil {
				return nil, err
			}
			return s, nil
		}
		caches[i] = watchcache.Start(ctx, listwatch.PodsOnNode(c, node), watchcache.Options{Watch: watchFn})
		defer caches[i].Stop()
	}
	holds := func(i int, want ...string) (bool, string) {
		var got []string
		ok := true
		for _, o := range caches[i].List() {
			p := o.(*corev1.Pod)
			got = append(got, p.Name)
			if p.Spec.NodeName != fmt.Sprintf("edge-%d", i) {
				ok = false
			}
		}
		if len(got) != len(want) {
			ok = false
		}
		for _, w := range want {
			if _, in := caches[i].Get("default/" + w); !in {
				ok = false
			}
		}
		return ok, fmt.Sprintf("edge-%d holds %v, want %v", i, got, want)
	}
	for i := range n {
		createPod(fmt.Sprintf("edge-%d", i), fmt.Sprintf("edge-%d-b", i))
	}
	for i := range n {
		wait.State(t, ctx, time.Minute, "the cache holds its node's pods", func() (bool, string) {
			return holds(i, fmt.Sprintf("edge-%d-a", i), fmt.Sprintf("edge-%d-b", i))
		})
	}
	// The watches' goroutines: the connections' readers, not one per
	// cache (the lists' goroutines have returned).
	wait.State(t, ctx, time.Minute, "no goroutine per cache", func() (bool, string) {
		g := runtime.NumGoroutine() - before
		return g <= 2*mux.Conns()+2, fmt.Sprintf("%d goroutines more than before %d caches on %d connections", g, n, mux.Conns())
	})

	mux.Disconnect()
	for i := range n {
		createPod(fmt.Sprintf("edge-%d", i), fmt.Sprintf("edge-%d-c", i))
	}
	for i := range n {
		wait.State(t, ctx, time.Minute, "the resumed cache holds the pod made while cut off", func() (bool, string) {
			return holds(i, fmt.Sprintf("edge-%d-a", i), fmt.Sprintf("edge-%d-b", i), fmt.Sprintf("edge-%d-c", i))
		})
	}
	if mux.Conns() != 1 {
		t.Fatalf("%d connections after resuming %d watches, want 1", mux.Conns(), n)
	}
}
