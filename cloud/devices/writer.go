package devices

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/flowcontrol"

	"outpost.dev/cloud/coalesce"
	"outpost.dev/wire"
)

// Defaults for WriterConfig fields left zero.
const (
	DefaultQPS      = 100
	DefaultBurst    = 200
	DefaultMaxQueue = 10000
	DefaultWorkers  = 4
	apiTimeout      = 10 * time.Second
	retryMin        = 500 * time.Millisecond
	retryMax        = 30 * time.Second
)

// WriterConfig configures a Writer.
type WriterConfig struct {
	Dynamic dynamic.Interface
	// QPS and Burst are the token bucket on status writes, for all
	// Devices of all connections together.
	QPS   float64
	Burst int
	// MaxQueue bounds the Devices waiting for a write; Submit blocks when
	// it is full (back-pressure on the connection that reports).
	MaxQueue int
	// Workers write in parallel (each still takes a token per write).
	Workers int
	Log     *slog.Logger
	// Registerer receives the writer's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Write is one Device's report waiting for its write.
type Write struct {
	// Node is the reporting node, from its certificate; Key is
	// namespace/name.
	Node, Key string
	Report    *wire.TwinReport
	// Lookup returns the Device as the node's watch last saw it: its UID,
	// spec and current status, read again at write time.
	Lookup func() (*Device, bool)
	// Done is called once the report is durable, superseded by a newer
	// report of the same Device that is durable, or dropped for good (the
	// Device is gone or bound elsewhere). It is not called when the relay
	// shuts down first.
	Done func()
	// Owner identifies who waits (one connection); a newer Write of the
	// same Device and Owner replaces the older one's Done.
	Owner any
}

type item struct {
	w     Write
	dones map[any]func()
	tries int
	first time.Time // arrival of the oldest report it carries
}

// Writer writes Device status for every connection of a relay.
type Writer struct {
	cfg     WriterConfig
	limiter flowcontrol.RateLimiter
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	// q holds the reports waiting for a write, one per Device (by Key).
	q *coalesce.Queue[string, *item]

	writes  *prometheus.CounterVec
	depth   prometheus.GaugeFunc
	latency prometheus.Histogram
}

// NewWriter starts a Writer; Close stops it.
func NewWriter(cfg WriterConfig) (*Writer, error) {
	if cfg.Dynamic == nil {
		return nil, errors.New("devices: Dynamic is required")
	}
	if cfg.QPS <= 0 {
		cfg.QPS = DefaultQPS
	}
	if cfg.Burst <= 0 {
		cfg.Burst = max(DefaultBurst, int(cfg.QPS))
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = DefaultMaxQueue
	}
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Writer{
		cfg:     cfg,
		limiter: flowcontrol.NewTokenBucketRateLimiter(float32(cfg.QPS), cfg.Burst),
		ctx:     ctx,
		cancel:  cancel,
		q:       coalesce.New[string, *item](cfg.MaxQueue),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_relay_device_status_writes_total",
			Help: "Device status writes, by result (ok, dropped, retry).",
		}, []string{"result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "outpost_relay_device_status_write_seconds",
			Help:    "Time from a twin report's arrival to its status write.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
	}
	w.depth = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "outpost_relay_device_status_queue",
		Help: "Devices whose report waits for a status write.",
	}, func() float64 { return float64(w.q.Len()) })
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{w.writes, w.depth, w.latency} {
			if err := cfg.Registerer.Register(c); err != nil {
				cancel()
				return nil, fmt.Errorf("devices: register metrics: %w", err)
			}
		}
	}
	for range cfg.Workers {
		w.wg.Go(w.work)
	}
	return w, nil
}

// Close stops the workers; queued reports are not written (their agents
// send them again on the next connection).
func (w *Writer) Close() {
	w.cancel()
	w.q.Close()
	w.wg.Wait()
}

// Submit queues wr, replacing a queued report of the same Device (last
// wins). It blocks while the queue is full, until ctx ends (false).
func (w *Writer) Submit(ctx context.Context, wr Write) bool {
	it, merge := w.item(wr)
	return w.q.Put(ctx, wr.Key, it, merge)
}

// TrySubmit is Submit without waiting: false, with nothing queued, when
// the queue is full (a report of a Device already queued replaces it all
// the same) or the writer closed.
func (w *Writer) TrySubmit(wr Write) bool {
	it, merge := w.item(wr)
	return w.q.TryPut(wr.Key, it, merge)
}

// item is wr as it waits in the queue, and how it merges into a report of
// its Device already waiting.
func (w *Writer) item(wr Write) (*item, func(*item) *item) {
	it := &item{w: wr, dones: map[any]func(){wr.Owner: wr.Done}, first: time.Now()}
	return it, func(cur *item) *item {
		cur.w.Report, cur.w.Lookup, cur.w.Node = wr.Report, wr.Lookup, wr.Node
		cur.dones[wr.Owner] = wr.Done
		cur.tries = 0
		return cur
	}
}

