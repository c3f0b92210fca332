package watchcache_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"outpost.dev/cloud/watchcache"
	"outpost.dev/test/wait"
)

func pod(name, rv string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, ResourceVersion: rv}}
}

// fakeLW lists what items holds and hands out FakeWatchers the test
// drives; it records the resourceVersion of each watch.
type fakeLW struct {
	mu       sync.Mutex
	items    []corev1.Pod
	lists    int
	watchRVs []string
	watches  chan *watch.FakeWatcher
}

func (f *fakeLW) lw() cache.ListerWatcher {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.lists++
			return &corev1.PodList{ListMeta: metav1.ListMeta{ResourceVersion: "10"}, Items: append([]corev1.Pod(nil), f.items...)}, nil
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			f.mu.Lock()
			f.watchRVs = append(f.watchRVs, o.ResourceVersion)
			f.mu.Unlock()
			w := watch.NewFakeWithChanSize(10, false)
			f.watches <- w
			return w, nil
		},
	}
}

func TestCacheListsWatchesAndResumes(t *testing.T) {
	f := &fakeLW{items: []corev1.Pod{*pod("a", "5")}, watches: make(chan *watch.FakeWatcher, 10)}
	var notes atomic.Int32
	c := watchcache.Start(t.Context(), f.lw(), watchcache.Options{Notify: func() { notes.Add(1) }})
	defer c.Stop()
	next := func() *watch.FakeWatcher {
		select {
		case w := <-f.watches:
			return w
		case <-time.After(30 * time.Second):
			t.Fatal("no watch started")
			return nil
		}
	}
	w := next()
	if !c.HasSynced() {
		t.Fatal("watch started before the list was stored")
	}
	if _, ok := c.Get("default/a"); !ok {
		t.Fatal("listed pod default/a missing")
	}
	w.Add(pod("b", "11"))
	w.Modify(pod("a", "12"))
	w.Delete(pod("b", "13"))
	w.Action(watch.Bookmark, pod("", "14"))
	wait.For(t, 30*time.Second, "three events applied", func() bool {
		o, ok := c.Get("default/a")
		_, gone := c.Get("default/b")
		return ok && o.(*corev1.Pod).ResourceVersion == "12" && !gone && notes.Load() >= 4
	})
	// The server closes the watch: resumed from the bookmark's version,
	// without a list.
	w.Stop()
	w = next()
	// Expired: the cache lists again and watches from the new list.
	f.mu.Lock()
	f.items = []corev1.Pod{*pod("c", "20")}
	f.mu.Unlock()
	w.Error(&apierrors.NewResourceExpired("too old").ErrStatus)
	next()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lists != 2 || len(f.watchRVs) != 3 || f.watchRVs[0] != "10" || f.watchRVs[1] != "14" || f.watchRVs[2] != "10" {
		t.Fatalf("lists=%d, watches from %v; want 2 lists and watches from [10 14 10]", f.lists, f.watchRVs)
	}
	if len(c.List()) != 1 {
		t.Fatalf("after the relist: %d objects, want only default/c", len(c.List()))
	}
	if _, ok := c.Get("default/c"); !ok {
		t.Fatal("relisted pod default/c missing")
	}
}

func TestCacheRetriesAFailedList(t *testing.T) {
	var calls atomic.Int32
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			if calls.Add(1) == 1 {
				return nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", nil)
			}
			return &corev1.PodList{Items: []corev1.Pod{*pod("a", "1")}}, nil
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return watch.NewFake(), nil
		},
	}
	c := watchcache.Start(t.Context(), lw, watchcache.Options{})
	defer c.Stop()
	wait.For(t, 30*time.Second, "listed after a refusal", c.HasSynced)
	if calls.Load() != 2 {
		t.Fatalf("%d lists, want 2", calls.Load())
	}
}
