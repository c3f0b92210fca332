package relay_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	ktesting "k8s.io/client-go/testing"

	"outpost.dev/cloud/relay"
	"outpost.dev/wire"
)

// statsAt is when the fake agent read its figures.
var statsAt = time.Unix(1_800_000_000, 250_000_000)

func sampleUsage() *wire.StatsResponse {
	u := func(cpu, mem uint64) wire.Usage {
		return wire.Usage{At: statsAt.UnixNano(), CPUNanos: cpu, MemoryWorkingSet: mem}
	}
	return &wire.StatsResponse{Node: &wire.Usage{At: statsAt.UnixNano(), CPUNanos: 12_500_000_000, MemoryWorkingSet: 300 << 20},
		Containers: []wire.ContainerUsage{
			{Namespace: "default", Pod: "web", Container: "sidecar", StartTime: 1_799_999_000, Usage: u(500_000_000, 2<<20)},
			{Namespace: "default", Pod: "web", Container: "app", StartTime: 1_799_999_000, Usage: u(1_500_000_000, 8<<20),
				Logs: &wire.FsUsage{At: statsAt.UnixNano(), CapacityBytes: 8 << 30, AvailableBytes: 6 << 30, UsedBytes: 12345}},
		},
		NodeFs: &wire.FsUsage{At: statsAt.UnixNano(), CapacityBytes: 8 << 30, AvailableBytes: 6 << 30, UsedBytes: 2 << 30, Inodes: 1000, InodesFree: 700},
		Pods: []wire.PodUsage{{Namespace: "default", Pod: "web",
			Network: &wire.NetworkUsage{At: statsAt.UnixNano(), Interface: "eth0", RxBytes: 4096, RxErrors: 1, TxBytes: 2048}}},
	}
}

// TestResourceMetricsFormat: what /metrics/resource renders parses as
// Prometheus text with the names, labels, values and timestamps
// metrics-server reads.
func TestResourceMetricsFormat(t *testing.T) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(relay.ResourceMetrics(sampleUsage()))))
	if err != nil {
		t.Fatal(err)
	}
	type key struct{ name, labels string }
	got := map[key]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue() + m.GetUntyped().GetValue()
			got[key{name, strings.Join(ls, ",")}] = v
			if name != "resource_scrape_error" && m.GetTimestampMs() != statsAt.UnixMilli() {
				t.Errorf("%s{%s}: timestamp %d, want %d", name, ls, m.GetTimestampMs(), statsAt.UnixMilli())
			}
		}
	}
	for k, want := range map[key]float64{
		{"node_cpu_usage_seconds_total", ""}:                                                 12.5,
		{"node_memory_working_set_bytes", ""}:                                                300 << 20,
		{"container_cpu_usage_seconds_total", "container=app,namespace=default,pod=web"}:     1.5,
		{"container_memory_working_set_bytes", "container=app,namespace=default,pod=web"}:    8 << 20,
		{"container_cpu_usage_seconds_total", "container=sidecar,namespace=default,pod=web"}: 0.5,
		{"container_start_time_seconds", "container=sidecar,namespace=default,pod=web"}:      1_799_999_000,
		{"pod_cpu_usage_seconds_total", "namespace=default,pod=web"}:                         2,
		{"pod_memory_working_set_bytes", "namespace=default,pod=web"}:                        10 << 20,
		{"resource_scrape_error", ""}:                                                        0,
	} {
		if v, ok := got[k]; !ok || v != want {
			t.Errorf("%s{%s} = %v (present %v), want %v", k.name, k.labels, v, ok, want)
		}
	}
	if f := fams["container_cpu_usage_seconds_total"]; f.GetType().String() != "COUNTER" {
		t.Errorf("container_cpu_usage_seconds_total is a %s", f.GetType())
	}
}

