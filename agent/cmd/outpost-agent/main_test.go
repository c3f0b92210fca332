package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"outpost.dev/agent/internal/testpki"
	"outpost.dev/agent/store"
	"outpost.dev/wire"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestFailuresAreOneLine(t *testing.T) {
	dir := t.TempDir()
	noConfig := "--config=" + emptyConfig(t)
	badConfig := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badConfig, []byte("server: https://r:1\nmaxpods: 3\n"), 0o600)
	held := filepath.Join(dir, "held")
	st, err := store.Open(held)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no command", nil, 2, "no command"},
		{"unknown command", []string{"start"}, 2, `unknown command "start"`},
		{"unknown flag", []string{"run", "--bogus"}, 2, "run: flag provided but not defined: -bogus"},
		{"stray argument", []string{"join", "extra"}, 2, `join: unexpected argument "extra"`},
		{"join without server", []string{"join", noConfig, "--state-dir", dir}, 2, "join: no relay URL: pass --server https://HOST:PORT"},
		{"join without token", []string{"join", noConfig, "--state-dir", dir, "--server", "https://r:1"}, 2, `join: no token: pass --token ID.SECRET (create one with "outpost-relay token create")`},
		{"join bad node name", []string{"join", noConfig, "--state-dir", dir, "--server", "https://r:1", "--token", "abcdef.0123456789abcdef", "--node-name", "Gate_Way"}, 1, `node name "Gate_Way" is not a valid Kubernetes node name`},
		{"join bad server", []string{"join", noConfig, "--server", "relay:443"}, 1, `server "relay:443" must look like https://HOST:PORT`},
		{"run not joined", []string{"run", noConfig, "--state-dir", dir}, 1, `not joined: run "outpost-agent join --server URL --token TOKEN" first`},
		{"run state dir in use", []string{"run", noConfig, "--state-dir", held}, 1, "state dir " + held + " is in use by another outpost-agent (pid"},
		{"join state dir in use", []string{"join", noConfig, "--state-dir", held, "--server", "https://r:1", "--token", "abcdef.0123456789abcdef", "--node-name", "gw"}, 1, "is in use by another outpost-agent"},
		{"unknown config field", []string{"run", "--config", badConfig}, 1, `unknown field "maxpods"`},
		{"explicit config missing", []string{"run", "--config", filepath.Join(dir, "absent.yaml")}, 1, "absent.yaml does not exist: check --config"},
		{"bad log level", []string{"run", noConfig, "--log-level", "loud"}, 1, `logLevel "loud" is not one of`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			out := stderr.String()
			if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "outpost-agent: ") || !strings.Contains(out, tt.want) {
				t.Errorf("stderr = %q\nwant one line containing %q", out, tt.want)
			}
		})
	}
}

// emptyConfig keeps tests away from the machine's /etc/outpost/agent.yaml,
// and the embedded MQTT broker off the machine's port 1883.
func emptyConfig(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "empty.yaml")
	if err := os.WriteFile(p, []byte("mqtt:\n  listen: 127.0.0.1:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"version"}, &stdout, &stderr); code != 0 || !strings.HasPrefix(stdout.String(), "outpost-agent dev (") {
		t.Fatalf("exit %d, stdout %q", code, stdout.String())
	}
}

// TestJoinAndRun drives the command as a user would: join against a
// relay, refuse a second join without --force, run until SIGTERM.
func TestJoinAndRun(t *testing.T) {
	const token = "abcdef.0123456789abcdef"
	ca := testpki.NewCA(t, "relay-ca")
	events := make(chan string, 100)
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+wire.PathJoinCA, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(wire.JoinCA{CA: string(ca.PEM), Signature: wire.CASignature("0123456789abcdef", ca.PEM)})
	})
	mux.HandleFunc("POST "+wire.PathJoin, func(w http.ResponseWriter, r *http.Request) {
		var jr wire.JoinRequest
		json.NewDecoder(r.Body).Decode(&jr)
		cert, err := ca.Sign(t, []byte(jr.CSR), "system:node:"+jr.NodeName, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(wire.JoinResponse{NodeName: jr.NodeName, Certificate: string(cert), CA: string(ca.PEM)})
	})
	mux.HandleFunc(wire.PathConnect, func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "no client certificate", http.StatusUnauthorized)
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		_, b, err := c.Read(r.Context())
		if f, derr := wire.Decode(b); err != nil || derr != nil || f.Type != wire.TypeHello {
			events <- "bad hello"
			return
		}
		ack, _ := wire.Encode(wire.TypeHelloAck, 0, &wire.HelloAck{Version: 1, NodeName: "gw-test", HeartbeatSeconds: 30})
		c.Write(r.Context(), websocket.MessageBinary, ack)
		events <- "hello " + r.TLS.PeerCertificates[0].Subject.CommonName
		for {
			if _, _, err := c.Read(r.Context()); err != nil {
				events <- fmt.Sprint("closed ", websocket.CloseStatus(err))
				return
			}
		}
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = ca.ServerTLS(t)
	srv.TLS.ClientAuth = 3 // tls.VerifyClientCertIfGiven: join runs without one
	srv.StartTLS()
	defer srv.Close()

	dir := t.TempDir()
	noConfig := "--config=" + emptyConfig(t)
	state := filepath.Join(dir, "state")
	joinArgs := []string{"join", noConfig, "--state-dir", state, "--server", srv.URL, "--token", token, "--node-name", "gw-test"}
	var stdout, stderr syncBuf
	if code := run(joinArgs, &stdout, &stderr); code != 0 {
		t.Fatalf("join exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "as node gw-test") {
		t.Errorf("join stdout = %q", stdout.String())
	}
	stderr = syncBuf{}
	if code := run(joinArgs, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "join: already joined as gw-test to "+srv.URL+": pass --force") {
		t.Errorf("second join: exit %d, stderr %q", code, stderr.String())
	}

	stderr = syncBuf{}
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"run", noConfig, "--state-dir", state, "--log-level", "debug"}, &stdout, &stderr)
	}()
	select {
	case e := <-events:
		if e != "hello system:node:gw-test" {
			t.Fatalf("relay: %s", e)
		}
	case code := <-done:
		t.Fatalf("run exited %d early: %s", code, stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatalf("no hello; agent log:\n%s", stderr.String())
	}
	// run has registered for SIGTERM by now, so this reaches it, not the test binary's default action.
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("run exit %d after SIGTERM: %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop on SIGTERM")
	}
	if e := <-events; e != "closed StatusNormalClosure" {
		t.Errorf("relay saw %s, want a normal closure", e)
	}
	// The store was closed: it opens again at once.
	st, err := store.Open(state)
	if err != nil {
		t.Fatalf("store after run: %v", err)
	}
	st.Close()
}
