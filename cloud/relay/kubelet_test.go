package relay_test

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	ktesting "k8s.io/client-go/testing"

	"outpost.dev/cloud/pki"
	"outpost.dev/cloud/relay"
	"outpost.dev/wire"
)

func createPod(t testing.TB, tr *testRelay, name, node string) {
	t.Helper()
	_, err := tr.client.CoreV1().Pods("default").Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name), ResourceVersion: "1"},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "busybox"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// TestPodStatusAckedAfterWrite: the relay acks a pod status only after the
// API write, and never past a report still being written.
func TestPodStatusAckedAfterWrite(t *testing.T) {
	// Status writes fail until released. (Blocking in the reactor instead
	// would hold the fake clientset's lock and stall every other call.)
	// The reactor goes in before the relay's informers start.
	var blocked atomic.Bool
	blocked.Store(true)
	tr := newTestRelay(t, func(c *relay.Config) {
		c.Client.(*fake.Clientset).PrependReactor("update", "pods", func(a ktesting.Action) (bool, runtime.Object, error) {
			if a.GetSubresource() == "status" && blocked.Load() {
				return true, nil, apierrors.NewServiceUnavailable("test: status writes held")
			}
			return false, nil, nil
		})
	})
	createPod(t, tr, "web", "gw-st")
	c := tr.hello(t, "gw-st")
	rep := &wire.PodStatus{UID: "uid-web", Namespace: "default", Name: "web", Phase: "Running", PodIP: "10.0.0.9",
		Containers: []wire.ContainerStatus{{Name: "app", Image: "busybox", Ready: true, Started: true,
			ContainerID: "containerd://abc", State: wire.ContainerState{Kind: wire.StateRunning, StartedAt: 1}}}}
	send(t, c, encode(t, wire.TypePodStatus, 1, rep))
	i := info()
	send(t, c, encode(t, wire.TypeNodeStatus, 2, &wire.NodeStatus{Node: i}))
	// The node status is written at once, but 1 is not: no ack yet.
	waitFor(t, "node status written", func() bool { n := getNode(tr, "gw-st"); return n != nil })
	// One reader: a read whose context ends closes the connection.
	acks := make(chan uint64, 8)
	go func() {
		for {
			_, b, err := c.Read(context.Background())
			if err != nil {
				close(acks)
				return
			}
			if f, _ := wire.Decode(b); f.Type == wire.TypeAck {
				acks <- f.Ack
			}
		}
	}()
	select {
	case a := <-acks:
		t.Fatalf("ack %d while pod status 1 is not written", a)
	case <-time.After(500 * time.Millisecond):
	}
	blocked.Store(false)
	nextAck := func() uint64 {
		select {
		case a := <-acks:
			return a
		case <-time.After(10 * time.Second):
			t.Fatal("no ack")
		}
		return 0
	}
	// 1 alone may be acked first, if the node status is still being written.
	a := nextAck()
	if a == 1 {
		a = nextAck()
	}
	if a != 2 {
		t.Fatalf("ack %d, want 2", a)
	}
	p, _ := tr.client.CoreV1().Pods("default").Get(context.Background(), "web", metav1.GetOptions{})
	if p.Status.Phase != corev1.PodRunning || p.Status.ContainerStatuses[0].ContainerID != "containerd://abc" {
		t.Fatalf("status %+v", p.Status)
	}
	// Another node's pod: acked, not written.
	createPod(t, tr, "theirs", "gw-other")
	send(t, c, encode(t, wire.TypePodStatus, 3, &wire.PodStatus{UID: "uid-theirs", Namespace: "default", Name: "theirs", Phase: "Failed"}))
	if a := nextAck(); a != 3 {
		t.Fatalf("ack %d, want 3", a)
	}
	p, _ = tr.client.CoreV1().Pods("default").Get(context.Background(), "theirs", metav1.GetOptions{})
	if p.Status.Phase != "" {
		t.Fatalf("another node's pod written: %s", p.Status.Phase)
	}
}