func (w *Writer) work() {
	for {
		key, it, ok := w.q.Take(w.ctx)
		if !ok {
			return
		}
		if err := w.limiter.Wait(w.ctx); err != nil {
			return
		}
		err := w.write(it.w)
		switch {
		case w.ctx.Err() != nil:
			return
		case err == nil:
			w.writes.WithLabelValues("ok").Inc()
			w.latency.Observe(time.Since(it.first).Seconds())
			for _, d := range it.dones {
				d()
			}
		case errors.Is(err, errDrop):
			w.writes.WithLabelValues("dropped").Inc()
			w.cfg.Log.Warn("twin report dropped", "node", it.w.Node, "device", key, "err", err)
			for _, d := range it.dones {
				d()
			}
		default:
			// A newer report of the Device that arrived meanwhile is
			// written next, carrying it.dones too; otherwise this one
			// waits a backoff (newer reports coalesce into it). An older
			// report is never written after a newer one.
			w.writes.WithLabelValues("retry").Inc()
			w.cfg.Log.Warn("device status write failed; will retry", "node", it.w.Node, "device", key, "err", err)
			it.tries++
			w.q.Retry(key, it, min(retryMin<<min(it.tries-1, 8), retryMax), func(cur *item) *item {
				for o, d := range it.dones {
					if _, newer := cur.dones[o]; !newer {
						cur.dones[o] = d
					}
				}
				return cur
			})
			continue
		}
		w.q.Done(key)
	}
}

// errDrop marks a report that can never be written.
var errDrop = errors.New("device gone or not bound to the reporting node")

// write patches the status of one Device: one JSON patch that tests the
// UID, the node binding and the resourceVersion of the copy the new
// status is built from, then sets the whole status. The copy is the
// watch's, which may be behind the API server by a write (this relay's
// own a moment ago, or another replica's: an agent that moved): the
// resourceVersion test then fails instead of putting older values of the
// properties this report leaves out back. The write is made again from
// the watch's newer copy once it has one (at once if it has, otherwise
// after the retry backoff); a Device replaced or bound elsewhere is
// dropped.
func (w *Writer) write(wr Write) error {
	d, ok := wr.Lookup()
	if !ok {
		return errDrop
	}
	uid := d.UID
	ns, name, _ := strings.Cut(wr.Key, "/")
	for try := 1; ; try++ {
		err := w.patch(ns, name, d, wr)
		if !isTestFailed(err) {
			return err
		}
		cur, ok := wr.Lookup()
		switch {
		case !ok || cur.UID != uid:
			return fmt.Errorf("%w: %v", errDrop, err)
		case cur.ResourceVersion == d.ResourceVersion || try == staleTries:
			return fmt.Errorf("device status write from resourceVersion %s, which the API server has moved past (the watch is behind): %w", d.ResourceVersion, err)
		}
		d = cur
	}
}

// staleTries bounds the writes of one report made at once from ever newer
// copies of its Device (each a write since the one before).
const staleTries = 3

// patch writes the status NewStatus makes of d and the report, testing
// d's UID, binding and (when known) resourceVersion first.
func (w *Writer) patch(ns, name string, d *Device, wr Write) error {
	st := NewStatus(d, wr.Report, time.Now())
	ops := []map[string]any{
		{"op": "test", "path": "/metadata/uid", "value": string(d.UID)},
		{"op": "test", "path": "/spec/nodeName", "value": wr.Node},
	}
	if d.ResourceVersion != "" {
		ops = append(ops, map[string]any{"op": "test", "path": "/metadata/resourceVersion", "value": d.ResourceVersion})
	}
	patch, err := json.Marshal(append(ops, map[string]any{"op": "add", "path": "/status", "value": st.toJSON()}))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(w.ctx, apiTimeout)
	defer cancel()
	_, err = w.cfg.Dynamic.Resource(GVR).Namespace(ns).Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: "outpost-relay"}, "status")
	switch {
	case err == nil:
		return nil
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%w: %v", errDrop, err)
	case isTestFailed(err):
		return err // write looks again
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err), apierrors.IsRequestEntityTooLargeError(err):
		// Never going to succeed: retrying would hold every later ack of
		// the connection back.
		return fmt.Errorf("%w: status refused by the API server: %v", errDrop, err)
	}
	return err
}

// isTestFailed recognizes a failed JSON patch test operation (the Device
// was written, replaced or re-bound since the watch saw it).
func isTestFailed(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "testing value") || strings.Contains(s, "test operation") || strings.Contains(s, "test failed")
}
