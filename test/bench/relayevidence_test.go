package bench

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// logCounts is a slog.Handler that counts a relay's log records (Info and
// above) by level and message, and keeps the attributes of the first few
// of each warning, so a benchmark can say what the relay reported in a
// window without printing a line per agent.
type logCounts struct {
	s     *logState
	attrs []slog.Attr
}

type logState struct {
	mu       sync.Mutex
	counts   map[string]int
	examples map[string][]string
}

const logExamples = 3

func newLogCounts() *logCounts {
	return &logCounts{s: &logState{counts: map[string]int{}, examples: map[string][]string{}}}
}

func (h *logCounts) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *logCounts) Handle(_ context.Context, r slog.Record) error {
	k := r.Level.String() + " " + r.Message
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	h.s.counts[k]++
	if r.Level >= slog.LevelWarn && len(h.s.examples[k]) < logExamples {
		var b strings.Builder
		for _, a := range h.attrs {
			fmt.Fprintf(&b, " %s", a)
		}
		r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s", a); return true })
		h.s.examples[k] = append(h.s.examples[k], strings.TrimSpace(b.String()))
	}
	return nil
}

func (h *logCounts) WithAttrs(as []slog.Attr) slog.Handler {
	return &logCounts{s: h.s, attrs: append(slices.Clip(h.attrs), as...)}
}

func (h *logCounts) WithGroup(string) slog.Handler { return h }

// snapshot is the counts so far.
func (h *logCounts) snapshot() map[string]int {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	return maps.Clone(h.s.counts)
}

// since writes the records counted from c0 to now, most first, with the
// examples of the warnings among them.
func (h *logCounts) since(c0 map[string]int) string {
	c1 := h.snapshot()
	keys := slices.SortedFunc(maps.Keys(c1), func(a, b string) int { return c1[b] - c0[b] - (c1[a] - c0[a]) })
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	var parts []string
	for _, k := range keys {
		if d := c1[k] - c0[k]; d > 0 {
			p := fmt.Sprintf("%q × %d", k, d)
			if ex := h.s.examples[k]; len(ex) > 0 {
				p += fmt.Sprintf(" (e.g. %s)", strings.Join(ex, " | "))
			}
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "; ")
}

// relayCounters are the counters and gauges of a relay's registry, by
// series (`name{a="x"}`).
func relayCounters(reg *prometheus.Registry) (map[string]float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			k := mf.GetName()
			if len(ls) > 0 {
				k += "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case m.GetCounter() != nil:
				out[k] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[k] = m.GetGauge().GetValue()
			}
		}
	}
	return out, nil
}
