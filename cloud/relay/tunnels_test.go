package relay_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"

	"outpost.dev/cloud/relay"
	"outpost.dev/wire"
)

// restConfig is a client-go config that presents cert to the kubelet API.
func restConfig(t *testing.T, k *kubeletAPI, cert tls.Certificate) *rest.Config {
	t.Helper()
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return &rest.Config{Host: k.url, TLSClientConfig: rest.TLSClientConfig{
		CAData:   k.caPEM,
		CertData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
		KeyData:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}),
	}}
}

// execClients are the two protocols a kubelet's /exec speaks: SPDY (what
// the API server uses, translating kubectl's v5 WebSocket) and the v4
// WebSocket channel protocol of older direct clients. Like the kubelet's,
// the relay's WebSocket side stops at v4.
var execClients = []struct {
	name string
	new  func(*rest.Config, *url.URL) (remotecommand.Executor, error)
}{
	{"spdy", func(c *rest.Config, u *url.URL) (remotecommand.Executor, error) {
		return remotecommand.NewSPDYExecutor(c, "POST", u)
	}},
	{"websocket", func(c *rest.Config, u *url.URL) (remotecommand.Executor, error) {
		return remotecommand.NewWebSocketExecutorForProtocols(c, "GET", u.String(), "v4.channel.k8s.io")
	}},
}

// nextTunnelOpen reads until the relay opens a tunnel.
func nextTunnelOpen(t *testing.T, c *websocket.Conn) wire.TunnelOpen {
	t.Helper()
	var o wire.TunnelOpen
	if err := nextStreamFrame(t, c, wire.TypeTunnelOpen).DecodeBody(&o); err != nil {
		t.Fatal(err)
	}
	return o
}

