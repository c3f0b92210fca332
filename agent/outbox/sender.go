package outbox

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"outpost.dev/wire"
)

// Link is what the sender needs of the agent's connection.
type Link interface {
	Send(t wire.Type, seq uint64, body wire.Body) error
	Connected() bool
}

// raw sends a stored body as it is.
type raw []byte

func (r raw) MarshalCBOR() ([]byte, error) { return r, nil }
func (raw) Validate() error                { return nil }

// Sender sends queued reports in order while the link is up, and all
// unacked ones again after every reconnect (the relay writes are
// idempotent, so a report sent twice is harmless; one never sent is not).
type Sender struct {
	o       *Outbox
	link    Link
	log     *slog.Logger
	restart atomic.Bool
	wake    chan struct{}
}

// NewSender returns a sender for o over link.
func NewSender(o *Outbox, link Link, log *slog.Logger) *Sender {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Sender{o: o, link: link, log: log, wake: make(chan struct{}, 1)}
}

// Connected must be called after each hello-ack (the link's OnConnect):
// everything unacked is sent again on the new connection.
func (s *Sender) Connected() {
	s.restart.Store(true)
	s.poke()
}

// Acked applies an ack frame from the relay.
func (s *Sender) Acked(seq uint64) {
	if err := s.o.Ack(seq); err != nil {
		s.log.Error("outbox ack not stored; the report will be sent again", "seq", seq, "err", err)
	}
}

func (s *Sender) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run sends until ctx is done.
func (s *Sender) Run(ctx context.Context) {
	var sent uint64
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	for {
		if s.restart.Swap(false) {
			sent = 0
		}
		if s.link.Connected() {
			sent = s.sendPending(sent)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-s.o.Notify():
		case <-retry.C:
		}
	}
}

// sendPending sends what follows seq after and returns the last seq sent.
func (s *Sender) sendPending(after uint64) uint64 {
	for {
		batch, err := s.o.Pending(after, 32)
		if err != nil {
			s.log.Error("outbox unreadable", "err", err)
			return after
		}
		if len(batch) == 0 {
			return after
		}
		for _, e := range batch {
			err := s.link.Send(e.Type, e.Seq, raw(e.Body))
			if err != nil {
				// Queue full or link down: the next wake-up continues.
				if !errors.Is(err, context.Canceled) {
					s.log.Debug("outbox send deferred", "seq", e.Seq, "err", err)
				}
				return after
			}
			after = e.Seq
		}
	}
}
