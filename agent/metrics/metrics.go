// Package metrics serves the agent's own figures in the Prometheus text
// format: is the link up, when did the agent last hear from a relay, what
// waits in the outbox and what it dropped, how many pods run.
//
// The format is written by hand (a dozen lines) rather than with the
// Prometheus client library, which would add a megabyte and several
// goroutines to a binary that counts its kilobytes. Values are read from
// their owners on each scrape; nothing is kept here.
package metrics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Source is where each scrape reads its values. A nil func leaves its
// metrics out.
type Source struct {
	// Connected reports whether the link to a relay is up.
	Connected func() bool
	// LastContact is when a frame last arrived from a relay (zero: never).
	LastContact func() time.Time
	// Outbox returns the reports and bytes waiting for an ack, and the
	// time-series reports dropped to make room since the outbox was made.
	Outbox func() (reports, bytes int, dropped uint64)
	// OutboxMaxBytes is the outbox's bound (0: not shown).
	OutboxMaxBytes int64
	// PodsRunning counts the pods whose phase is Running.
	PodsRunning func() int
	// Goroutines counts the agent's goroutines (runtime.NumGoroutine):
	// what a leak of streams or connections shows first.
	Goroutines func() int
	// Allocs returns the heap bytes and objects allocated since the
	// agent started (runtime/metrics): what one request costs it.
	Allocs func() (bytes, objects uint64)
	// Memory returns the Go runtime's memory by class (runtime/metrics
	// /memory/classes/...), rendered as gauges named the way the
	// Prometheus Go collector names them (go_memory_classes_..._bytes):
	// where the agent's anonymous memory goes.
	Memory func() []Gauge
}

// Gauge is one value of a Source's list.
type Gauge struct {
	Name, Help string
	Value      float64
}

// Handler serves GET /metrics (and /debug/heap in a build with the tag
// outpost_heapprofile).
func Handler(src Source) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		profile := r.URL.Path == "/debug/heap" && heapProfile != nil
		if r.URL.Path != "/metrics" && !profile {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "use GET", http.StatusMethodNotAllowed)
			return
		}
		if profile {
			heapProfile(w)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Write(Render(src))
	})
}

// Render writes src's current values in the Prometheus text format.
func Render(src Source) []byte {
	var b bytes.Buffer
	metric := func(name, typ, help string, v float64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n%s %s\n", name, help, name, typ, name, strconv.FormatFloat(v, 'g', -1, 64))
	}
	if src.Connected != nil {
		v := 0.0
		if src.Connected() {
			v = 1
		}
		metric("outpost_link_connected", "gauge", "Whether the link to a relay is up (1) or not (0).", v)
	}
	if src.LastContact != nil {
		v := 0.0
		if t := src.LastContact(); !t.IsZero() {
			v = float64(t.UnixMilli()) / 1000
		}
		metric("outpost_last_sync_timestamp_seconds", "gauge", "When a frame last arrived from a relay, in unix seconds; 0 if none did since the agent started.", v)
	}
	if src.Outbox != nil {
		reports, size, dropped := src.Outbox()
		metric("outpost_outbox_reports", "gauge", "Reports waiting in the outbox for the relay's ack.", float64(reports))
		metric("outpost_outbox_bytes", "gauge", "Bytes of the reports waiting in the outbox.", float64(size))
		metric("outpost_outbox_dropped_total", "counter", "Time-series reports dropped to make room in the outbox since it was created.", float64(dropped))
	}
	if src.OutboxMaxBytes > 0 {
		metric("outpost_outbox_max_bytes", "gauge", "The outbox's size bound (outboxMaxBytes).", float64(src.OutboxMaxBytes))
	}
	if src.PodsRunning != nil {
		metric("outpost_pods_running", "gauge", "Pods on this node whose phase is Running.", float64(src.PodsRunning()))
	}
	if src.Goroutines != nil {
		metric("go_goroutines", "gauge", "Number of goroutines that currently exist.", float64(src.Goroutines()))
	}
	if src.Allocs != nil {
		bytes, objects := src.Allocs()
		metric("go_memstats_alloc_bytes_total", "counter", "Total number of bytes allocated in heap until now, even if released already.", float64(bytes))
		metric("go_memstats_mallocs_total", "counter", "Total number of heap objects allocated, both live and gc-ed.", float64(objects))
	}
	if src.Memory != nil {
		for _, g := range src.Memory() {
			metric(g.Name, "gauge", g.Help, g.Value)
		}
	}
	return b.Bytes()
}

// Serve listens on addr and serves h until ctx is done. It returns once
// listening works, or with the listen error: the caller decides whether
// metrics are worth failing for (the agent logs and runs without).
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger) (net.Addr, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		MaxHeaderBytes:    8 << 10,
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics endpoint stopped", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return ln.Addr(), nil
}
