package podstatus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/client-go/util/retry"

	"outpost.dev/cloud/asnode"
	"outpost.dev/cloud/coalesce"
	"outpost.dev/cloud/stepctx"
	"outpost.dev/wire"
)

// Defaults for WriterConfig and SessionConfig fields left zero.
const (
	DefaultQPS           = 100
	DefaultBurst         = 200
	DefaultMaxConcurrent = 16
	DefaultMaxPending    = 1024
	apiTimeout           = 15 * time.Second
	backoffMin           = 500 * time.Millisecond
	backoffMax           = 30 * time.Second
)

// FieldManager names the relay in managedFields.
const FieldManager = "outpost-relay"

// WriterConfig configures a Writer.
type WriterConfig struct {
	// QPS and Burst bound the pod status writes of all connections
	// together (each costs a read and a write, like the kubelet's).
	QPS   float32
	Burst int
	// MaxConcurrent bounds writes in flight across all connections, and
	// the goroutines making them.
	MaxConcurrent int
	Log           *slog.Logger
	// Registerer receives the write counter; nil registers nothing.
	Registerer prometheus.Registerer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Writer is shared by every connection of a relay. Its sessions have no
// goroutine of their own: one with a report ready is queued in the
// Writer's queue, served by at most MaxConcurrent goroutines, which exist
// only while some session has a report ready.
type Writer struct {
	cfg     WriterConfig
	limiter flowcontrol.RateLimiter
	sem     chan struct{}
	results *prometheus.CounterVec
	// sessions holds the sessions with a report ready, one key each.
	sessions *coalesce.Queue[*Session, struct{}]
}

// NewWriter builds a Writer.
func NewWriter(cfg WriterConfig) (*Writer, error) {
	if cfg.QPS <= 0 {
		cfg.QPS = DefaultQPS
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = DefaultMaxConcurrent
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	w := &Writer{
		cfg:     cfg,
		limiter: flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, cfg.Burst),
		sem:     make(chan struct{}, cfg.MaxConcurrent),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_relay_pod_status_reports_total",
			Help: "Pod status reports from agents, by outcome: written, unchanged, deleted, dropped (never writable), failed (retried).",
		}, []string{"result"}),
		// One key per session: the bound is never reached.
		sessions: coalesce.New[*Session, struct{}](math.MaxInt),
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(w.results); err != nil {
			return nil, fmt.Errorf("podstatus: register metrics: %w", err)
		}
	}
	w.sessions.Serve(cfg.MaxConcurrent, w.step)
	return w, nil
}

// Outcome of one write.
type Outcome int

// Outcomes of Write.
const (
	// Written: the status is in the API server (or already was).
	Written Outcome = iota
	// Dropped: the report can never be written (pod gone, of another
	// node, a stale UID, a status the API server refuses); ack it.
	Dropped
	// Retry: a transient failure; keep the report and try again.
	Retry
)

// A Forbidden read is asked again after forbiddenPause, doubling up to
// maxForbiddenPause (0.7 s in all), before the report is dropped.
const (
	forbiddenPause    = 100 * time.Millisecond
	maxForbiddenPause = 400 * time.Millisecond
)

// errDrop marks a report to ack and drop.
type errDrop struct{ why string }

func (e *errDrop) Error() string { return e.why }

