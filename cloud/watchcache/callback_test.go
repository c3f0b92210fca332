package watchcache_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"outpost.dev/cloud/watchcache"
	"outpost.dev/cloud/watchmux"
)

// fakeStreams is a WatchFunc whose streams the test drives by calling
// their handlers, as a watchmux connection's reader does.
type fakeStreams struct {
	mu      sync.Mutex
	opened  []*fakeStream
	lists   int
	listErr error
}

type fakeStream struct {
	rv        string
	h         watchmux.Handler
	cancelled bool
}

func (s *fakeStream) Cancel() { s.cancelled = true }

func (f *fakeStreams) watch(ctx context.Context, o metav1.ListOptions, h watchmux.Handler) (watchcache.Stream, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &fakeStream{rv: o.ResourceVersion, h: h}
	f.opened = append(f.opened, s)
	return s, nil
}

func (f *fakeStreams) lw() cache.ListerWatcher {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.lists++
			if f.listErr != nil {
				return nil, f.listErr
			}
			return &corev1.PodList{ListMeta: metav1.ListMeta{ResourceVersion: "10"}, Items: []corev1.Pod{*pod("a", "5")}}, nil
		},
	}
}

func (f *fakeStreams) last(t *testing.T) *fakeStream {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.opened) == 0 {
		t.Fatal("no watch opened")
	}
	return f.opened[len(f.opened)-1]
}

func (f *fakeStreams) count() (lists, watches int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lists, len(f.opened)
}

// With a WatchFunc the Cache is driven by callbacks and timers alone: a
// failed watch is resumed from the last resourceVersion after the
// back-off, not before; an expired one relists at once; once stopped its
// stream is cancelled and nothing of it runs.
func TestCacheOverCallbacks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeStreams{}
		c := watchcache.Start(t.Context(), f.lw(), watchcache.Options{Watch: f.watch})
		synctest.Wait()
		s := f.last(t)
		if s.rv != "10" || !c.HasSynced() {
			t.Fatalf("watch from %q, synced %v; want from the list's 10", s.rv, c.HasSynced())
		}
		s.h.Event(watch.Event{Type: watch.Added, Object: pod("b", "11")})
		s.h.Event(watch.Event{Type: watch.Bookmark, Object: pod("", "12")})
		if _, ok := c.Get("default/b"); !ok {
			t.Fatal("added pod missing")
		}

		// A failure: resumed from the bookmark after the back-off
		// (at most backoffMin, 500ms, for a watch that brought events).
		s.h.End(errors.New("connection reset"))
		synctest.Wait()
		if _, w := f.count(); w != 1 {
			t.Fatalf("%d watches right after a failure, want the back-off first", w)
		}
		time.Sleep(500 * time.Millisecond)
		synctest.Wait()
		s2 := f.last(t)
		if s2 == s || s2.rv != "12" {
			t.Fatalf("resumed from %q, want 12", s2.rv)
		}

		// Expired: a relist at once, and a watch from it.
		s2.h.Event(watch.Event{Type: watch.Error, Object: &apierrors.NewResourceExpired("too old").ErrStatus})
		synctest.Wait()
		if l, _ := f.count(); l != 2 {
			t.Fatalf("%d lists after an expired watch, want 2", l)
		}
		s3 := f.last(t)
		if s3.rv != "10" {
			t.Fatalf("watch after the relist from %q, want 10", s3.rv)
		}
		// The old stream's late events are refused.
		if s2.h.Event(watch.Event{Type: watch.Added, Object: pod("z", "99")}) {
			t.Fatal("an ended watch's event was taken")
		}
		if _, ok := c.Get("default/z"); ok {
			t.Fatal("an ended watch's event was applied")
		}

		c.Stop()
		if !s3.cancelled {
			t.Fatal("Stop did not cancel the watch")
		}
		if s3.h.Event(watch.Event{Type: watch.Added, Object: pod("y", "13")}) {
			t.Fatal("a stopped cache took an event")
		}
		s3.h.End(errors.New("late"))
		time.Sleep(time.Minute)
		synctest.Wait()
		if l, w := f.count(); l != 2 || w != 3 {
			t.Fatalf("after Stop: %d lists, %d watches; want 2 and 3", l, w)
		}
	})
}

// A failed list is retried after the back-off, by timer.
func TestCacheRetriesAListByTimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeStreams{listErr: apierrors.NewServiceUnavailable("later")}
		c := watchcache.Start(t.Context(), f.lw(), watchcache.Options{Watch: f.watch})
		defer c.Stop()
		synctest.Wait()
		if l, _ := f.count(); l != 1 {
			t.Fatalf("%d lists, want 1", l)
		}
		f.mu.Lock()
		f.listErr = nil
		f.mu.Unlock()
		time.Sleep(500 * time.Millisecond)
		synctest.Wait()
		if l, w := f.count(); l != 2 || w != 1 || !c.HasSynced() {
			t.Fatalf("after the back-off: %d lists, %d watches, synced %v", l, w, c.HasSynced())
		}
	})
}

// Stop cancels a list in flight, and returns once it returned; once
// Start's context ended a failed list is not tried again.
func TestCacheStopCancelsListAndContextEndsRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		blocked := &cache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			},
		}
		c := watchcache.Start(context.Background(), blocked, watchcache.Options{Watch: (&fakeStreams{}).watch})
		synctest.Wait()
		c.Stop() // would block for good were the list not cancelled

		f := &fakeStreams{listErr: apierrors.NewServiceUnavailable("later")}
		ctx, cancel := context.WithCancel(context.Background())
		c = watchcache.Start(ctx, f.lw(), watchcache.Options{Watch: f.watch})
		defer c.Stop()
		synctest.Wait()
		cancel()
		time.Sleep(time.Minute)
		synctest.Wait()
		if l, w := f.count(); l != 1 || w != 0 {
			t.Fatalf("after the context ended: %d lists, %d watches; want the first list only", l, w)
		}
	})
}
