package asnode

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// Each node's client sends only that node's user name to impersonate,
// over the relay's own credentials.
func TestForImpersonatesTheNodeOnly(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]http.Header{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Header.Get("Impersonate-User")] = r.Header.Clone()
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"Node","apiVersion":"v1","metadata":{"name":"x"}}`))
	}))
	defer srv.Close()
	p, err := New(&rest.Config{Host: srv.URL, BearerToken: "relay-token", QPS: 100, Burst: 10})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"gw-1", "gw-2"} {
		c, err := p.For(n)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.CoreV1().Nodes().Get(context.Background(), n, metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CoordinationV1().Leases("kube-node-lease").Get(context.Background(), n, metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"gw-1", "gw-2"} {
		h := seen[UserPrefix+n]
		if h == nil {
			t.Fatalf("no request impersonating %s; saw %v", n, seen)
		}
		if h.Get("Authorization") != "Bearer relay-token" {
			t.Errorf("%s: Authorization %q, want the relay's own token", n, h.Get("Authorization"))
		}
		for k := range h {
			if k != "Impersonate-User" && len(k) > 11 && k[:11] == "Impersonate" {
				t.Errorf("%s: header %s sent; only the user name may be", n, k)
			}
		}
	}
	if len(seen) != 2 {
		t.Errorf("requests as %d users, want 2: %v", len(seen), seen)
	}
}

func TestNewRefusesAnImpersonatingConfig(t *testing.T) {
	cfg := &rest.Config{Host: "https://127.0.0.1:1"}
	cfg.Impersonate.UserName = "admin"
	if _, err := New(cfg); err == nil {
		t.Fatal("New accepted a configuration that already impersonates someone")
	}
}

// Over https with the relay's certificate or token the nodes' watches are
// watchmux streams; a configuration watchmux does not support keeps
// client-go's, and says why.
func TestStreamsWhereSupported(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	for _, tc := range []struct {
		name    string
		cfg     *rest.Config
		streams bool
	}{
		{"https, token", &rest.Config{Host: srv.URL, BearerToken: "t", TLSClientConfig: rest.TLSClientConfig{Insecure: true}}, true},
		{"plain http", &rest.Config{Host: "http://127.0.0.1:1"}, false},
		{"basic auth", &rest.Config{Host: srv.URL, Username: "u", Password: "p", TLSClientConfig: rest.TLSClientConfig{Insecure: true}}, false},
	} {
		p, err := New(tc.cfg)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		c, err := p.For("n")
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		_, streams := c.(Streams)
		if streams != tc.streams || (p.StreamsUnavailable() == nil) != tc.streams {
			t.Errorf("%s: streams %v (unavailable: %v), want %v", tc.name, streams, p.StreamsUnavailable(), tc.streams)
		}
		p.Close()
	}
}