// TestKubeletExecTunnel: an exec through the relay's kubelet API over
// SPDY and WebSocket becomes a tunnel on the agent's link: the command,
// stdin to its end, stdout and stderr apart, the exit code back.
// Hostile tunnel frames end their tunnel with a reason and the link
// keeps serving. Only the API server gets in; a pod whose node is not
// connected is refused at once, saying the node is offline.
func TestKubeletExecTunnel(t *testing.T) {
	tr := newTestRelay(t, func(c *relay.Config) { c.KubeletAddress, c.KubeletPort = "127.0.0.1", 10250 })
	createPod(t, tr, "web", "gw-exec")
	createPod(t, tr, "away", "gw-offline")
	k := startKubelet(t, tr)
	c := tr.hello(t, "gw-exec")
	for {
		f, err := recvAny(t, c)
		if err != nil {
			t.Fatalf("waiting for the pod sync: %v", err)
		}
		if f.Type == wire.TypeSync {
			break
		}
	}
	execURL := func(pod, streams string) *url.URL {
		u, _ := url.Parse(k.url + "/exec/default/" + pod + "/app?command=sh&command=-c&command=cat+%3B+exit+3&" + streams)
		return u
	}
	cfg := restConfig(t, k, k.apiserverCert)

	for _, ec := range execClients {
		t.Run(ec.name, func(t *testing.T) {
			ex, err := ec.new(cfg, execURL("web", "input=1&output=1&error=1"))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			done := make(chan error, 1)
			go func() {
				done <- ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: strings.NewReader("to the agent"), Stdout: &stdout, Stderr: &stderr})
			}()
			o := nextTunnelOpen(t, c)
			if o.Kind != wire.TunnelExec || o.Namespace != "default" || o.Pod != "web" || o.Container != "app" ||
				strings.Join(o.Command, " ") != "sh -c cat ; exit 3" || !o.Stdin || !o.Stdout || !o.Stderr || o.TTY {
				t.Fatalf("tunnel-open %+v", o)
			}
			send(t, c, encode(t, wire.TypeTunnelAck, 0, &wire.TunnelAck{ID: o.ID}))
			var in []byte
			for {
				var d wire.TunnelData
				if err := nextStreamFrame(t, c, wire.TypeTunnelData).DecodeBody(&d); err != nil {
					t.Fatal(err)
				}
				if d.ID != o.ID || d.Channel != wire.ChanStdin {
					t.Fatalf("tunnel-data %+v", d)
				}
				in = append(in, d.Data...)
				// v4 WebSocket cannot say stdin ended (v5 can); SPDY can.
				if d.EOF || (ec.name == "websocket" && len(in) == len("to the agent")) {
					break
				}
			}
			if string(in) != "to the agent" {
				t.Fatalf("stdin %q", in)
			}
			send(t, c, encode(t, wire.TypeTunnelData, 0, &wire.TunnelData{ID: o.ID, Channel: wire.ChanStdout, Data: []byte("out\n")}))
			send(t, c, encode(t, wire.TypeTunnelData, 0, &wire.TunnelData{ID: o.ID, Channel: wire.ChanStderr, Data: []byte("err\n")}))
			send(t, c, encode(t, wire.TypeTunnelClose, 0, &wire.TunnelClose{ID: o.ID, Exited: true, ExitCode: 3}))
			err = <-done
			var ee utilexec.ExitError
			if !errors.As(err, &ee) || ee.ExitStatus() != 3 {
				t.Fatalf("exec ended with %v, want exit code 3", err)
			}
			if stdout.String() != "out\n" || stderr.String() != "err\n" {
				t.Fatalf("stdout %q stderr %q", stdout.String(), stderr.String())
			}

			// An agent that sends after the end of its stdout: the tunnel
			// ends with the reason, the agent is told, the link goes on.
			ex, _ = ec.new(cfg, execURL("web", "output=1&error=1"))
			go func() {
				done <- ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: io.Discard, Stderr: io.Discard})
			}()
			o = nextTunnelOpen(t, c)
			send(t, c, encode(t, wire.TypeTunnelData, 0, &wire.TunnelData{ID: o.ID, Channel: wire.ChanStdout, Data: []byte("last"), EOF: true}))
			send(t, c, encode(t, wire.TypeTunnelData, 0, &wire.TunnelData{ID: o.ID, Channel: wire.ChanStdout, Data: []byte("more")}))
			var cl wire.TunnelClose
			if err := nextStreamFrame(t, c, wire.TypeTunnelClose).DecodeBody(&cl); err != nil || cl.ID != o.ID || !strings.Contains(cl.Error, "after its end") {
				t.Fatalf("tunnel-close %+v %v", cl, err)
			}
			if err := <-done; err == nil || !strings.Contains(err.Error(), "after its end") {
				t.Fatalf("exec with data after the end ended with %v", err)
			}
			// Data for a tunnel that is not open is answered, not fatal.
			send(t, c, encode(t, wire.TypeTunnelData, 0, &wire.TunnelData{ID: 4242, Data: []byte("x")}))
			if err := nextStreamFrame(t, c, wire.TypeTunnelClose).DecodeBody(&cl); err != nil || cl.ID != 4242 {
				t.Fatalf("tunnel-close %+v %v", cl, err)
			}
			send(t, c, encode(t, wire.TypeHeartbeat, 0, nil))
			nextStreamFrame(t, c, wire.TypeHeartbeat)
		})
	}

	// Not the API server: refused before any tunnel.
	for _, path := range []string{"/exec/default/web/app?command=id&output=1", "/portForward/default/web", "/attach/default/web/app?output=1"} {
		resp, err := k.other.Post(k.url+path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s by another client: %d", path, resp.StatusCode)
		}
	}
	// A pod of a node not connected here: refused at once, saying so.
	resp, err := k.apiserver.Post(k.url+"/exec/default/away/app?command=id&output=1", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(b), "edge node is offline") {
		t.Fatalf("exec on an offline node: %d %q", resp.StatusCode, b)
	}
	// Bad parameters: no command, a NUL in it.
	for _, q := range []string{"output=1", "command=a%00b&output=1", "command=id"} {
		resp, err := k.apiserver.Post(k.url+"/exec/default/web/app?"+q, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("exec ?%s: %d, want 400", q, resp.StatusCode)
		}
	}
}
