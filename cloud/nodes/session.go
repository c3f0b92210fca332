package nodes

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
)

// statusRefresh is how often an unchanged status is written again, like
// the kubelet's nodeStatusReportFrequency, so lastHeartbeatTime stays
// meaningful to people reading the Node.
const statusRefresh = 5 * time.Minute

// Retry backoff for failed writes.
const (
	backoffMin = 500 * time.Millisecond
	backoffMax = 30 * time.Second
)

// SessionConfig configures the writes for one agent connection.
type SessionConfig struct {
	// Name is the node name, from the client certificate.
	Name string
	// OnAck is called, on the session's goroutine, after the report
	// carrying seq was written. Reports coalesce (last wins), so an ack
	// covers every earlier seq too.
	OnAck func(seq uint64)
	// OnFatal is called once when writes can never succeed (ErrNotEdge);
	// the session has stopped writing.
	OnFatal func(err error)
	// Alive reports whether the connection has been heard from recently;
	// the Lease is renewed only while it says so. Nil means always.
	Alive func() bool
	Log   *slog.Logger
}

// Session runs the API writes of one agent connection on its own goroutine.
// Report never blocks: the latest report replaces one not yet written.
type Session struct {
	w    *Writer
	cfg  SessionConfig
	stop context.CancelFunc
	done chan struct{}
	wake chan struct{}

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
	ctx, cancel := context.WithCancel(ctx)
	s := &Session{w: w, cfg: cfg, stop: cancel, done: make(chan struct{}), wake: make(chan struct{}, 1)}
	go s.run(ctx)
	return s
}

// Report queues rep for writing; seq is the frame's sequence number, or 0
// for a hello, which is not acked.
func (s *Session) Report(seq uint64, rep Report) {
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

// Stop ends the session and waits for its goroutine. It writes nothing:
// the Lease simply stops being renewed.
func (s *Session) Stop() {
	s.stop()
	<-s.done
}

func (s *Session) run(ctx context.Context) {
	defer close(s.done)
	defer func() {
		if r := recover(); r != nil {
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
			n, err := s.w.Apply(ctx, s.cfg.Name, rep, node)
			switch {
			case ctx.Err() != nil:
				return
			case errors.Is(err, ErrNotEdge):
				s.cfg.Log.Error("refusing to write node", "err", err)
				s.cfg.OnFatal(err)
				return
			case err != nil:
				node = nil // re-read on the next try
				retryAt = now.Add(jitter(backoff))
				s.cfg.Log.Warn("node write failed; will retry", "err", err, "retry_in", backoff)
				backoff = min(2*backoff, backoffMax)
			default:
				first := node == nil
				node, last, backoff = n, rep, backoffMin
				refreshAt = now.Add(statusRefresh)
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
				l, err := s.w.RenewLease(ctx, node, lease)
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					lease = nil
					leaseAt = now.Add(jitter(min(leaseBack, renewEvery)))
					leaseBack = min(2*leaseBack, backoffMax)
					s.cfg.Log.Warn("lease renewal failed; will retry", "err", err)
				} else {
					lease, leaseBack = l, backoffMin
					leaseAt = now.Add(renewEvery)
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
	return d/2 + rand.N(d/2+1)
}