// TestKubeletResourceUsage: /metrics/resource and /stats/summary ask the
// node's agent, with the kubelet's webhook authentication (client
// certificate or bearer token) and authorization (nodes/metrics,
// nodes/stats) checked with the API server.
func TestKubeletResourceUsage(t *testing.T) {
	var reviews, sars atomic.Int32
	// The reactors go in before the relay starts its informers.
	tr := newTestRelay(t, func(c *relay.Config) {
		c.KubeletAddress, c.KubeletPort = "127.0.0.1", 10250
		authReactors(c.Client.(*fake.Clientset), &reviews, &sars)
	})
	k := startKubelet(t, tr)
	c := tr.hello(t, "gw-top")

	get := func(cl *http.Client, host, path, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", k.url+path, nil)
		req.Host = host
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// The agent answers each stats request with the sample.
	answered := make(chan struct{}, 8)
	go func() {
		for {
			f, err := recv(t, c)
			if err != nil {
				return
			}
			if f.Type != wire.TypeStatsRequest {
				continue
			}
			var req wire.StatsRequest
			if err := f.DecodeBody(&req); err != nil {
				t.Error(err)
				return
			}
			r := sampleUsage()
			if req.Metrics {
				r = &wire.StatsResponse{Metrics: []byte("# TYPE outpost_link_connected gauge\noutpost_link_connected 1\n")}
			}
			r.ID = req.ID
			b, _ := wire.Encode(wire.TypeStatsResponse, 0, r)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = c.Write(ctx, 2, b)
			cancel()
			answered <- struct{}{}
		}
	}()
	tokenClient := tr.httpClient()

	// A bearer token allowed nodes/metrics: the figures.
	status, body := get(tokenClient, "gw-top", "/metrics/resource", "good-token")
	if status != 200 || !strings.Contains(body, `container_cpu_usage_seconds_total{container="app",namespace="default",pod="web"} 1.5 1800000000250`) {
		t.Fatalf("metrics: %d %q", status, body)
	}
	<-answered
	// The summary, with the same token (the reviews are cached).
	status, body = get(tokenClient, "gw-top:10250", "/stats/summary", "good-token")
	if status != 200 {
		t.Fatalf("summary: %d %q", status, body)
	}
	<-answered
	type fs struct {
		CapacityBytes, AvailableBytes, UsedBytes uint64
		Inodes, InodesFree, InodesUsed           *uint64
	}
	type iface struct {
		Name                                 string
		RxBytes, RxErrors, TxBytes, TxErrors uint64
	}
	var sum struct {
		Node struct {
			NodeName string `json:"nodeName"`
			CPU      struct {
				UsageCoreNanoSeconds uint64 `json:"usageCoreNanoSeconds"`
			} `json:"cpu"`
			Fs *fs `json:"fs"`
		} `json:"node"`
		Pods []struct {
			PodRef     struct{ Name, Namespace string } `json:"podRef"`
			Containers []struct {
				Name   string `json:"name"`
				Memory struct {
					WorkingSetBytes uint64 `json:"workingSetBytes"`
				} `json:"memory"`
				Logs *fs `json:"logs"`
			} `json:"containers"`
			Network *struct {
				iface
				Interfaces []iface
			} `json:"network"`
		} `json:"pods"`
	}
	if err := json.Unmarshal([]byte(body), &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Node.NodeName != "gw-top" || sum.Node.CPU.UsageCoreNanoSeconds != 12_500_000_000 || len(sum.Pods) != 1 ||
		sum.Pods[0].PodRef.Name != "web" || len(sum.Pods[0].Containers) != 2 || sum.Pods[0].Containers[0].Memory.WorkingSetBytes != 8<<20 {
		t.Fatalf("summary %s", body)
	}
	// What a gateway knows besides: the node's file system, the
	// containers' logs and the pods' network, in the kubelet's fields.
	if f := sum.Node.Fs; f == nil || f.CapacityBytes != 8<<30 || f.AvailableBytes != 6<<30 || f.UsedBytes != 2<<30 ||
		f.Inodes == nil || *f.Inodes != 1000 || *f.InodesFree != 700 || *f.InodesUsed != 300 {
		t.Errorf("node fs in %s", body)
	}
	if l := sum.Pods[0].Containers[0].Logs; l == nil || l.UsedBytes != 12345 || l.CapacityBytes != 8<<30 || l.Inodes != nil || sum.Pods[0].Containers[1].Logs != nil {
		t.Errorf("container logs in %s", body)
	}
	want := iface{Name: "eth0", RxBytes: 4096, RxErrors: 1, TxBytes: 2048}
	if n := sum.Pods[0].Network; n == nil || n.iface != want || len(n.Interfaces) != 1 || n.Interfaces[0] != want {
		t.Errorf("pod network in %s", body)
	}
	if n := reviews.Load(); n != 1 {
		t.Errorf("%d token reviews for one token, want 1 (cached)", n)
	}
	// A client certificate from the cluster CA whose user may read
	// metrics: allowed without a token.
	certClient := tr.httpClient(clientCert(t, k.cluster, "metrics-client", "metrics"))
	if status, body := get(certClient, "gw-top", "/metrics/resource", ""); status != 200 {
		t.Fatalf("client certificate: %d %q", status, body)
	}
	<-answered

	// The node's own /metrics are its agent's, asked for on demand.
	if status, body := get(certClient, "gw-top", "/metrics", ""); status != 200 || !strings.Contains(body, "\noutpost_link_connected 1\n") {
		t.Fatalf("node metrics: %d %q", status, body)
	}
	<-answered

	// No credentials: 401. A bad token: 401. A token without
	// nodes/metrics: 403. Another node's metrics: 403. None asked the
	// agent. (Each request above took its answer off answered, the last
	// one's once the agent had sent it, so nothing is still on its way.)
	before := len(answered)
	for _, tc := range []struct {
		cl          *http.Client
		host, token string
		status      int
		want        string
	}{
		{tokenClient, "gw-top", "", 401, "Unauthorized"},
		{tokenClient, "gw-top", "forged", 401, "token not valid"},
		{tokenClient, "gw-top", "weak-token", 403, "subresource=metrics"},
		{tokenClient, "gw-other", "good-token", 403, "Forbidden"},
		{k.other, "gw-top", "", 403, "Forbidden"},
		{tokenClient, "127.0.0.1", "good-token", 400, "name the node"},
	} {
		if status, body := get(tc.cl, tc.host, "/metrics/resource", tc.token); status != tc.status || !strings.Contains(body, tc.want) {
			t.Errorf("host %s token %q: %d %q, want %d %q", tc.host, tc.token, status, body, tc.status, tc.want)
		}
	}
	// The other kubelet paths still take the API server's certificate
	// only: a good token is not enough.
	if status, _ := get(tokenClient, "gw-top", "/containerLogs/default/web/app", "good-token"); status != 401 {
		t.Errorf("logs with a token: %d, want 401", status)
	}
	if len(answered) != before {
		t.Error("a refused request reached the agent")
	}

	// An offline node: 503 at once.
	start := time.Now()
	if status, body := get(certClient, "gw-gone", "/metrics/resource", ""); status != 503 || !strings.Contains(body, "not connected") {
		t.Errorf("offline node: %d %q", status, body)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("offline node answered after %s", d)
	}
}

// authReactors answers token and access reviews as the API server
// would: one good token; metrics-server may read nodes/metrics and
// nodes/stats of any node but gw-other, "someone" nothing.
func authReactors(client *fake.Clientset, reviews, sars *atomic.Int32) {
	client.PrependReactor("create", "tokenreviews", func(a ktesting.Action) (bool, runtime.Object, error) {
		reviews.Add(1)
		r := a.(ktesting.CreateAction).GetObject().(*authnv1.TokenReview).DeepCopy()
		switch r.Spec.Token {
		case "good-token":
			r.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: "system:serviceaccount:kube-system:metrics-server", Groups: []string{"system:serviceaccounts"}}}
		case "weak-token":
			r.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: "system:serviceaccount:default:nobody"}}
		default:
			r.Status = authnv1.TokenReviewStatus{Error: "token not valid"}
		}
		return true, r, nil
	})
	client.PrependReactor("create", "subjectaccessreviews", func(a ktesting.Action) (bool, runtime.Object, error) {
		sars.Add(1)
		r := a.(ktesting.CreateAction).GetObject().(*authzv1.SubjectAccessReview).DeepCopy()
		ra := r.Spec.ResourceAttributes
		okUser := r.Spec.User == "system:serviceaccount:kube-system:metrics-server" || r.Spec.User == "metrics-client"
		r.Status.Allowed = okUser && ra.Verb == "get" && ra.Resource == "nodes" && (ra.Subresource == "metrics" || ra.Subresource == "stats") && ra.Name != "gw-other"
		if !r.Status.Allowed {
			r.Status.Reason = "no RBAC policy matched"
		}
		return true, r, nil
	})
}