// Write writes one report of node to the API server through as, the
// client acting as node (package asnode): the pod must exist, be bound to
// node and have the report's UID. The node is the connection's, from its
// certificate; the report's namespace and name are only where to look.
// The Node authorizer answers Forbidden for a pod not bound to node (or
// gone); such a report is dropped like one about another node's pod.
func (w *Writer) Write(ctx context.Context, as asnode.Client, node string, rep *wire.PodStatus) (Outcome, error) {
	if err := w.limiter.Wait(ctx); err != nil {
		return Retry, err
	}
	select {
	case w.sem <- struct{}{}:
	case <-ctx.Done():
		return Retry, ctx.Err()
	}
	defer func() { <-w.sem }()
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()

	api := as.CoreV1().Pods(rep.Namespace)
	result := "unchanged"
	fresh := false
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		// The first read may come from the API server's watch cache; a
		// conflict or a miss reads again from etcd.
		opts := metav1.GetOptions{ResourceVersion: "0"}
		if fresh {
			opts = metav1.GetOptions{}
		}
		pod, err := api.Get(ctx, rep.Name, opts)
		if apierrors.IsNotFound(err) && !fresh {
			fresh = true
			pod, err = api.Get(ctx, rep.Name, metav1.GetOptions{})
		}
		// The Node authorizer learns of a pod's binding from its own
		// watch, which may trail the relay's: a pod just bound to the node
		// can be Forbidden for a moment. Ask again a few times, briefly,
		// before taking the answer for good.
		for pause := forbiddenPause; apierrors.IsForbidden(err) && pause <= maxForbiddenPause; pause *= 2 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(pause):
			}
			pod, err = api.Get(ctx, rep.Name, metav1.GetOptions{})
		}
		fresh = true
		switch {
		case apierrors.IsNotFound(err):
			return &errDrop{"pod not found"}
		case apierrors.IsForbidden(err):
			return &errDrop{"pod not bound to this node, or gone: " + err.Error()}
		case err != nil:
			return err
		case pod.Spec.NodeName != node:
			return &errDrop{fmt.Sprintf("pod is bound to node %q, not to this node", pod.Spec.NodeName)}
		case string(pod.UID) != rep.UID:
			return &errDrop{"stale report: the pod of that name now has another UID"}
		}
		st := Status(rep, pod, metav1.NewTime(w.cfg.Now()))
		if !equality.Semantic.DeepEqual(st, pod.Status) {
			upd := pod.DeepCopy()
			upd.Status = st
			np, err := api.UpdateStatus(ctx, upd, metav1.UpdateOptions{FieldManager: FieldManager})
			if err != nil {
				return err
			}
			result = "written"
			w.hookEvents(ctx, as, node, np, HookFailures(&pod.Status, &st))
		}
		if rep.Terminated && pod.DeletionTimestamp != nil {
			// Every container has stopped: finish the graceful delete, as
			// the kubelet does. The UID precondition never deletes a newer
			// pod of the same name.
			uid := pod.UID
			err := api.Delete(ctx, rep.Name, metav1.DeleteOptions{
				GracePeriodSeconds: new(int64),
				Preconditions:      &metav1.Preconditions{UID: &uid},
			})
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				return fmt.Errorf("delete: %w", err)
			}
			result = "deleted"
		}
		return nil
	})
	var drop *errDrop
	switch {
	case err == nil:
		w.results.WithLabelValues(result).Inc()
		return Written, nil
	case errors.As(err, &drop):
		w.results.WithLabelValues("dropped").Inc()
		return Dropped, err
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		// Sending it again cannot help; say why and move on.
		w.results.WithLabelValues("dropped").Inc()
		return Dropped, err
	default:
		w.results.WithLabelValues("failed").Inc()
		return Retry, err
	}
}

// SessionConfig configures the status writes of one agent connection.
type SessionConfig struct {
	// Node is the node name, from the client certificate.
	Node string
	// Client acts as the node (package asnode); required.
	Client asnode.Client
	// Done is called once per report seq when it no longer needs to be
	// kept: written, dropped for good, or replaced by a newer report of
	// the same pod. It may be called from Report's caller, from a worker
	// of the Writer or from a timer's goroutine.
	Done func(seq uint64)
	// MaxPending bounds the pods with a report waiting; Report blocks at
	// it. Default DefaultMaxPending.
	MaxPending int
	Log        *slog.Logger
}

// Session writes the pod status reports of one connection, one at a time,
// oldest first, coalescing reports of the same pod. A worker of the
// Writer writes one report of it at a time, then queues it again behind
// the other sessions if more are ready.
type Session struct {
	w   *Writer
	cfg SessionConfig
	// ctx is Start's: Report waits under it, and each write is made
	// under a context of its own below it, which Stop cancels too.
	ctx     context.Context
	stopped atomic.Bool
	steps   stepctx.Steps
	// dead is set when a step panicked: nothing more is written.
	dead atomic.Bool
	// q holds the reports waiting, one per pod (by UID).
	q *coalesce.Queue[string, *item]
}

type item struct {
	seq     uint64
	rep     *wire.PodStatus
	backoff time.Duration
}

// Start begins a session. Stop it when the connection ends.
func (w *Writer) Start(ctx context.Context, cfg SessionConfig) *Session {
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.Log == nil {
		cfg.Log = w.cfg.Log.With("node", cfg.Node)
	}
	if cfg.Done == nil {
		cfg.Done = func(uint64) {}
	}
	s := &Session{
		w: w, cfg: cfg, ctx: ctx,
		q: coalesce.New[string, *item](cfg.MaxPending),
	}
	s.q.OnReady(s.wake)
	return s
}

