package relay_test

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"outpost.dev/cloud/asnode"
	"outpost.dev/cloud/pki"
	"outpost.dev/cloud/relay"
)

// Run a relay in-process over TLS, as tests and benchmarks do.
func Example() {
	ca, _ := pki.Generate(time.Now())
	api := fake.NewClientset() // a real clientset in production
	srv, err := relay.New(relay.Config{
		Client: api,
		AsNode: asnode.Same{C: api}, // asnode.New(restConfig) in production
		CA:     ca,
		Log:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	cert, _ := ca.ServingCert([]string{"127.0.0.1"}, time.Hour)
	hs := httptest.NewUnstartedServer(srv)
	hs.Listener = srv.Listener(hs.Listener)
	hs.TLS = srv.TLSConfig(cert)
	hs.StartTLS()
	defer hs.Close()
	defer srv.Close() // first: closes agent connections with "going away"

	client := hs.Client() // trusts the httptest cert only; use ca.Pool() instead
	client.Transport.(*http.Transport).TLSClientConfig.RootCAs = ca.Pool()
	resp, err := client.Get(hs.URL + "/healthz")
	if err != nil {
		panic(err)
	}
	fmt.Println(resp.Status)
	// Output: 200 OK
}
