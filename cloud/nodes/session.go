package nodes

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"outpost.dev/cloud/asnode"
	"outpost.dev/cloud/stepctx"
	"outpost.dev/wire"
)

// statusRefresh is how often an unchanged status is written again, like
// the kubelet's nodeStatusReportFrequency, so lastHeartbeatTime stays
// meaningful to people reading the Node.
const statusRefresh = 5 * time.Minute

// A session's steady-state writes, like a kubelet's: the Lease renewed
// every LeaseDuration/4 (6 a minute with the default 40 s) and the Node's
// status written when it changes, or every statusRefresh when it does not
// (0.2 a minute). While the API server takes the renewals more slowly
// than they come, the Writer lengthens the renewal period, up to
// 3/4 of LeaseDuration (leasePace). So that a fleet connected at once (a
// relay restart) does not renew in lock-step bursts, the first renewal
// after the Lease is taken, and the first refresh after the Node is
// written, come at a random point within their period (phase); the later
// ones keep the period. No interval is ever longer than the period, so
// the Lease is as fresh as the period says for the node lifecycle
// controller; the cost is at most one extra write of each per connection.

// Retry backoff for failed writes.
const (
	backoffMin = 500 * time.Millisecond
	backoffMax = 30 * time.Second
)

// SessionConfig configures the writes for one agent connection.
type SessionConfig struct {
	// Name is the node name, from the client certificate.
	Name string
	// Client acts as the node (package asnode); required.
	Client asnode.Client
	// OnAck is called, on the goroutine running the session's step, after
	// the report carrying seq was written. Reports coalesce (last wins), so
	// an ack covers every earlier seq too. It must not call Stop.
	OnAck func(seq uint64)
	// OnFatal is called once when writes can never succeed (ErrNotEdge,
	// ErrGone, or the relay may not act as the node: asnode.NotAllowed);
	// the session has stopped writing. It must not call Stop.
	OnFatal func(err error)
	// Alive reports whether the connection has been heard from recently;
	// the Lease is renewed only while it says so. Nil means always.
	Alive func() bool
	// Create guards the creation of the Node when it does not exist; a
	// refusal ends the session like ErrNotEdge.
	Create CreateHooks
	Log    *slog.Logger
}

// Session makes the API writes of one agent connection. It has no
// goroutine of its own: a timer, or a report, puts it in its Writer's
// queue, whose workers run one step of it at a time (see Writer).
// Report never blocks: the latest report replaces one not yet written.
type Session struct {
	w   *Writer
	cfg SessionConfig
	// ctx is the context the session was started with; a step's requests
	// run in a child of it, which Stop cancels (steps), so a session
	// between steps holds no context of its own.
	ctx   context.Context
	steps stepctx.Steps
	// id names this connection in the EdgeLinkReady condition; written
	// is set once the Node was written, fatal when writes stopped for
	// good, stopped once Stop was called.
	id                      string
	written, fatal, stopped atomic.Bool

	mu      sync.Mutex
	pending *Report
	seq     uint64
	gen     uint64 // bumped by every Report, to tell a newer one apart
	unknown bool   // NodeUnknown was called since the last step

	// What the steps keep from one to the next. Only the step running
	// touches it: the Writer's queue never runs a session on two workers
	// at once.
	timer *time.Timer // wakes the session when the next write is due
	// node is what the session keeps of the Node it last wrote (its UID
	// and its conditions' types and statuses), nil until it was written
	// and after a failed write; reread says the next status write reads
	// the Node first, since the node lifecycle controller may have
	// changed its conditions (the Lease was not renewed for a
	// LeaseDuration).
	node      *nodeState
	reread    bool
	leased    bool      // the Lease was taken, and not failed since
	lease     types.UID // its UID
	leaseOK   time.Time // when the Lease was last renewed
	last      *Report   // last report written, for the periodic refresh
	retryAt   time.Time
	backoff   time.Duration
	leaseAt   time.Time
	leaseBack time.Duration
	refreshAt time.Time
	acked     uint64
}

// Start begins a session for cfg.Name. Stop it when the connection ends.
func (w *Writer) Start(ctx context.Context, cfg SessionConfig) *Session {
	if cfg.Log == nil {
		cfg.Log = w.cfg.Log.With("node", cfg.Name)
	}
	if cfg.OnAck == nil {
		cfg.OnAck = func(uint64) {}
	}
	if cfg.OnFatal == nil {
		cfg.OnFatal = func(error) {}
	}
	if cfg.Alive == nil {
		cfg.Alive = func() bool { return true }
	}
	var id [6]byte
	_, _ = rand.Read(id[:])
	s := &Session{w: w, cfg: cfg, ctx: ctx,
		id: hex.EncodeToString(id[:]), backoff: backoffMin, leaseBack: backoffMin}
	return s
}