// wake queues the session for a worker; one queued or running already
// covers it.
func (s *Session) wake() {
	s.w.sessions.Put(context.Background(), s, struct{}{}, nil)
}

// Stop ends the session and waits until no report of it is being
// written. Reports not written stay unacked: the agent sends them again
// on its next connection.
func (s *Session) Stop() {
	s.stopped.Store(true)
	s.steps.Stop()
	s.q.Close()
	s.w.sessions.WaitIdle(s)
}

// ended reports whether the session was stopped or its context ended.
func (s *Session) ended() bool { return s.stopped.Load() || s.ctx.Err() != nil }

// begin returns the context of one write, which Stop cancels, and its
// end; a context is made per write, so an idle session holds none. ok is
// false once the session ended.
func (s *Session) begin() (ctx context.Context, end func(), ok bool) {
	if s.ended() {
		return nil, nil, false
	}
	return s.steps.Begin(s.ctx, 0)
}

// Report queues rep, carried by the frame numbered seq. A queued report of
// the same pod is replaced (and its seq done); one waiting a backoff after
// a failed write is replaced and waits the rest of it. With MaxPending
// pods waiting, Report waits for room: the connection's reads stall rather
// than the relay's memory growing. It returns false if the session ended.
func (s *Session) Report(seq uint64, rep *wire.PodStatus) bool {
	return s.report(seq, rep, true)
}

// TryReport is Report without waiting: false, with nothing queued, when
// MaxPending pods wait (a report of a pod already waiting replaces it
// all the same) or the session ended. A caller that must not wait tries
// first and calls Report elsewhere only then.
func (s *Session) TryReport(seq uint64, rep *wire.PodStatus) bool {
	return s.report(seq, rep, false)
}

func (s *Session) report(seq uint64, rep *wire.PodStatus, wait bool) bool {
	it := &item{seq: seq, rep: rep}
	var replaced *item
	merge := func(old *item) *item { replaced = old; return it }
	var ok bool
	if wait {
		ok = s.q.Put(s.ctx, rep.UID, it, merge)
	} else {
		ok = s.q.TryPut(rep.UID, it, merge)
	}
	if replaced != nil {
		s.cfg.Done(replaced.seq)
	}
	return ok
}

// retry puts it back after a failed write unless a newer report of its
// pod arrived meanwhile, which replaces it.
func (s *Session) retry(it *item) {
	it.backoff = min(max(2*it.backoff, backoffMin), backoffMax)
	replaced := false
	s.q.Retry(it.rep.UID, it, it.backoff/2+rand.N(it.backoff/2+1), func(newer *item) *item { replaced = true; return newer })
	if replaced {
		s.cfg.Done(it.seq)
	}
}

// step writes the oldest report ready of s, on a worker of the Writer's
// queue, and queues s again if another is ready. A panic ends the
// session's writes, not the relay.
func (w *Writer) step(s *Session, _ struct{}) {
	defer w.sessions.Done(s)
	if s.dead.Load() || s.ended() {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			s.dead.Store(true)
			s.cfg.Log.Error("pod status session panicked; reports of this connection stay unacked", "panic", r)
		}
	}()
	if s.write() && s.q.Ready() > 0 {
		s.wake() // runs once this step is done, behind the sessions queued
	}
}

// write writes the oldest report ready, if any; it returns false once the
// session ended.
func (s *Session) write() bool {
	ctx, end, ok := s.begin()
	if !ok {
		return false
	}
	defer end()
	uid, it, ok := s.q.TryTake()
	if !ok {
		return true
	}
	out, err := s.w.Write(ctx, s.cfg.Client, s.cfg.Node, it.rep)
	pod := it.rep.Namespace + "/" + it.rep.Name
	switch {
	case ctx.Err() != nil:
		return false
	case out == Written:
		s.cfg.Log.Debug("pod status written", "pod", pod, "phase", it.rep.Phase, "seq", it.seq)
		s.cfg.Done(it.seq)
	case out == Dropped:
		s.cfg.Log.Warn("pod status report dropped", "pod", pod, "uid", it.rep.UID, "seq", it.seq, "why", err)
		s.cfg.Done(it.seq)
	default:
		s.cfg.Log.Warn("pod status write failed; will retry", "pod", pod, "err", err)
		s.retry(it)
		return true
	}
	s.q.Done(uid)
	return true
}

func timeFromMillis(ms int64) time.Time { return time.UnixMilli(ms) }
