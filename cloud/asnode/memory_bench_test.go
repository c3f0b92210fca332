package asnode

import (
	"fmt"
	"runtime"
	"testing"

	"k8s.io/client-go/rest"

	"outpost.dev/test/heapstat"
)

// BenchmarkForMemory is the memory of the clients acting as 1,000 nodes,
// as a relay holds one per connected agent (watchmux streams enabled, as
// over https with a token). B/client is heap per node's client.
func BenchmarkForMemory(b *testing.B) {
	const n = 1000
	p, err := New(&rest.Config{Host: "https://127.0.0.1:1", BearerToken: "t", QPS: 100, Burst: 10, TLSClientConfig: rest.TLSClientConfig{Insecure: true}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("edge-%d", i)
	}
	for b.Loop() {
		clients := make([]Client, n)
		before := heapstat.Live()
		for i := range clients {
			if clients[i], err = p.For(names[i]); err != nil {
				b.Fatal(err)
			}
		}
		after := heapstat.Live()
		b.ReportMetric(float64(after-before)/n, "B/client")
		runtime.KeepAlive(clients)
	}
}
