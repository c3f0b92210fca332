package watchmux_test

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"outpost.dev/cloud/asnode"
	"outpost.dev/test/harness"
	"outpost.dev/test/heapstat"
	"outpost.dev/test/wait"
)

// counter is a Handler that counts events.
type counter struct{ n atomic.Int32 }

func (c *counter) Event(watch.Event) bool { c.n.Add(1); return true }
func (c *counter) End(error)              {}

// BenchmarkWatchMemory opens 500 pod watches, each as its own node
// (cloud/asnode) against a real API server, once as watchmux streams and
// once with client-go's watch over asnode's shared transport, and reports
// the Go heap and stacks and the goroutines each open watch holds once its
// first event arrived: the watch alone, no cache.
func BenchmarkWatchMemory(b *testing.B) {
	const n = 500
	ctx := b.Context()
	cp, err := harness.StartControlPlane(ctx, harness.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer cp.Stop()
	client := cp.Client()
	node := func(i int) string { return fmt.Sprintf("edge-%d", i) }
	for i := range n {
		if _, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node(i)}}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		if _, err := client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: node(i)},
			Spec:       corev1.PodSpec{NodeName: node(i), Containers: []corev1.Container{{Name: "c", Image: "example.invalid/c"}}},
		}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	cfg := cp.RESTConfig()
	cfg.QPS = -1 // unthrottled, both ways alike
	measure := func() (uint64, int) { return heapstat.LiveWithStacks(), runtime.NumGoroutine() }
	opts := func(i int) metav1.ListOptions {
		return metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node(i)).String(), AllowWatchBookmarks: true}
	}
	run := func(b *testing.B, open func(p *asnode.Impersonating, i int, c *counter) func()) {
		for b.Loop() {
			mem0, g0 := measure()
			p, err := asnode.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			counters := make([]*counter, n)
			stops := make([]func(), n)
			for i := range n {
				counters[i] = &counter{}
				stops[i] = open(p, i, counters[i])
			}
			wait.For(b, 2*time.Minute, "every watch's first event", func() bool {
				for _, c := range counters {
					if c.n.Load() == 0 {
						return false
					}
				}
				return true
			})
			mem, g := measure()
			b.ReportMetric((float64(mem)-float64(mem0))/n, "B/watch")
			b.ReportMetric(float64(g-g0)/n, "goroutines/watch")
			for _, stop := range stops {
				stop()
			}
			p.Close()
		}
	}
	b.Run("watchmux", func(b *testing.B) {
		run(b, func(p *asnode.Impersonating, i int, c *counter) func() {
			cl, err := p.For(node(i))
			if err != nil {
				b.Fatal(err)
			}
			s, err := cl.(asnode.Streams).WatchStream(ctx, "/api/v1/pods", opts(i), c)
			if err != nil {
				b.Fatal(err)
			}
			return s.Cancel
		})
	})
	b.Run("client-go", func(b *testing.B) {
		run(b, func(p *asnode.Impersonating, i int, c *counter) func() {
			cl, err := p.For(node(i))
			if err != nil {
				b.Fatal(err)
			}
			w, err := cl.CoreV1().Pods("").Watch(ctx, opts(i))
			if err != nil {
				b.Fatal(err)
			}
			done := make(chan struct{})
			go func() { // the caller's loop, as a cache's was
				defer close(done)
				for ev := range w.ResultChan() {
					c.Event(ev)
				}
			}()
			return func() { w.Stop(); <-done }
		})
	})
}
