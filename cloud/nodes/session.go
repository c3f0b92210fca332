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

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"

	"outpost.dev/cloud/asnode"
)

// statusRefresh is how often an unchanged status is written again, like
// the kubelet's nodeStatusReportFrequency, so lastHeartbeatTime stays
// meaningful to people reading the Node.
const statusRefresh = 5 * time.Minute

// A session's steady-state writes, like a kubelet's: the Lease renewed
// every LeaseDuration/4 (6 a minute with the default 40 s) and the Node's
// status written when it changes, or every statusRefresh when it does not
// (0.2 a minute). So that a fleet connected at once (a relay restart) does
// not renew in lock-step bursts, the first renewal after the Lease is
// taken, and the first refresh after the Node is written, come at a
// random point within their period (phase); the later ones keep the
// period. No interval is ever longer than the period, so the Lease
// is as fresh as before for the node lifecycle controller; the cost is at
// most one extra write of each per connection.

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
	// OnAck is called, on the session's goroutine, after the report
	// carrying seq was written. Reports coalesce (last wins), so an ack
	// covers every earlier seq too.
	OnAck func(seq uint64)
	// OnFatal is called once when writes can never succeed (ErrNotEdge,
	// ErrGone, or the relay may not act as the node: asnode.NotAllowed);
	// the session has stopped writing.
	OnFatal func(err error)
	// Alive reports whether the connection has been heard from recently;
	// the Lease is renewed only while it says so. Nil means always.
	Alive func() bool
	// Create guards the creation of the Node when it does not exist; a
	// refusal ends the session like ErrNotEdge.
	Create CreateHooks
	Log    *slog.Logger
}

// Session runs the API writes of one agent connection on its own goroutine.
// Report never blocks: the latest report replaces one not yet written.
type Session struct {
	w      *Writer
	cfg    SessionConfig
	parent context.Context
	stop   context.CancelFunc
	done   chan struct{}
	wake   chan struct{}
	// id names this connection in the EdgeLinkReady condition; written
	// is set once the Node was written, fatal when writes stopped for good.
	id             string
	written, fatal atomic.Bool

	mu      sync.Mutex
	pending *Report
	seq     uint64
	gen     uint64 // bumped by every Report, to tell a newer one apart
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
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	var id [6]byte
	_, _ = rand.Read(id[:])
	s := &Session{w: w, cfg: cfg, parent: parent, stop: cancel, done: make(chan struct{}), wake: make(chan struct{}, 1),
		id: hex.EncodeToString(id[:])}
	go s.run(ctx)
	return s
}

// disconnectTimeout bounds the EdgeLinkReady=False write when a session
// stops, relay shutdown included.
const disconnectTimeout = 5 * time.Second

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
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Stop ends the session and waits for its goroutine. The Lease simply
// stops being renewed; the Node's EdgeLinkReady becomes False (since now)
// unless a newer connection of the agent wrote it meanwhile.
func (s *Session) Stop() {
	s.stop()
	<-s.done
	if !s.written.Load() || s.fatal.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.parent), disconnectTimeout)
	defer cancel()
	if _, err := s.w.MarkDisconnected(ctx, s.cfg.Client, s.cfg.Name, s.id, s.w.cfg.Now()); err != nil {
		s.cfg.Log.Warn("node not marked disconnected", "err", err)
	}
}

func (s *Session) run(ctx context.Context) {
	defer close(s.done)
	defer func() {
		if r := recover(); r != nil {
			s.fatal.Store(true)
			s.cfg.Log.Error("node session panicked; writes for this connection stopped", "panic", r)
			s.cfg.OnFatal(errors.New("internal error in the relay"))
		}
	}()
	var (
		node       *corev1.Node
		lease      *coordinationv1.Lease
		last       *Report // last report written, for the periodic refresh
		retryAt    time.Time
		backoff    = backoffMin
		leaseAt    time.Time
		leaseBack  = backoffMin
		refreshAt  time.Time
		renewEvery = s.w.cfg.LeaseDuration / 4
		acked      uint64
	)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := s.w.cfg.Now()

		s.mu.Lock()
		rep, seq, gen := s.pending, s.seq, s.gen
		s.mu.Unlock()
		if rep == nil && node != nil && last != nil && !now.Before(refreshAt) {
			rep, seq = last, 0 // a refresh acks nothing
		}
		if rep != nil && !now.Before(retryAt) {
			n, err := s.w.apply(ctx, s.cfg.Client, s.cfg.Name, rep, node, s.cfg.Create)
			switch {
			case ctx.Err() != nil:
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
				node = nil // re-read on the next try
				s.mu.Lock()
				if s.pending == nil {
					// A failed refresh is retried as a report is: with
					// node nil the refresh is no longer due, and neither
					// is the Lease, so the session would sleep until the
					// agent's next report.
					s.pending = rep
				}
				s.mu.Unlock()
				retryAt = now.Add(jitter(backoff))
				s.cfg.Log.Warn("node write failed; will retry", "err", err, "retry_in", backoff)
				backoff = min(2*backoff, backoffMax)
			default:
				first := node == nil
				node, last, backoff = n, rep, backoffMin
				if s.written.Swap(true) {
					refreshAt = now.Add(statusRefresh)
				} else {
					refreshAt = now.Add(phase(statusRefresh))
				}
				s.mu.Lock()
				if s.gen == gen {
					s.pending = nil // nothing newer arrived meanwhile
				}
				s.mu.Unlock()
				if seq > acked {
					acked = seq
					s.cfg.OnAck(seq)
				}
				if first || lease == nil {
					leaseAt = now // take the Lease at once
				}
			}
		}
		if node != nil && !now.Before(leaseAt) {
			if s.cfg.Alive() {
				l, err := s.w.RenewLease(ctx, s.cfg.Client, node, lease)
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					lease = nil
					leaseAt = now.Add(jitter(min(leaseBack, renewEvery)))
					leaseBack = min(2*leaseBack, backoffMax)
					s.cfg.Log.Warn("lease renewal failed; will retry", "err", err)
				} else {
					if lease == nil { // just taken: start at a random phase
						leaseAt = now.Add(phase(renewEvery))
					} else {
						leaseAt = now.Add(renewEvery)
					}
					lease, leaseBack = l, backoffMin
				}
			} else {
				leaseAt = now.Add(renewEvery)
			}
		}

		// Sleep until the next thing is due or a report arrives.
		next := now.Add(time.Hour)
		s.mu.Lock()
		if s.pending != nil && retryAt.Before(next) {
			next = retryAt
		}
		s.mu.Unlock()
		if node != nil {
			next = earliest(next, leaseAt, refreshAt)
		}
		timer.Reset(max(next.Sub(s.w.cfg.Now()), time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		case <-timer.C:
		}
	}
}

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
