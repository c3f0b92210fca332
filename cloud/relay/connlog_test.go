package relay

import (
	"bytes"
	"fmt"
	"log/slog"
	"runtime"
	"testing"

	"outpost.dev/test/heapstat"
)

// A connection's logger writes what a logger made With its node and
// remote address wrote, derived loggers too.
func TestConnLogAsWith(t *testing.T) {
	noTime := func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
	var got, want bytes.Buffer
	for _, tc := range []struct {
		name string
		log  func(*slog.Logger)
	}{
		{"plain", func(l *slog.Logger) { l.Info("agent connected", "protocol", 3) }},
		{"debug, filtered", func(l *slog.Logger) { l.Debug("pod status written", "seq", 7) }},
		{"with", func(l *slog.Logger) { l.With("component", "pods").Warn("pod refused", "pod", "default/web") }},
		{"group", func(l *slog.Logger) { l.WithGroup("sync").Error("frames", "n", 2) }},
	} {
		got.Reset()
		want.Reset()
		base := slog.New(slog.NewTextHandler(&got, &slog.HandlerOptions{ReplaceAttr: noTime})).With("replica", "r1")
		c := &conn{s: &Server{log: base}, node: "edge-1", remote: "10.0.0.7:41234"}
		tc.log(c.logger())
		tc.log(slog.New(slog.NewTextHandler(&want, &slog.HandlerOptions{ReplaceAttr: noTime})).With("replica", "r1").With("node", "edge-1", "remote", "10.0.0.7:41234"))
		if got.String() != want.String() {
			t.Errorf("%s: logged\n%q\nwant\n%q", tc.name, got.String(), want.String())
		}
	}
}

// BenchmarkConnLogMemory is what 1,000 connections keep for logging:
// their logger (With node and remote, as connections used to make, or
// connLog). B/conn is heap per connection.
func BenchmarkConnLogMemory(b *testing.B) {
	const n = 1000
	s := &Server{log: slog.New(slog.NewJSONHandler(&bytes.Buffer{}, nil))}
	conns := make([]*conn, n)
	for i := range conns {
		conns[i] = &conn{s: s, node: fmt.Sprint("edge-", i), remote: fmt.Sprintf("10.0.%d.%d:41234", i/256, i%256)}
	}
	for _, tc := range []struct {
		name string
		make func(*conn) *slog.Logger
	}{
		{"With", func(c *conn) *slog.Logger { return c.s.log.With("node", c.node, "remote", c.remote) }},
		{"connLog", (*conn).logger},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				logs := make([]*slog.Logger, n)
				before := heapstat.Live()
				for i, c := range conns {
					logs[i] = tc.make(c)
				}
				after := heapstat.Live()
				b.ReportMetric(float64(after-before)/n, "B/conn")
				runtime.KeepAlive(logs)
			}
		})
	}
}