type kubeletAPI struct {
	url       string
	apiserver *http.Client
	other     *http.Client
	// The API server's and another client's certificates, and the
	// relay CA's, for clients that build their own transport.
	apiserverCert, otherCert tls.Certificate
	caPEM                    []byte
	// cluster stands in for the cluster CA.
	cluster *pki.CA
}

// clusterCA stands in for the cluster CA, which signs the API server's
// and other clients' certificates for the kubelet API.
func clusterCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.Generate(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func startKubelet(t *testing.T, tr *testRelay) *kubeletAPI {
	t.Helper()
	cluster := clusterCA(t)
	serving, err := tr.ca.ServingCert([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(tr.srv.KubeletHandler())
	hs.TLS = relay.KubeletTLSConfig(serving, cluster.Pool())
	hs.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshake without a certificate below
	hs.StartTLS()
	t.Cleanup(hs.Close)
	apiCert := clientCert(t, cluster, relay.DefaultKubeletClientName, "kubeadm:cluster-admins")
	otherCert := clientCert(t, cluster, "someone", "developers")
	return &kubeletAPI{
		url: hs.URL, apiserver: tr.httpClient(apiCert), other: tr.httpClient(otherCert),
		apiserverCert: apiCert, otherCert: otherCert, caPEM: tr.ca.CertPEM, cluster: cluster,
	}
}

// nextStreamFrame reads until a frame of type typ, skipping others.
func nextStreamFrame(t *testing.T, c *websocket.Conn, typ wire.Type) wire.Frame {
	t.Helper()
	for {
		f, err := recv(t, c)
		if err != nil {
			t.Fatalf("waiting for %s: %v", typ, err)
		}
		if f.Type == typ {
			return f
		}
	}
}

func TestKubeletContainerLogs(t *testing.T) {
	tr := newTestRelay(t, func(c *relay.Config) { c.KubeletAddress, c.KubeletPort = "127.0.0.1", 10250 })
	createPod(t, tr, "web", "gw-logs")
	createPod(t, tr, "away", "gw-offline")
	k := startKubelet(t, tr)
	c := tr.hello(t, "gw-logs")
	// The relay finds a pod's node in its connections' pod watches: the
	// sync that carries the pod says the watch has it.
	for {
		f, err := recvAny(t, c)
		if err != nil {
			t.Fatalf("waiting for the pod sync: %v", err)
		}
		if f.Type == wire.TypeSync {
			break
		}
	}
	// The Node points the API server at this replica.
	waitFor(t, "node written", func() bool { return getNode(tr, "gw-logs") != nil })
	n := getNode(tr, "gw-logs")
	if a := n.Status.Addresses[0]; a.Type != corev1.NodeInternalIP || a.Address != "127.0.0.1" || n.Status.DaemonEndpoints.KubeletEndpoint.Port != 10250 {
		t.Fatalf("node addresses %v, endpoints %+v", n.Status.Addresses, n.Status.DaemonEndpoints)
	}

	get := func(cl *http.Client, path string) (chan *http.Response, context.CancelFunc) {
		ctx, cancel := context.WithCancel(context.Background())
		ch := make(chan *http.Response, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", k.url+path, nil)
			resp, err := cl.Do(req)
			if err != nil {
				ch <- &http.Response{StatusCode: -1, Status: err.Error(), Body: io.NopCloser(strings.NewReader(""))}
				return
			}
			ch <- resp
		}()
		return ch, cancel
	}
	body := func(r *http.Response) string {
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		return string(b)
	}

	// A log with its parameters, in two chunks.
	ch, cancel := get(k.apiserver, "/containerLogs/default/web/app?tailLines=2&follow=true&timestamps=true&limitBytes=100&sinceSeconds=60")
	defer cancel()
	f := nextStreamFrame(t, c, wire.TypeStreamOpen)
	var o wire.StreamOpen
	if err := f.DecodeBody(&o); err != nil {
		t.Fatal(err)
	}
	if o.Namespace != "default" || o.Pod != "web" || o.Container != "app" || o.TailLines != 2 || !o.Follow || !o.Timestamps ||
		o.LimitBytes != 100 || o.SinceSeconds != 60 || o.Previous {
		t.Fatalf("stream-open %+v", o)
	}
	send(t, c, encode(t, wire.TypeStreamData, 0, &wire.StreamData{ID: o.ID, Data: []byte("hello\n")}))
	send(t, c, encode(t, wire.TypeStreamData, 0, &wire.StreamData{ID: o.ID, Data: []byte("world\n"), EOF: true}))
	resp := <-ch
	if resp.StatusCode != 200 {
		t.Fatalf("status %d %s", resp.StatusCode, resp.Status)
	}
	if b := body(resp); b != "hello\nworld\n" {
		t.Fatalf("body %q", b)
	}

	// The agent knows no such container: 400 with its words.
	ch, cancel2 := get(k.apiserver, "/containerLogs/default/web/app?previous=true")
	defer cancel2()
	f = nextStreamFrame(t, c, wire.TypeStreamOpen)
	_ = f.DecodeBody(&o)
	if !o.Previous || o.TailLines != -1 {
		t.Fatalf("stream-open %+v", o)
	}
	send(t, c, encode(t, wire.TypeStreamData, 0, &wire.StreamData{ID: o.ID, EOF: true, Error: "container app has no previous instance"}))
	resp = <-ch
	if b := body(resp); resp.StatusCode != 400 || !strings.Contains(b, "no previous instance") {
		t.Fatalf("%d %q", resp.StatusCode, b)
	}

	// kubectl goes away: the agent hears a cancel.
	ch, cancel3 := get(k.apiserver, "/containerLogs/default/web/app?follow=true")
	f = nextStreamFrame(t, c, wire.TypeStreamOpen)
	_ = f.DecodeBody(&o)
	// The agent's empty first frame: headers reach the client before data.
	send(t, c, encode(t, wire.TypeStreamData, 0, &wire.StreamData{ID: o.ID}))
	select {
	case resp = <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no response headers after the agent accepted the stream")
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	send(t, c, encode(t, wire.TypeStreamData, 0, &wire.StreamData{ID: o.ID, Data: []byte("tick\n")}))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "tick\n" {
		t.Fatalf("read %q %v", buf, err)
	}
	cancel3()
	resp.Body.Close()
	f = nextStreamFrame(t, c, wire.TypeStreamAck)
	var a wire.StreamAck
	if err := f.DecodeBody(&a); err != nil || a.ID != o.ID || !a.Cancel {
		t.Fatalf("stream-ack %+v %v", a, err)
	}

	// Not the API server: refused. A pod of a node not connected here:
	// said so.
	ch, _ = get(k.other, "/containerLogs/default/web/app")
	if resp := <-ch; resp.StatusCode != http.StatusForbidden {
		t.Fatalf("other client: %d", resp.StatusCode)
	}
	ch, _ = get(k.apiserver, "/containerLogs/default/away/app")
	resp = <-ch
	if b := body(resp); resp.StatusCode != 500 || !strings.Contains(b, `pod default/away is not bound to an edge node connected to this relay replica`) {
		t.Fatalf("offline node: %d %q", resp.StatusCode, b)
	}
	ch, _ = get(k.apiserver, "/containerLogs/default/web/app?stream=Stdout")
	if resp := <-ch; resp.StatusCode != 400 {
		t.Fatalf("stream=Stdout: %d", resp.StatusCode)
	}
	// No client certificate at all: 401.
	nocert := tr.httpClient()
	if resp, err := nocert.Get(k.url + "/containerLogs/default/web/app"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no client certificate: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// The agent drops the connection mid-stream: the request ends.
	ch, cancel4 := get(k.apiserver, "/containerLogs/default/web/app?follow=true")
	defer cancel4()
	nextStreamFrame(t, c, wire.TypeStreamOpen)
	c.Close(websocket.StatusNormalClosure, "bye")
	select {
	case resp := <-ch:
		if b := body(resp); resp.StatusCode != 500 || !strings.Contains(b, "disconnected") {
			t.Fatalf("after disconnect: %d %q", resp.StatusCode, b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("request still open after the agent disconnected")
	}
}
