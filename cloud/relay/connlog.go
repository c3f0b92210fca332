package relay

import (
	"context"
	"log/slog"
)

// connLog is a connection's slog.Handler: the relay's, with the
// connection's node and remote address added first to each record as it
// is logged, as a logger made With them would, so that a connection keeps
// no handler and no formatted attributes of its own.
type connLog conn

// logger returns the connection's logger.
func (c *conn) logger() *slog.Logger { return slog.New((*connLog)(c)) }

func (h *connLog) base() slog.Handler { return h.s.log.Handler() }

func (h *connLog) attrs() []slog.Attr {
	return []slog.Attr{slog.String("node", h.node), slog.String("remote", h.remote)}
}

func (h *connLog) Enabled(ctx context.Context, l slog.Level) bool {
	return h.base().Enabled(ctx, l)
}

func (h *connLog) Handle(ctx context.Context, r slog.Record) error {
	nr := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	nr.AddAttrs(h.attrs()...)
	r.Attrs(func(a slog.Attr) bool {
		nr.AddAttrs(a)
		return true
	})
	return h.base().Handle(ctx, nr)
}

func (h *connLog) WithAttrs(as []slog.Attr) slog.Handler {
	return h.base().WithAttrs(h.attrs()).WithAttrs(as)
}

func (h *connLog) WithGroup(name string) slog.Handler {
	return h.base().WithAttrs(h.attrs()).WithGroup(name)
}
