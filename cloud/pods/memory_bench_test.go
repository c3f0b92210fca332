package pods

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"outpost.dev/test/heapstat"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

// waitingNodes is a synced edge-Node cache holding no node: every
// session waits for its Node, with no watch of its own yet.
type waitingNodes struct{ asked atomic.Int64 }

func (c *waitingNodes) EdgeNode(string) (edge, synced bool) {
	c.asked.Add(1)
	return false, true
}

// BenchmarkSessionMemory is the memory a Session holds of its own, past
// its first step: 1,000 sessions waiting for their Node in the relay's
// cache (so none has a watch yet), under one cancellable parent context
// as the relay's are, with no object held, or with the hello of an agent
// holding 20 (the hellos are made before the count: what the session
// keeps of them adds, a hello it lets go is taken off).
// B/session is heap and stacks per session.
func BenchmarkSessionMemory(b *testing.B) {
	const n = 1000
	client := fake.NewClientset()
	y := NewSyncer(2)
	for _, held := range []int{0, 20} {
		b.Run(fmt.Sprintf("held=%d", held), func(b *testing.B) {
			hellos := make([][]wire.ObjectVersion, n)
			for i := range hellos {
				for j := range held {
					hellos[i] = append(hellos[i], wire.ObjectVersion{Kind: wire.KindPod, UID: fmt.Sprintf("uid-%d-%d", i, j), Version: "12345"})
				}
			}
			for b.Loop() {
				ctx, cancel := context.WithCancel(context.Background())
				cache := &waitingNodes{}
				hs := make([][]wire.ObjectVersion, n) // counted before: freed unless kept
				for i := range hs {
					hs[i] = slices.Clone(hellos[i])
				}
				before := heapstat.LiveWithStacks()
				sessions := make([]*Session, n)
				for i := range sessions {
					sessions[i] = Start(ctx, Config{Client: client, Node: fmt.Sprintf("edge-%d", i), Held: hs[i], Send: func([]byte) bool { return true }, Nodes: cache, Syncer: y})
					hs[i] = nil // the connection lets the hello go
				}
				wait.For(b, 10*time.Second, "every session's first step", func() bool { return cache.asked.Load() >= n })
				after := heapstat.LiveWithStacks()
				b.ReportMetric(float64(after-before)/n, "B/session")
				for _, s := range sessions {
					s.Stop()
				}
				cancel()
			}
		})
	}
}
