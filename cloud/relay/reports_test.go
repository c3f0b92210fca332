package relay_test

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	ktesting "k8s.io/client-go/testing"

	"outpost.dev/cloud/podstatus"
	"outpost.dev/cloud/relay"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

// goroutinesCreated is the count of goroutines the process created so far.
func goroutinesCreated(t testing.TB) uint64 {
	t.Helper()
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		t.Fatalf("runtime metric %s not supported", s[0].Name)
	}
	return s[0].Value.Uint64()
}

// waitedReports reads the relay's count of reports of type typ that
// waited for room off the loop.
func waitedReports(t *testing.T, reg *prometheus.Registry, typ wire.Type) float64 {
	t.Helper()
	return counter(t, reg, "outpost_relay_reports_waited_total", "type", typ.String())
}

// podReport is a report that pod i is Running.
func podReport(i int) *wire.PodStatus {
	return &wire.PodStatus{UID: fmt.Sprint("uid-p", i), Namespace: "default", Name: fmt.Sprint("p", i), Phase: "Running"}
}

// Reports whose queue has room are queued on the poller's loop: a burst
// of them starts no goroutine per report, and none waits.
func TestReportsWithRoomStartNoGoroutine(t *testing.T) {
	const n = 500 // below podstatus.DefaultMaxPending: room for all
	reg := prometheus.NewRegistry()
	tr := newTestRelay(t, func(cfg *relay.Config) {
		cfg.Registry = reg
		// One write, then none: the write of the second report waits for
		// a token until the connection ends, so the writer's worker stays
		// (its goroutines come and go with ready reports otherwise) and
		// the reports after it only queue.
		cfg.PodStatusQPS, cfg.PodStatusBurst = 1e-6, 1
	})
	c := tr.hello(t, "gw-burst")
	send(t, c, encode(t, wire.TypePodStatus, 1, podReport(0))) // no such pod: dropped, acked
	if f := mustRecv(t, c, wire.TypeAck); f.Ack != 1 {
		t.Fatalf("ack %d, want 1", f.Ack)
	}
	send(t, c, encode(t, wire.TypePodStatus, 2, podReport(1))) // its write waits for a token
	send(t, c, encode(t, wire.TypeHeartbeat, 0, nil))
	mustRecv(t, c, wire.TypeHeartbeat)

	frames := make([][]byte, n)
	for i := range frames {
		frames[i] = encode(t, wire.TypePodStatus, uint64(3+i), podReport(2+i))
	}
	hb := encode(t, wire.TypeHeartbeat, 0, nil)
	before := goroutinesCreated(t)
	for _, f := range frames {
		send(t, c, f)
	}
	send(t, c, hb)
	mustRecv(t, c, wire.TypeHeartbeat) // handled after every report before it
	created := goroutinesCreated(t) - before
	t.Logf("%d pod-status reports queued; %d goroutines created meanwhile (test's client included)", n, created)
	if created >= n/4 {
		t.Fatalf("%d goroutines created for %d reports with room in their queue; want far fewer than one each", created, n)
	}
	if w := waitedReports(t, reg, wire.TypePodStatus); w != 0 {
		t.Fatalf("%v reports waited for room, want 0", w)
	}
}

