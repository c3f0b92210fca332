package metrics

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"outpost.dev/test/wait"
)

func TestRender(t *testing.T) {
	contact := time.UnixMilli(1_800_000_000_250)
	tests := []struct {
		name string
		src  Source
		want []string // lines that must appear
		not  []string // metric names that must not
	}{
		{
			name: "connected",
			src: Source{
				Connected:      func() bool { return true },
				LastContact:    func() time.Time { return contact },
				Outbox:         func() (int, int, uint64) { return 3, 4096, 7 },
				OutboxMaxBytes: 8 << 20,
				PodsRunning:    func() int { return 2 },
				Goroutines:     func() int { return 41 },
				Allocs:         func() (uint64, uint64) { return 1 << 20, 300 },
				Memory: func() []Gauge {
					return []Gauge{{Name: "go_memory_classes_heap_objects_bytes", Help: "Live and dead heap objects.", Value: 2 << 20}}
				},
			},
			want: []string{
				"# TYPE outpost_link_connected gauge", "outpost_link_connected 1",
				"outpost_last_sync_timestamp_seconds 1.80000000025e+09",
				"outpost_outbox_reports 3", "# TYPE go_goroutines gauge", "go_goroutines 41", "go_memstats_alloc_bytes_total 1.048576e+06", "go_memstats_mallocs_total 300", "outpost_outbox_bytes 4096",
				"# TYPE outpost_outbox_dropped_total counter", "outpost_outbox_dropped_total 7",
				"outpost_outbox_max_bytes 8.388608e+06", "outpost_pods_running 2",
				"# TYPE go_memory_classes_heap_objects_bytes gauge", "go_memory_classes_heap_objects_bytes 2.097152e+06",
			},
		},
		{
			name: "never connected",
			src: Source{
				Connected:   func() bool { return false },
				LastContact: func() time.Time { return time.Time{} },
			},
			want: []string{"outpost_link_connected 0", "outpost_last_sync_timestamp_seconds 0"},
			not:  []string{"outpost_outbox_reports", "outpost_pods_running", "outpost_outbox_max_bytes", "go_memory_classes"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := string(Render(tt.src))
			lines := map[string]bool{}
			for _, l := range strings.Split(out, "\n") {
				lines[l] = true
			}
			for _, w := range tt.want {
				if !lines[w] {
					t.Errorf("no line %q in:\n%s", w, out)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(out, n) {
					t.Errorf("%s present:\n%s", n, out)
				}
			}
			// Every sample has its HELP and TYPE, in that order.
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				if strings.HasPrefix(l, "#") {
					continue
				}
				name := strings.Fields(l)[0]
				if !strings.Contains(out, "# HELP "+name+" ") || !strings.Contains(out, "# TYPE "+name+" ") {
					t.Errorf("%s lacks HELP or TYPE", name)
				}
			}
		})
	}
}

func TestHandler(t *testing.T) {
	// The heap profile is served only by a build with the tag
	// outpost_heapprofile; make test runs this test in one too.
	heapStatus := 404
	if heapProfile != nil {
		heapStatus = 200
	}
	var up bool
	h := Handler(Source{Connected: func() bool { return up }})
	for _, tt := range []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", "/metrics", 200, "outpost_link_connected 0\n"},
		{"HEAD", "/metrics", 200, ""},
		{"POST", "/metrics", 405, ""},
		{"GET", "/", 404, ""},
		{"GET", "/debug/heap", heapStatus, ""},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
		if rec.Code != tt.status || (tt.body != "" && !strings.HasSuffix(rec.Body.String(), tt.body)) {
			t.Errorf("%s %s: %d %q", tt.method, tt.path, rec.Code, rec.Body.String())
		}
		if tt.status == 200 && tt.path == "/metrics" && !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain; version=0.0.4") {
			t.Errorf("content type %q", rec.Header().Get("Content-Type"))
		}
	}
}

func TestServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var up atomic.Bool
	addr, err := Serve(ctx, "127.0.0.1:0", Handler(Source{Connected: up.Load}), nil)
	if err != nil {
		t.Fatal(err)
	}
	get := func() (string, error) {
		resp, err := http.Get("http://" + addr.String() + "/metrics")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	if body, err := get(); err != nil || !strings.Contains(body, "outpost_link_connected 0") {
		t.Fatalf("%v %q", err, body)
	}
	up.Store(true) // read on the next scrape
	if body, err := get(); err != nil || !strings.Contains(body, "outpost_link_connected 1") {
		t.Fatalf("%v %q", err, body)
	}
	// A second listener on the same address fails with a clear error.
	if _, err := Serve(ctx, addr.String(), http.NotFoundHandler(), nil); err == nil || !strings.Contains(err.Error(), addr.String()) {
		t.Fatalf("second listen: %v", err)
	}
	cancel()
	wait.For(t, 5*time.Second, "the endpoint to stop serving once ctx ended", func() bool { _, err := get(); return err != nil })
}
