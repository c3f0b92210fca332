package nodes_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/cloud/asnode"
	"outpost.dev/cloud/nodes"
	"outpost.dev/test/harness"
	"outpost.dev/test/heapstat"
	"outpost.dev/test/stack"
	"outpost.dev/test/wait"
)

// BenchmarkSessionHeapAPI reports the heap one written, idle node session
// keeps (B/session) against a real API server, whose Nodes and Leases
// carry what a cluster's do (managedFields, the controllers' labels and
// annotations): OUTPOST_BENCH_SESSIONS sessions (default 500) each write
// their Node and take their Lease; the heap with them held, less the heap
// once they are dropped. The clients acting as the nodes stay in both.
func BenchmarkSessionHeapAPI(b *testing.B) {
	n := 500
	if v, err := strconv.Atoi(os.Getenv("OUTPOST_BENCH_SESSIONS")); err == nil && v > 0 {
		n = v
	}
	ctx := context.Background()
	ip := stack.StartInProcess(b, ctx, harness.Options{}, 1000, 2000)
	for i := range b.N {
		w, _ := newWriter(b, ip, 40*time.Second)
		clients := make([]asnode.Client, n)
		sessions := make([]*nodes.Session, n)
		var acked atomic.Int64
		for j := range sessions {
			name := fmt.Sprintf("gw-mem-%d-%04d", i, j)
			clients[j] = asNode(b, ip, name)
			sessions[j] = w.Start(ctx, nodes.SessionConfig{Name: name, Client: clients[j], OnAck: func(uint64) { acked.Add(1) }})
			sessions[j].Report(1, *report(name))
		}
		wait.For(b, 10*time.Minute, "every report written", func() bool { return acked.Load() == int64(n) })
		wait.For(b, 10*time.Minute, "every Lease taken", func() bool {
			l, err := ip.Client.CoordinationV1().Leases(nodes.LeaseNamespace).List(ctx, metav1.ListOptions{})
			return err == nil && len(l.Items) >= (i+1)*n
		})
		for _, s := range sessions {
			nodes.Quiesce(s)
		}
		held := heapstat.Live()
		runtime.KeepAlive(sessions)
		sessions = nil
		after := heapstat.Live()
		runtime.KeepAlive(clients)
		runtime.KeepAlive(w)
		b.ReportMetric((float64(held)-float64(after))/float64(n), "B/session")
	}
}
