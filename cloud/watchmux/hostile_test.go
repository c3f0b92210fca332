package watchmux

import (
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"outpost.dev/test/wait"
)

// A stream that breaks a bound or sends what does not decode ends alone;
// the other streams of its connection go on. An error answer ends its
// stream with the API server's Status.
func TestBadStreamEndsAlone(t *testing.T) {
	good := framed(t, watch.Added, pod("a"))
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/vnd.kubernetes.protobuf;stream=watch")
		switch r.URL.Path {
		case "/good":
		case "/garbage":
			w.Write([]byte{0, 0, 0, 3, 0xff, 0xff, 0xff})
		case "/huge":
			w.Write([]byte{0x7f, 0xff, 0xff, 0xff})
		case "/gone":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusGone)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version: 1 (5)","reason":"Expired","code":410}`)
			return
		case "/html":
			w.Header().Set("Content-Type", "text/html")
		}
		w.Write(good)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	cfg := &rest.Config{Host: srv.URL, TLSClientConfig: rest.TLSClientConfig{
		CAData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}),
	}}
	m, err := New(cfg, Options{MaxEventSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	recs := map[string]*recorder{}
	for _, p := range []string{"/good", "/garbage", "/huge", "/gone", "/html"} {
		recs[p] = &recorder{}
		if _, err := m.Watch(t.Context(), Request{Path: p}, recs[p]); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"/garbage", "/huge", "/gone", "/html"} {
		wait.For(t, 30*time.Second, p+" ends", func() bool { _, ended, _ := recs[p].state(); return ended })
		if n, _, err := recs[p].state(); n != 0 || err == nil {
			t.Errorf("%s: %d events, error %v; want none and an error", p, n, err)
		}
	}
	if _, _, err := recs["/gone"].state(); !apierrors.IsResourceExpired(err) {
		t.Errorf("/gone ended with %v, want the 410 Expired Status", err)
	}
	wait.For(t, 30*time.Second, "the good stream's event", func() bool { n, _, _ := recs["/good"].state(); return n == 1 })
	if _, ended, err := recs["/good"].state(); ended {
		t.Fatalf("the good stream ended too: %v", err)
	}
	if m.Conns() != 1 {
		t.Fatalf("%d connections, want 1", m.Conns())
	}
}

// Configurations the relay is not deployed with are refused.
func TestRefusedConfigs(t *testing.T) {
	for name, cfg := range map[string]*rest.Config{
		"plain http":    {Host: "http://127.0.0.1:1"},
		"basic auth":    {Host: "https://127.0.0.1:1", Username: "u", Password: "p"},
		"exec":          {Host: "https://127.0.0.1:1", ExecProvider: &clientcmdapi.ExecConfig{Command: "x"}},
		"impersonating": {Host: "https://127.0.0.1:1", Impersonate: rest.ImpersonationConfig{UserName: "x"}},
	} {
		if _, err := New(cfg, Options{}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