// disconnectTimeout bounds the EdgeLinkReady=False write when a session
// stops, relay shutdown included.
const disconnectTimeout = 5 * time.Second

// stepTimeout bounds one step's API requests, so that a request the API
// server never answers holds a worker of the Writer for that long at
// most; the step is then retried like any failed write.
const stepTimeout = time.Minute

// Report queues rep for writing; seq is the frame's sequence number, or 0
// for a hello, which is not acked.
func (s *Session) Report(seq uint64, rep Report) {
	rep.Session = s.id
	s.mu.Lock()
	s.pending = &rep
	if seq > s.seq {
		s.seq = seq
	}
	s.gen++
	s.mu.Unlock()
	s.wake()
}

// NodeUnknown tells the session that its Node's Ready condition was seen
// Unknown, as the node lifecycle controller marks a Node whose Lease and
// status it found stale. While the agent is heard from, the session then
// writes the status again at once, from a fresh read, so the Node is
// Ready again within a step instead of at the next refresh, as a kubelet,
// which reads its Node every 10 s, would make it.
func (s *Session) NodeUnknown() {
	s.mu.Lock()
	s.unknown = true
	s.mu.Unlock()
	s.wake()
}

// wake queues a step of the session; one queued or running already
// covers it (a step put while one runs runs after it).
func (s *Session) wake() {
	s.w.q.Put(context.Background(), s, struct{}{}, nil)
}

// Stop ends the session and waits until no step of it runs. The Lease
// simply stops being renewed; the Node's EdgeLinkReady becomes False
// (since now) unless a newer connection of the agent wrote it meanwhile.
func (s *Session) Stop() {
	s.stopped.Store(true)
	s.steps.Stop()
	s.w.q.WaitIdle(s)
	if s.timer != nil {
		s.timer.Stop()
	}
	if !s.written.Load() || s.fatal.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), disconnectTimeout)
	defer cancel()
	if _, err := s.w.markDisconnected(ctx, s.cfg.Client, s.cfg.Name, s.id, s.w.cfg.Now(), s.node); err != nil {
		s.cfg.Log.Warn("node not marked disconnected", "err", err)
	}
}

// step runs one step of s on a worker of the Writer's queue. A panic
// ends the session's writes, not the relay.
func (w *Writer) step(s *Session, _ struct{}) {
	defer w.q.Done(s)
	if s.fatal.Load() || s.done() {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			s.fatal.Store(true)
			s.cfg.Log.Error("node session panicked; writes for this connection stopped", "panic", r)
			s.cfg.OnFatal(errors.New("internal error in the relay"))
		}
	}()
	s.step()
}

