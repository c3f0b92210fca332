package pods

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"outpost.dev/wire"
)

// TestHTTPGetHook: a hook's request carries its path, headers (Host
// included) and the lifecycle user agent; an HTTPS hook answered in plain
// HTTP is retried over HTTP (a kubelet's fallback) only for hooks; any
// status is an answer.
func TestHTTPGetHook(t *testing.T) {
	got := make(chan *http.Request, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer srv.Close()
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	g := &wire.HTTPGet{Path: "drain", Port: int32(p), HTTPS: true, Headers: [][2]string{{"X-Why", "stop"}, {"host", "svc.local"}}}

	if _, err := httpGet(t.Context(), "", host, g, 5*time.Second, "kube-probe/outpost", false); err == nil {
		t.Fatal("an HTTPS probe answered in plain HTTP succeeded")
	}
	resp, err := httpGet(t.Context(), "", host, g, 5*time.Second, "kube-lifecycle/outpost", true)
	if err != nil {
		t.Fatalf("hook with fallback: %v", err)
	}
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("status %d", resp.StatusCode)
	}
	r := <-got
	if r.URL.Path != "/drain" || r.Header.Get("X-Why") != "stop" || r.Host != "svc.local" || r.UserAgent() != "kube-lifecycle/outpost" {
		t.Errorf("request %s %q headers %v host %q", r.Method, r.URL.Path, r.Header, r.Host)
	}
}
