package workloads

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"outpost.dev/test/stack"
)

// TestResourceUsageEndpoint: the relay's kubelet endpoint serves an edge
// node's /metrics/resource and /stats/summary as a kubelet does for
// metrics-server, with the figures the agent reads from the node and the
// pod's cgroups, to a service account the API server authorizes for
// nodes/metrics and nodes/stats, and to no one else.
func TestResourceUsageEndpoint(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 4*time.Minute)
	const ns = "wl-top"
	newNamespace(t, ctx, ns)
	st.Apply(t, ctx, `apiVersion: v1
kind: ServiceAccount
metadata: {name: scraper, namespace: `+ns+`}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: nobody, namespace: `+ns+`}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: wl-top-scraper}
rules:
- apiGroups: [""]
  resources: [nodes/metrics, nodes/stats]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: wl-top-scraper}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: wl-top-scraper}
subjects:
- {kind: ServiceAccount, name: scraper, namespace: `+ns+`}
---
apiVersion: v1
kind: Pod
metadata: {name: busy, namespace: `+ns+`}
spec:
  nodeSelector: {kubernetes.io/hostname: `+node+`}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: `+image1+`
    command: [sh, -c, "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 3600"]
`)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = st.CP.Kubectl(ctx, "delete", "clusterrole,clusterrolebinding", "wl-top-scraper", "--ignore-not-found")
	})
	waitRunning(t, ctx, ns, "busy", 2*time.Minute)
	scraper := strings.TrimSpace(st.Kubectl(t, ctx, "-n", ns, "create", "token", "scraper"))
	nobody := strings.TrimSpace(st.Kubectl(t, ctx, "-n", ns, "create", "token", "nobody"))

	// As metrics-server with --kubelet-insecure-tls: the serving
	// certificate is not what is tested here.
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	get := func(path, token string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", "https://"+relay.KubeletAddr+path, nil)
		if err != nil {
			return 0, "", err
		}
		req.Host = node
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, string(b), err
	}

	// The pod's container appears with CPU time and memory once the
	// agent can read its cgroup; RBAC may take a moment to apply.
	var values map[string]float64
	stack.WaitFor(t, ctx, 2*time.Minute, "the pod's figures in /metrics/resource", func() (bool, string) {
		status, body, err := get("/metrics/resource", scraper)
		if err != nil || status != 200 {
			return false, fmt.Sprintf("%d %v %.300s", status, err, body)
		}
		p := expfmt.NewTextParser(model.LegacyValidation)
		fams, err := p.TextToMetricFamilies(strings.NewReader(body))
		if err != nil {
			return false, "parse: " + err.Error()
		}
		values = map[string]float64{}
		for name, f := range fams {
			for _, m := range f.GetMetric() {
				key := name
				for _, l := range m.GetLabel() {
					key += "," + l.GetName() + "=" + l.GetValue()
				}
				values[key] = m.GetGauge().GetValue() + m.GetCounter().GetValue() + m.GetUntyped().GetValue()
			}
		}
		_, ok := values["container_cpu_usage_seconds_total,container=app,namespace="+ns+",pod=busy"]
		return ok, body
	})
	for _, k := range []string{
		"node_cpu_usage_seconds_total", "node_memory_working_set_bytes",
		"container_cpu_usage_seconds_total,container=app,namespace=" + ns + ",pod=busy",
		"container_memory_working_set_bytes,container=app,namespace=" + ns + ",pod=busy",
		"pod_memory_working_set_bytes,namespace=" + ns + ",pod=busy",
	} {
		if values[k] <= 0 {
			t.Errorf("%s = %v, want a positive figure", k, values[k])
		}
	}

	status, body, err := get("/stats/summary", scraper)
	if err != nil || status != 200 || !strings.Contains(body, `"nodeName":"`+node+`"`) || !strings.Contains(body, `"name":"busy"`) {
		t.Errorf("/stats/summary: %d %v %.500s", status, err, body)
	}
	// kubectl top, as on kubelet nodes: metrics-server scrapes the node's
	// own kubelet port on the relay; it needs two scrapes for a rate.
	stack.WaitFor(t, ctx, 2*time.Minute, "kubectl top node and pod", func() (bool, string) {
		top, err := st.CP.Kubectl(ctx, "top", "node", node, "--no-headers")
		if err != nil || !strings.HasPrefix(top, node+" ") {
			return false, fmt.Sprintf("top node: %v %s", err, top)
		}
		pod, err := st.CP.Kubectl(ctx, "top", "pod", "-n", ns, "busy", "--containers", "--no-headers")
		if err != nil || !strings.HasPrefix(pod, "busy ") || !strings.Contains(pod, " app ") || !strings.Contains(pod, "Mi") {
			return false, fmt.Sprintf("top pod: %v %s", err, pod)
		}
		t.Logf("kubectl top node: %s; kubectl top pod: %s", strings.TrimSpace(top), strings.TrimSpace(pod))
		return true, ""
	})

	// A token without nodes/metrics: 403. No credentials: 401.
	if status, body, err := get("/metrics/resource", nobody); err != nil || status != 403 {
		t.Errorf("token without nodes/metrics: %d %v %q", status, err, body)
	}
	if status, body, err := get("/metrics/resource", ""); err != nil || status != 401 {
		t.Errorf("no credentials: %d %v %q", status, err, body)
	}
}