// TestKubeletNodeListener: with a kubelet listener per node, the node's
// Node carries its port, and a request there (no host naming the node,
// as metrics-server sends) is that node's.
func TestKubeletNodeListener(t *testing.T) {
	cluster := clusterCA(t)
	var reviews, sars atomic.Int32
	var ports []int
	tr := newTestRelay(t, func(c *relay.Config) {
		c.KubeletAddress, c.KubeletPort = "127.0.0.1", 10250
		authReactors(c.Client.(*fake.Clientset), &reviews, &sars)
		serving, err := c.CA.ServingCert([]string{"127.0.0.1"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c.KubeletNodeListen = func() (net.Listener, error) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
			return tls.NewListener(ln, relay.KubeletTLSConfig(serving, cluster.Pool())), nil
		}
	})
	c := tr.hello(t, "gw-own")
	waitFor(t, "node written", func() bool { return getNode(tr, "gw-own") != nil })
	n := getNode(tr, "gw-own")
	if len(ports) != 1 || n.Status.DaemonEndpoints.KubeletEndpoint.Port != int32(ports[0]) || n.Status.Addresses[0].Address != "127.0.0.1" {
		t.Fatalf("listeners on %v; node endpoint %+v addresses %v", ports, n.Status.DaemonEndpoints, n.Status.Addresses)
	}
	go func() {
		f := nextStreamFrame(t, c, wire.TypeStatsRequest)
		var req wire.StatsRequest
		if err := f.DecodeBody(&req); err != nil {
			t.Error(err)
			return
		}
		r := sampleUsage()
		r.ID = req.ID
		send(t, c, encode(t, wire.TypeStatsResponse, 0, r))
	}()
	cl := tr.httpClient(clientCert(t, cluster, "metrics-client", "metrics"))
	resp, err := cl.Get("https://127.0.0.1:" + strconv.Itoa(ports[0]) + "/metrics/resource")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "node_cpu_usage_seconds_total 12.5") {
		t.Fatalf("%d %q", resp.StatusCode, b)
	}
	// The listener ends with the connection.
	c.Close(websocket.StatusNormalClosure, "bye")
	waitFor(t, "the node's listener closed", func() bool {
		conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(ports[0]), time.Second)
		if err == nil {
			conn.Close()
		}
		return err != nil
	})
}