// A report whose queue is full waits off the loop with the connection's
// reading paused; the frames after it are handled after it, in order, and
// nothing is lost: every report is written (or dropped, for a pod that
// does not exist) and acked once room was made.
func TestReportsWaitForAFullQueueInOrder(t *testing.T) {
	// More pods than the connection's queue holds: while writes fail,
	// every report past them finds it full.
	const n = podstatus.DefaultMaxPending + 16
	reg := prometheus.NewRegistry()
	var held atomic.Bool
	held.Store(true)
	tr := newTestRelay(t, func(cfg *relay.Config) {
		cfg.Registry = reg
		cfg.PodStatusQPS, cfg.PodStatusBurst = 1e6, 1e6
		// Pod reads fail while held: each report is taken, fails and
		// waits its backoff in the queue, which fills. (Failing rather
		// than blocking: a reactor that blocks holds the clientset's
		// lock.)
		cfg.Client.(*fake.Clientset).PrependReactor("get", "pods", func(a ktesting.Action) (bool, runtime.Object, error) {
			if held.Load() {
				return true, nil, apierrors.NewServiceUnavailable("test: pod reads held")
			}
			return false, nil, nil
		})
	})
	const node = "gw-full"
	// Only the last pod exists: the others' reports, once reads work,
	// are dropped (acked) without a write, which keeps the test short.
	createPod(t, tr, fmt.Sprint("p", n), node)
	c := tr.hello(t, node)
	// One reader, which never waits for the test: it keeps taking the
	// pod sync's frames too. (A read whose context ends closes the
	// connection.)
	var acked atomic.Uint64
	var ended atomic.Bool
	go func() {
		for {
			_, b, err := c.Read(context.Background())
			if err != nil {
				ended.Store(true)
				return
			}
			if f, _ := wire.Decode(b); f.Type == wire.TypeAck {
				acked.Store(f.Ack)
			}
		}
	}()
	for i := range n {
		send(t, c, encode(t, wire.TypePodStatus, uint64(1+i), podReport(i)))
	}
	// A report of a pod not queued yet, likely to find no room; the next
	// one, of the same pod, must come after it (coalesced into it, or
	// written after it): the status written last is the last one sent.
	last := podReport(n)
	first := *last
	first.Phase = "Pending"
	send(t, c, encode(t, wire.TypePodStatus, uint64(n+1), &first))
	send(t, c, encode(t, wire.TypePodStatus, uint64(n+2), last))
	waitFor(t, "a report waiting for room", func() bool { return waitedReports(t, reg, wire.TypePodStatus) >= 1 })
	held.Store(false)
	wait.For(t, 60*time.Second, fmt.Sprintf("every report acked (ack %d)", n+2), func() bool {
		if ended.Load() {
			t.Fatalf("connection ended at ack %d", acked.Load())
		}
		return acked.Load() == n+2
	})
	t.Logf("%v of %d reports waited for room", waitedReports(t, reg, wire.TypePodStatus), n+2)
	p, err := tr.client.CoreV1().Pods("default").Get(context.Background(), last.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Status.Phase != corev1.PodRunning {
		t.Fatalf("pod %s phase %q, want Running (its last report)", last.Name, p.Status.Phase)
	}
	c.Close(websocket.StatusNormalClosure, "")
}

// BenchmarkPodStatusReports sends bursts of 1,000 pod-status reports (of
// 1,000 pods bound to the node, each status changed) from one agent and
// waits for the ack of the last; it reports the goroutines the process
// created per burst (the relay's writer workers and ack sender included,
// and the test's client) and the reports that waited for room.
//
//	go test -run '^$' -bench BenchmarkPodStatusReports -count 3 ./cloud/relay/
func BenchmarkPodStatusReports(b *testing.B) {
	const burst = 1000
	reg := prometheus.NewRegistry()
	tr := newTestRelay(b, func(cfg *relay.Config) {
		cfg.Registry = reg
		cfg.Log = slog.New(slog.DiscardHandler) // a line per write would be the benchmark
		cfg.PodStatusQPS, cfg.PodStatusBurst = 1e6, 1e6
	})
	const node = "gw-bench"
	for i := range burst {
		createPod(b, tr, fmt.Sprint("p", i), node)
	}
	c := tr.hello(b, node)
	var acked atomic.Uint64
	go func() {
		for {
			_, buf, err := c.Read(context.Background())
			if err != nil {
				return
			}
			if f, _ := wire.Decode(buf); f.Type == wire.TypeAck {
				acked.Store(f.Ack)
			}
		}
	}()
	phases := []string{"Pending", "Running"}
	frames := make([][][]byte, len(phases))
	seq := uint64(0)
	var created uint64
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		frames[i%2] = frames[i%2][:0]
		for p := range burst {
			r := podReport(p)
			r.Phase = phases[i%2]
			seq++
			frames[i%2] = append(frames[i%2], encode(b, wire.TypePodStatus, seq, r))
		}
		b.StartTimer()
		before := goroutinesCreated(b)
		for _, f := range frames[i%2] {
			send(b, c, f)
		}
		wait.For(b, 60*time.Second, fmt.Sprintf("ack %d", seq), func() bool { return acked.Load() == seq })
		created += goroutinesCreated(b) - before
	}
	b.ReportMetric(float64(created)/float64(b.N), "goroutines/1000reports")
	var waited float64
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "outpost_relay_reports_waited_total" {
			for _, m := range mf.GetMetric() {
				waited += m.GetCounter().GetValue()
			}
		}
	}
	b.ReportMetric(waited/float64(b.N), "waited/1000reports")
}
