package join

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"outpost.dev/agent/internal/testpki"
	"outpost.dev/wire"
)

const (
	tokenID     = "abcdef"
	tokenSecret = "0123456789abcdef"
	token       = tokenID + "." + tokenSecret
)

// relay is the join half of a relay, enough to exercise the agent's side.
type relay struct {
	ca *testpki.CA
	// caSecret signs the published CA; a wrong one models a relay that
	// does not know the token (or a man in the middle).
	caSecret string
	// published is the CA offered at PathJoinCA (defaults to ca.PEM).
	published []byte
	// reject, if set, is the JoinError reason for the token.
	reject string
	// joinBody, if set, replaces the join answer.
	joinBody []byte
	caCalls  int
}

func (r *relay) handler(t *testing.T) http.Handler {
	mux := http.NewServeMux()
	fail := func(w http.ResponseWriter, code int, reason string) {
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(wire.JoinError{Reason: reason})
	}
	mux.HandleFunc("GET "+wire.PathJoinCA, func(w http.ResponseWriter, req *http.Request) {
		r.caCalls++
		if req.URL.Query().Get("token-id") != tokenID {
			fail(w, http.StatusUnauthorized, "token "+req.URL.Query().Get("token-id")+" not found")
			return
		}
		pub := r.published
		if pub == nil {
			pub = r.ca.PEM
		}
		json.NewEncoder(w).Encode(wire.JoinCA{CA: string(pub), Signature: wire.CASignature(r.caSecret, pub)})
	})
	mux.HandleFunc("POST "+wire.PathJoin, func(w http.ResponseWriter, req *http.Request) {
		if r.reject != "" {
			fail(w, http.StatusUnauthorized, r.reject)
			return
		}
		if req.Header.Get("Authorization") != "Bearer "+token {
			fail(w, http.StatusUnauthorized, "bad bearer token")
			return
		}
		if r.joinBody != nil {
			w.Write(r.joinBody)
			return
		}
		var jr wire.JoinRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, req.Body, wire.MaxJoinBody)).Decode(&jr); err != nil {
			fail(w, http.StatusBadRequest, err.Error())
			return
		}
		cert, err := r.ca.Sign(t, []byte(jr.CSR), "system:node:"+jr.NodeName, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
		if err != nil {
			fail(w, http.StatusBadRequest, err.Error())
			return
		}
		json.NewEncoder(w).Encode(wire.JoinResponse{NodeName: jr.NodeName, Certificate: string(cert), CA: string(r.ca.PEM)})
	})
	return mux
}

func start(t *testing.T, r *relay) *httptest.Server {
	srv := httptest.NewUnstartedServer(r.handler(t))
	srv.TLS = r.ca.ServerTLS(t)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestJoin(t *testing.T) {
	ca := testpki.NewCA(t, "relay-ca")
	other := testpki.NewCA(t, "other-ca")
	tests := []struct {
		name    string
		relay   relay
		opts    func(o *Options)
		wantErr string
		noFetch bool
	}{
		{name: "happy path", relay: relay{caSecret: tokenSecret}},
		{
			name:    "bad CA signature refused",
			relay:   relay{caSecret: "ffffffffffffffff"},
			wantErr: "is not signed with this token's secret",
		},
		{
			name:    "relay JoinError reason surfaced",
			relay:   relay{caSecret: tokenSecret, reject: `token abcdef expired 2h0m ago: create a new one with "outpost-relay token create"`},
			wantErr: `token rejected by relay (token abcdef expired 2h0m ago: create a new one with "outpost-relay token create")`,
		},
		{
			name:    "unknown token at the CA endpoint",
			relay:   relay{caSecret: tokenSecret},
			opts:    func(o *Options) { o.Token = "zzzzzz." + tokenSecret },
			wantErr: "token rejected by relay (token zzzzzz not found)",
		},
		{
			name:    "CA file trusted without fetching",
			relay:   relay{caSecret: "wrong-secret-unused"},
			opts:    func(o *Options) { o.CAPEM = ca.PEM },
			noFetch: true,
		},
		{
			name:    "wrong CA file",
			relay:   relay{caSecret: tokenSecret},
			opts:    func(o *Options) { o.CAPEM = other.PEM },
			wantErr: "not signed by the CA it published",
		},
		{
			name:  "pin matches",
			relay: relay{caSecret: tokenSecret},
			opts:  func(o *Options) { o.CACertHashes = []string{SPKIHash(ca.Cert)} },
		},
		{
			name:    "pin mismatch refused",
			relay:   relay{caSecret: tokenSecret},
			opts:    func(o *Options) { o.CACertHashes = []string{SPKIHash(other.Cert)} },
			wantErr: "relay CA does not match --ca-cert-hash",
		},
		{
			name:    "bad pin syntax",
			relay:   relay{caSecret: tokenSecret},
			opts:    func(o *Options) { o.CACertHashes = []string{"md5:abc"} },
			wantErr: "--ca-cert-hash",
		},
		{
			name: "published CA signed right but not the serving CA",
			// A token holder could publish its own CA; the serving
			// certificate then fails verification against it.
			relay:   relay{caSecret: tokenSecret, published: other.PEM},
			wantErr: "not signed by the CA it published",
		},
		{
			name:    "bad token syntax",
			relay:   relay{caSecret: tokenSecret},
			opts:    func(o *Options) { o.Token = "nope" },
			wantErr: "--token",
		},
		{
			name:    "oversized answer refused",
			relay:   relay{caSecret: tokenSecret, joinBody: []byte(`{"certificate":"` + strings.Repeat("A", wire.MaxJoinBody) + `"}`)},
			wantErr: "exceeds 64 KiB",
		},
		{
			name:    "certificate for another key refused",
			relay:   relay{caSecret: tokenSecret, joinBody: mustJSON(t, wire.JoinResponse{NodeName: "gw-1", Certificate: string(nodeCert(t, ca))})},
			wantErr: "certificate for another key",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.relay
			r.ca = ca
			srv := start(t, &r)
			o := Options{Server: srv.URL, Token: token, NodeName: "gw-1"}
			if tt.opts != nil {
				tt.opts(&o)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			id, err := Join(ctx, o)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v\nwant containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.noFetch && r.caCalls != 0 {
				t.Errorf("CA fetched %d times despite a CA file", r.caCalls)
			}
			if id.NodeName != "gw-1" || id.Server != srv.URL || string(id.CAPEM) != string(ca.PEM) {
				t.Errorf("identity = node %q server %q, CA matches %v", id.NodeName, id.Server, string(id.CAPEM) == string(ca.PEM))
			}
			// The stored pieces must make a working client certificate.
			pair, err := tls.X509KeyPair(id.CertPEM, id.KeyPEM)
			if err != nil {
				t.Fatalf("stored key and cert do not pair: %v", err)
			}
			leaf, _ := x509.ParseCertificate(pair.Certificate[0])
			if leaf.Subject.CommonName != "system:node:gw-1" {
				t.Errorf("cert CN = %q", leaf.Subject.CommonName)
			}
		})
	}
}

func TestJoinUnreachable(t *testing.T) {
	_, err := Join(context.Background(), Options{Server: "https://127.0.0.1:1", Token: token, NodeName: "gw-1"})
	if err == nil || !strings.Contains(err.Error(), "cannot reach relay at 127.0.0.1:1") {
		t.Fatalf("err = %v", err)
	}
}

func nodeCert(t *testing.T, ca *testpki.CA) []byte {
	_, cert := ca.NodeIdentity(t, "gw-1", time.Now().Add(time.Hour))
	return cert
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