// step writes what is due (the report waiting, a refresh, the Lease) and
// sets the timer for when the next thing is due.
func (s *Session) step() {
	ctx, end, ok := s.steps.Begin(s.ctx, stepTimeout)
	if !ok { // Stop came first
		return
	}
	defer end()
	renewEvery := s.w.pace.period()
	now := s.w.cfg.Now()

	s.mu.Lock()
	rep, seq, gen, unknown := s.pending, s.seq, s.gen, s.unknown
	s.unknown = false
	s.mu.Unlock()
	if unknown && s.node != nil && s.cfg.Alive() {
		s.reread, s.refreshAt = true, now
	}
	if rep == nil && s.node != nil && s.last != nil && !now.Before(s.refreshAt) {
		rep, seq = s.last, 0 // a refresh acks nothing
	}
	if rep != nil && !now.Before(s.retryAt) {
		kept := s.node
		if s.reread || s.last == nil || !sameLabels(&s.last.Info, &rep.Info) {
			kept = nil // read the Node: its conditions, or its labels to write
		}
		n, err := s.w.apply(ctx, s.cfg.Client, s.cfg.Name, rep, kept, s.cfg.Create)
		switch {
		case s.done():
			return
		case errors.Is(err, ErrNotEdge), errors.Is(err, ErrGone):
			s.cfg.Log.Error("refusing to write node", "err", err)
			s.fatal.Store(true)
			s.cfg.OnFatal(err)
			return
		case asnode.NotAllowed(err):
			s.cfg.Log.Error("cannot act as the node", "err", err)
			s.fatal.Store(true)
			s.cfg.OnFatal(errors.New(asnode.NotAllowedHint(s.cfg.Name)))
			return
		case err != nil:
			s.node = nil // re-read on the next try
			s.mu.Lock()
			if s.pending == nil {
				// A failed refresh is retried as a report is: with
				// node nil the refresh is no longer due, and neither
				// is the Lease, so the session would wait for the
				// agent's next report.
				s.pending = rep
			}
			s.mu.Unlock()
			s.retryAt = now.Add(jitter(s.backoff))
			s.cfg.Log.Warn("node write failed; will retry", "err", err, "retry_in", s.backoff)
			s.backoff = min(2*s.backoff, backoffMax)
		default:
			first := s.node == nil
			s.node, s.last, s.backoff, s.reread = stateOf(n), rep, backoffMin, false
			if s.written.Swap(true) {
				s.refreshAt = now.Add(statusRefresh)
			} else {
				s.refreshAt = now.Add(phase(statusRefresh))
			}
			s.mu.Lock()
			if s.gen == gen {
				s.pending = nil // nothing newer arrived meanwhile
			}
			s.mu.Unlock()
			if seq > s.acked {
				s.acked = seq
				s.cfg.OnAck(seq)
			}
			if first || !s.leased {
				s.leaseAt = now // take the Lease at once
			}
		}
	}
	if s.node != nil && !now.Before(s.leaseAt) {
		if s.leased { // a renewal on schedule: how late did it start?
			renewEvery = s.w.pace.observe(now, s.leaseAt)
		}
		if s.cfg.Alive() {
			node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: s.cfg.Name, UID: s.node.uid}}
			uid, err := s.w.renewLease(ctx, s.cfg.Client, node, s.leased, s.lease)
			if s.done() {
				return
			}
			if err != nil {
				s.leased = false
				s.leaseAt = now.Add(jitter(min(s.leaseBack, renewEvery)))
				s.leaseBack = min(2*s.leaseBack, backoffMax)
				s.cfg.Log.Warn("lease renewal failed; will retry", "err", err)
			} else {
				if !s.leased { // just taken: start at a random phase
					s.leaseAt = now.Add(phase(renewEvery))
				} else {
					s.leaseAt = now.Add(renewEvery)
				}
				if !s.leaseOK.IsZero() && now.Sub(s.leaseOK) >= s.w.cfg.LeaseDuration {
					// The Lease may have expired meanwhile, and the node
					// lifecycle controller marked the Node Unknown:
					// write the status now, from a fresh read, so Ready
					// is True again with a new transition time.
					s.reread, s.refreshAt = true, now
				}
				s.leased, s.lease, s.leaseBack, s.leaseOK = true, uid, backoffMin, now
			}
		} else {
			s.leaseAt = now.Add(renewEvery)
		}
	}

	// Wake when the next thing is due; a report wakes it sooner.
	next := now.Add(time.Hour)
	s.mu.Lock()
	if s.pending != nil && s.retryAt.Before(next) {
		next = s.retryAt
	}
	s.mu.Unlock()
	if s.node != nil {
		next = earliest(next, s.leaseAt, s.refreshAt)
	}
	d := max(next.Sub(s.w.cfg.Now()), time.Millisecond)
	if s.timer == nil {
		s.timer = time.AfterFunc(d, s.wake)
	} else {
		s.timer.Reset(d)
	}
}

// sameLabels reports whether reports of a and b give the Node the same
// labels (see Labels).
func sameLabels(a, b *wire.NodeInfo) bool {
	return a.Arch == b.Arch && a.OS == b.OS && a.Board == b.Board
}

// intern is s as one string shared by every session: condition types
// and statuses are a handful of values.
func intern[S ~string](s S) S { return S(unique.Make(string(s)).Value()) }

// done reports whether the session was stopped or the context it was
// started with ended: its writes are over.
func (s *Session) done() bool { return s.stopped.Load() || s.ctx.Err() != nil }

func earliest(t time.Time, more ...time.Time) time.Time {
	for _, m := range more {
		if m.Before(t) {
			t = m
		}
	}
	return t
}

// jitter spreads retries of many sessions so they do not arrive together.
func jitter(d time.Duration) time.Duration {
	return d/2 + mrand.N(d/2+1)
}

// phase is a random point in (0, d]: where a periodic write of one
// session starts, so those of many sessions started together spread out.
func phase(d time.Duration) time.Duration {
	return 1 + mrand.N(d)
}
