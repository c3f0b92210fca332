package relay_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"outpost.dev/wire"
)

// TestManyAgents connects many protocol-level agents to one relay and
// checks each gets its hello-ack, a heartbeat echo and an ack. It runs 100
// agents by default; OUTPOST_SCALE_AGENTS=1000 for more.
func TestManyAgents(t *testing.T) {
	n := 100
	if s := os.Getenv("OUTPOST_SCALE_AGENTS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	tr := newTestRelay(t, nil)
	tr.srv.Connected()
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	certs := make([]tls.Certificate, n)
	for i := range certs {
		certs[i] = tr.nodeCert(t, "gw-"+strconv.Itoa(i))
	}
	hello := helloFrame(t)
	status := encode(t, wire.TypeNodeStatus, 1, &wire.NodeStatus{Node: info()})
	hb := encode(t, wire.TypeHeartbeat, 0, nil)
	conns := make([]*websocket.Conn, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	errs := make(chan error, n)
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(ctx, tr.url+wire.PathConnect, &websocket.DialOptions{
				HTTPClient: tr.httpClient(certs[i]),
			})
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
			for _, step := range []struct {
				out  []byte
				want wire.Type
			}{{hello, wire.TypeHelloAck}, {hb, wire.TypeHeartbeat}, {status, wire.TypeAck}} {
				if err := c.Write(ctx, websocket.MessageBinary, step.out); err != nil {
					errs <- err
					return
				}
				var (
					f    wire.Frame
					derr error
				)
				for {
					_, b, err := c.Read(ctx)
					if err != nil {
						errs <- err
						return
					}
					if f, derr = wire.Decode(b); derr != nil || f.Type != wire.TypeSync {
						break // pod sync frames interleave; not measured here
					}
				}
				if derr != nil || f.Type != step.want {
					errs <- fmt.Errorf("got %s (%v), want %s", f.Type, derr, step.want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitFor(t, "all connected", func() bool { return tr.srv.Connected() == n })
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	t.Logf("%d agents connected, hello+heartbeat+ack each, in %s; heap grew %d KB (client side included), goroutines %d",
		n, time.Since(start).Round(time.Millisecond), (int64(after.HeapInuse)-int64(before.HeapInuse))/1024, runtime.NumGoroutine())
	for _, c := range conns {
		c.CloseNow()
	}
}
