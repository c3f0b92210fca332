package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"outpost.dev/agent/twins"
	"outpost.dev/cloud/crd"
	"outpost.dev/cloud/devices"
	"outpost.dev/cloud/identity"
	"outpost.dev/cloud/pki"
	"outpost.dev/cloud/relay"
	"outpost.dev/cloud/relay/relaytest"
	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
	"outpost.dev/wire"
)

// twinRig is an in-process relay with the Device API on a real API server,
// reached through a byte-counting proxy.
type twinRig struct {
	cp    *harness.ControlPlane
	dyn   dynamic.Interface
	srv   *relay.Server
	reg   *prometheus.Registry
	ca    *pki.CA
	ids   *identity.Registry
	proxy *stack.Proxy
}

func startTwinRig(b *testing.B, qps float64) *twinRig {
	ctx := context.Background()
	ip := stack.StartInProcess(b, ctx, harness.Options{}, 200, 400)
	dcfg := ip.CP.RESTConfig()
	dcfg.QPS, dcfg.Burst = -1, 0 // the relay's own bucket limits status writes
	dyn, err := dynamic.NewForConfig(dcfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := devices.EnsureCRD(ctx, dyn, slog.New(slog.DiscardHandler)); err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg := ip.RelayConfig(slog.New(slog.DiscardHandler))
	cfg.Registry, cfg.Dynamic, cfg.DeviceStatus = reg, dyn, devices.WriterConfig{QPS: qps, Burst: int(qps), Workers: 16}
	srv, hs := relaytest.Serve(b, cfg)
	proxy, err := stack.NewProxy(strings.TrimPrefix(hs.URL, "https://"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(proxy.Close)
	return &twinRig{cp: ip.CP, dyn: dyn, srv: srv, reg: reg, ca: ip.CA, ids: identity.New(ip.Client, relay.DefaultNamespace), proxy: proxy}
}

// createDevices creates per Devices (one float property each) on node.
func (r *twinRig) createDevices(b *testing.B, node string, per int) {
	api := r.dyn.Resource(devices.GVR).Namespace("default")
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range per {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			u := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": crd.APIVersion, "kind": devices.Kind,
				"metadata": map[string]any{"name": fmt.Sprintf("%s-d%04d", node, i), "namespace": "default"},
				"spec": map[string]any{"nodeName": node, "driver": "ds18b20", "connection": map[string]any{"bus": "W1"},
					"properties": []any{map[string]any{"name": "temperature", "type": "float", "unit": "°C"}}},
			}}
			if _, err := api.Create(context.Background(), u, metav1.CreateOptions{}); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
}

// twinAgent is a protocol-level agent: hello, then twin reports.
type twinAgent struct {
	c     *websocket.Conn
	acked atomic.Uint64
	acks  chan uint64
	sync  chan int // upserts of the initial sync, once Complete

	mu   sync.Mutex
	objs []wire.Object // of the initial sync
}

// Objects implements twins.Source: the Devices of the initial sync.
func (a *twinAgent) Objects(k wire.Kind) ([]wire.Object, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []wire.Object
	for _, o := range a.objs {
		if o.Kind == k {
			out = append(out, o)
		}
	}
	return out, nil
}

// wsLink is a twins.Link writing straight to the connection; last is the
// size of the last frame it wrote.
type wsLink struct {
	ctx  context.Context
	c    *websocket.Conn
	last *atomic.Int64
}

func (l wsLink) Connected() bool { return true }

func (l wsLink) Send(t wire.Type, seq uint64, body wire.Body) error {
	msg, err := wire.Encode(t, seq, body)
	if err != nil {
		return err
	}
	l.last.Store(int64(len(msg)))
	return l.c.Write(l.ctx, websocket.MessageBinary, msg)
}

func (r *twinRig) connect(b *testing.B, ctx context.Context, node string) *twinAgent {
	c, err := connectAgent(ctx, r.proxy.Addr, r.ca, r.ids, node)
	if err != nil {
		b.Fatal(err)
	}
	a := &twinAgent{c: c, acks: make(chan uint64, 1024), sync: make(chan int, 1)}
	go func() {
		upserts := 0
		for {
			_, msg, err := c.Read(ctx)
			if err != nil {
				return
			}
			f, err := wire.Decode(msg)
			if err != nil {
				continue
			}
			switch f.Type {
			case wire.TypeAck:
				a.acked.Store(f.Ack)
				select {
				case a.acks <- f.Ack:
				default:
				}
			case wire.TypeSync:
				var s wire.Sync
				if f.DecodeBody(&s) == nil {
					upserts += len(s.Upserts)
					a.mu.Lock()
					a.objs = append(a.objs, s.Upserts...)
					a.mu.Unlock()
					if s.Complete {
						a.sync <- upserts
					}
				}
			}
		}
	}()
	return a
}

func twinReport(dev string, v float64) *wire.TwinReport {
	return &wire.TwinReport{Device: dev,
		Values:     []wire.TwinValue{{Name: "temperature", Num: v, At: time.Now().UnixMilli()}},
		Conditions: []wire.Condition{{Type: "Connected", Status: "True"}, {Type: "Error", Status: "False"}}}
}

func (r *twinRig) statusWrites(b *testing.B) float64 {
	mfs, err := r.reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "outpost_relay_device_status_writes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == "ok" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkTwinUpdates measures the Device status writes per second one
// in-process relay sustains into a real API server: OUTPOST_BENCH_DEVICES
// Devices (default 1,000) spread over OUTPOST_BENCH_NODES protocol-level
// agents (default 10), each agent sending every one of its Devices a new
// value in turn, with at most 256 reports unacknowledged per agent, as fast
// as acks allow or at OUTPOST_BENCH_REPORTS_PER_SEC in total. The
// relay's bucket is OUTPOST_BENCH_TWIN_QPS (default 100,000: unbounded,
// to find the ceiling). Every write is acked only once durable, so
// writes/s is also durable twin updates/s.
func BenchmarkTwinUpdates(b *testing.B) {
	nDev, nNodes := envInt("OUTPOST_BENCH_DEVICES", 1000), envInt("OUTPOST_BENCH_NODES", 10)
	dur := time.Duration(envInt("OUTPOST_BENCH_SECONDS", 15)) * time.Second
	r := startTwinRig(b, float64(envInt("OUTPOST_BENCH_TWIN_QPS", 100000)))
	per := nDev / nNodes
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var agents []*twinAgent
	for i := range nNodes {
		node := fmt.Sprintf("twin-%02d", i)
		r.createDevices(b, node, per)
		agents = append(agents, r.connect(b, ctx, node))
	}
	for i, a := range agents {
		select {
		case n := <-a.sync:
			if n != per {
				b.Fatalf("agent %d got %d Devices in its initial sync, want %d", i, n, per)
			}
		case <-time.After(2 * time.Minute):
			b.Fatalf("agent %d: no initial sync", i)
		}
	}
	for b.Loop() {
		before := r.statusWrites(b)
		var sent atomic.Int64
		start := time.Now()
		stop := start.Add(dur)
		var wg sync.WaitGroup
		rate := envInt("OUTPOST_BENCH_REPORTS_PER_SEC", 0) // 0: as fast as acks allow
		for i, a := range agents {
			wg.Go(func() {
				node := fmt.Sprintf("twin-%02d", i)
				var tick <-chan time.Time
				if rate > 0 {
					t := time.NewTicker(time.Duration(nNodes) * time.Second / time.Duration(rate))
					defer t.Stop()
					tick = t.C
				}
				for seq := uint64(a.acked.Load()) + 1; time.Now().Before(stop); seq++ {
					if tick != nil {
						<-tick
					}
					for seq > a.acked.Load()+256 && time.Now().Before(stop) {
						select {
						case <-a.acks:
						case <-time.After(10 * time.Millisecond):
						}
					}
					dev := fmt.Sprintf("default/%s-d%04d", node, int(seq)%per)
					msg, _ := wire.Encode(wire.TypeTwinReport, seq, twinReport(dev, 20+float64(seq%1000)/100))
					if a.c.Write(ctx, websocket.MessageBinary, msg) != nil {
						return
					}
					sent.Add(1)
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		writes := r.statusWrites(b) - before
		b.ReportMetric(writes/elapsed.Seconds(), "writes/s")
		b.ReportMetric(float64(sent.Load())/elapsed.Seconds(), "reports/s")
		b.Logf("%d Devices on %d agents: %d reports sent, %.0f status writes in %v", nDev, nNodes, sent.Load(), writes, elapsed.Round(time.Millisecond))
	}
}

// BenchmarkTwinLinkBytes measures the link bytes of one twin update, round
// trip (the report up, its ack down), TLS and WebSocket framing included,
// through the counting proxy: one agent, one Device, one report at a time.
// by-name sends the report as the outbox stores it (Device by
// namespace/name, value by name and time, both conditions); by-link-id
// sends it through the agent's twins.Compactor, as the agent does once its
// connection's initial sync is stored (link id, property index and age,
// conditions only when they changed on the connection).
func BenchmarkTwinLinkBytes(b *testing.B) {
	r := startTwinRig(b, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.createDevices(b, "twin-link", 1)
	a := r.connect(b, ctx, "twin-link")
	select {
	case <-a.sync:
	case <-time.After(2 * time.Minute):
		b.Fatal("no initial sync")
	}
	if objs, _ := a.Objects(wire.KindDevice); len(objs) != 1 || objs[0].LinkID == 0 {
		b.Fatalf("initial sync %+v: want one Device with a link id", objs)
	}
	var last atomic.Int64
	named := wsLink{ctx, a.c, &last}
	compact := twins.NewCompactor(named, a, nil, nil)
	compact.Synced()
	for _, m := range []struct {
		name string
		link twins.Link
	}{{"by-name", named}, {"by-link-id", compact}} {
		b.Run(m.name, func(b *testing.B) { twinLinkBytes(b, ctx, r, a, m.link, &last) })
	}
}

func twinLinkBytes(b *testing.B, ctx context.Context, r *twinRig, a *twinAgent, link twins.Link, sent *atomic.Int64) {
	const n = 200
	for b.Loop() {
		if err := r.proxy.Quiet(ctx, 500*time.Millisecond, time.Minute); err != nil { // the connect traffic settled
			b.Fatal(err)
		}
		up0, down0 := r.proxy.Up.Load(), r.proxy.Down.Load()
		seq := a.acked.Load()
		for range n {
			seq++
			rep := twinReport("default/twin-link-d0000", 21+float64(seq%100)/100)
			if err := link.Send(wire.TypeTwinReport, seq, rep); err != nil {
				b.Fatal(err)
			}
			deadline := time.After(10 * time.Second)
			for a.acked.Load() < seq {
				select {
				case <-a.acks:
				case <-deadline:
					b.Fatalf("report %d not acked", seq)
				}
			}
		}
		up, down := float64(r.proxy.Up.Load()-up0)/n, float64(r.proxy.Down.Load()-down0)/n
		ack, _ := wire.EncodeFrame(wire.Frame{Type: wire.TypeAck, Ack: seq})
		b.ReportMetric(up+down, "B/update")
		b.ReportMetric(up, "B-up/update")
		b.ReportMetric(down, "B-down/update")
		b.Logf("per update: %.1f B up + %.1f B down on the link; last frames %d B report, %d B ack (CBOR)", up, down, sent.Load(), len(ack))
	}
}
