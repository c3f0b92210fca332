package relay

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"outpost.dev/wire"
)

// Resource usage for kubectl top: the kubelet's /metrics/resource (the
// Prometheus text metrics-server scrapes) and /stats/summary, answered by
// asking the node's agent (wire.StatsRequest) when they are called. A
// node not connected to this replica answers 503 at once; an agent that
// does not answer within statsTimeout, 503 then.
//
// On a node's own kubelet listener (Config.KubeletNodeListen) requests
// are that node's. On the listener every node connected to the replica
// shares, the request names its node by host: the TLS server name (SNI),
// else the Host header, must be the node's name.

const (
	// statsTimeout bounds the wait for the agent's answer; metrics-server
	// gives a kubelet 10 s by default.
	statsTimeout = 5 * time.Second
	// maxStatsWaiting bounds the stats requests of one node waiting for
	// its agent on a replica.
	maxStatsWaiting = 4
)

func (s *Server) registerResource(mux *http.ServeMux) {
	mux.HandleFunc("GET /metrics/resource", s.serveMetricsResource)
	mux.HandleFunc("GET /stats/summary", s.serveStatsSummary)
	mux.HandleFunc("GET /metrics", s.serveNodeMetrics)
}

// serveNodeMetrics is the node's /metrics: a kubelet serves its own
// figures there; an edge node's are its agent's (link, outbox, pods,
// Go runtime), asked for on demand like the usage figures.
func (s *Server) serveNodeMetrics(w http.ResponseWriter, r *http.Request) {
	node, err := requestNode(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	resp, status, reason := s.statsOf(r, node, wire.StatsRequest{Metrics: true})
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	if status != 0 {
		http.Error(w, reason, status)
		return
	}
	_, _ = w.Write(resp.Metrics)
}

// requestNode is the node a kubelet request is for (see above): its
// listener's, or the one it names by host. It is not checked against the
// connections; statsOf does that.
func requestNode(r *http.Request) (string, error) {
	if n, ok := r.Context().Value(nodeKey{}).(string); ok {
		return n, nil
	}
	host := ""
	if r.TLS != nil {
		host = r.TLS.ServerName
	}
	if host == "" {
		host = r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
	}
	if err := wire.CheckSubdomain("node", host); err != nil || net.ParseIP(host) != nil {
		return "", fmt.Errorf("this relay replica serves the kubelet API of every edge node connected to it at one address: name the node in the request's host (TLS server name or Host header), not %q", host)
	}
	return host, nil
}

// statsWaiters are the stats requests of one connection waiting for
// their answers, by ID.
type statsWaiters struct {
	mu   sync.Mutex
	next uint32
	m    map[uint32]chan *wire.StatsResponse
}

func (sw *statsWaiters) add() (uint32, chan *wire.StatsResponse, bool) {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.m == nil {
		sw.m = map[uint32]chan *wire.StatsResponse{}
	}
	if len(sw.m) >= maxStatsWaiting {
		return 0, nil, false
	}
	for {
		sw.next++
		if sw.next != 0 && sw.m[sw.next] == nil {
			break
		}
	}
	ch := make(chan *wire.StatsResponse, 1)
	sw.m[sw.next] = ch
	return sw.next, ch, true
}

func (sw *statsWaiters) remove(id uint32) {
	sw.mu.Lock()
	delete(sw.m, id)
	sw.mu.Unlock()
}

// deliver hands r to its waiter; an answer nobody waits for any more
// (or a second one) is dropped.
func (sw *statsWaiters) deliver(r *wire.StatsResponse) {
	sw.mu.Lock()
	ch := sw.m[r.ID]
	delete(sw.m, r.ID)
	sw.mu.Unlock()
	if ch != nil {
		ch <- r
	}
}

// statsOf asks the agent of node for its usage. On failure it returns an
// HTTP status and a reason.
func (s *Server) statsOf(r *http.Request, node string, req wire.StatsRequest) (*wire.StatsResponse, int, string) {
	c := s.connOf(node)
	if c == nil {
		return nil, http.StatusServiceUnavailable, fmt.Sprintf("edge node %q is not connected to this relay replica (%s): it is offline, or connected to another replica", node, s.cfg.KubeletAddress)
	}
	id, ch, ok := c.stats.add()
	if !ok {
		return nil, http.StatusServiceUnavailable, fmt.Sprintf("edge node %q: %d stats requests are already waiting for it; try again later", node, maxStatsWaiting)
	}
	defer c.stats.remove(id)
	req.ID = id
	if !c.send(wire.TypeStatsRequest, &req) {
		return nil, http.StatusServiceUnavailable, fmt.Sprintf("edge node %q: its connection failed", node)
	}
	t := time.NewTimer(statsTimeout)
	defer t.Stop()
	select {
	case resp := <-ch:
		if resp.Error != "" {
			return nil, http.StatusServiceUnavailable, fmt.Sprintf("edge node %q: %s", node, resp.Error)
		}
		if req.Metrics && resp.Metrics == nil || !req.Metrics && resp.Node == nil {
			return nil, http.StatusBadGateway, fmt.Sprintf("edge node %q answered with something other than what was asked", node)
		}
		return resp, 0, ""
	case <-t.C:
		return nil, http.StatusServiceUnavailable, fmt.Sprintf("edge node %q did not answer within %s", node, statsTimeout)
	case <-c.streamsDone:
		return nil, http.StatusServiceUnavailable, fmt.Sprintf("edge node %q disconnected", node)
	case <-r.Context().Done():
		return nil, http.StatusServiceUnavailable, "request cancelled"
	}
}

func (s *Server) serveMetricsResource(w http.ResponseWriter, r *http.Request) {
	node, err := requestNode(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	resp, status, reason := s.statsOf(r, node, wire.StatsRequest{})
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	if status != 0 {
		// The kubelet answers a failed collection with scrape_error 1;
		// metrics-server counts a non-200 as a failed scrape, which is
		// what it is here.
		http.Error(w, reason, status)
		return
	}
	_, _ = w.Write(ResourceMetrics(resp))
}

// ResourceMetrics renders a stats response as the kubelet's
// /metrics/resource: the Prometheus text format with the metric names
// and labels metrics-server reads, each sample stamped with the time the
// agent read it (milliseconds).
func ResourceMetrics(resp *wire.StatsResponse) []byte {
	var b strings.Builder
	head := func(name, help, typ string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	ms := func(u wire.Usage) string { return strconv.FormatInt(u.At/1e6, 10) }
	secs := func(ns uint64) string { return strconv.FormatFloat(float64(ns)/1e9, 'g', -1, 64) }
	cs := sortedContainers(resp.Containers)
	clabels := func(c wire.ContainerUsage) string {
		return fmt.Sprintf(`{container=%q,namespace=%q,pod=%q}`, c.Container, c.Namespace, c.Pod)
	}
	head("container_cpu_usage_seconds_total", "[STABLE] Cumulative cpu time consumed by the container in core-seconds", "counter")
	for _, c := range cs {
		fmt.Fprintf(&b, "container_cpu_usage_seconds_total%s %s %s\n", clabels(c), secs(c.Usage.CPUNanos), ms(c.Usage))
	}
	head("container_memory_working_set_bytes", "[STABLE] Current working set of the container in bytes", "gauge")
	for _, c := range cs {
		fmt.Fprintf(&b, "container_memory_working_set_bytes%s %d %s\n", clabels(c), c.Usage.MemoryWorkingSet, ms(c.Usage))
	}
	head("container_start_time_seconds", "[STABLE] Start time of the container since unix epoch in seconds", "gauge")
	for _, c := range cs {
		if c.StartTime > 0 {
			fmt.Fprintf(&b, "container_start_time_seconds%s %d %s\n", clabels(c), c.StartTime, ms(c.Usage))
		}
	}
	if n := resp.Node; n != nil {
		head("node_cpu_usage_seconds_total", "[STABLE] Cumulative cpu time consumed by the node in core-seconds", "counter")
		fmt.Fprintf(&b, "node_cpu_usage_seconds_total %s %s\n", secs(n.CPUNanos), ms(*n))
		head("node_memory_working_set_bytes", "[STABLE] Current working set of the node in bytes", "gauge")
		fmt.Fprintf(&b, "node_memory_working_set_bytes %d %s\n", n.MemoryWorkingSet, ms(*n))
	}
	pods := podTotals(cs)
	head("pod_cpu_usage_seconds_total", "[STABLE] Cumulative cpu time consumed by the pod in core-seconds", "counter")
	for _, p := range pods {
		fmt.Fprintf(&b, "pod_cpu_usage_seconds_total{namespace=%q,pod=%q} %s %s\n", p.Namespace, p.Pod, secs(p.Usage.CPUNanos), ms(p.Usage))
	}
	head("pod_memory_working_set_bytes", "[STABLE] Current working set of the pod in bytes", "gauge")
	for _, p := range pods {
		fmt.Fprintf(&b, "pod_memory_working_set_bytes{namespace=%q,pod=%q} %d %s\n", p.Namespace, p.Pod, p.Usage.MemoryWorkingSet, ms(p.Usage))
	}
	head("resource_scrape_error", "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise", "gauge")
	b.WriteString("resource_scrape_error 0\n")
	return []byte(b.String())
}

func sortedContainers(in []wire.ContainerUsage) []wire.ContainerUsage {
	cs := append([]wire.ContainerUsage(nil), in...)
	sort.Slice(cs, func(i, j int) bool {
		a, b := cs[i], cs[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Pod != b.Pod {
			return a.Pod < b.Pod
		}
		return a.Container < b.Container
	})
	return cs
}

// podTotals sums sorted containers by pod; a pod's time is its latest
// container reading.
func podTotals(cs []wire.ContainerUsage) []wire.ContainerUsage {
	var out []wire.ContainerUsage
	for _, c := range cs {
		if n := len(out); n > 0 && out[n-1].Namespace == c.Namespace && out[n-1].Pod == c.Pod {
			p := &out[n-1]
			p.Usage.CPUNanos += c.Usage.CPUNanos
			p.Usage.MemoryWorkingSet += c.Usage.MemoryWorkingSet
			p.Usage.At = max(p.Usage.At, c.Usage.At)
			continue
		}
		out = append(out, wire.ContainerUsage{Namespace: c.Namespace, Pod: c.Pod, Usage: c.Usage})
	}
	return out
}

// The parts of the kubelet's stats summary (k8s.io/kubelet/pkg/apis/
// stats/v1alpha1) the relay knows.
type (
	summary struct {
		Node summaryNode  `json:"node"`
		Pods []summaryPod `json:"pods"`
	}
	summaryNode struct {
		NodeName string      `json:"nodeName"`
		CPU      *summaryCPU `json:"cpu,omitempty"`
		Memory   *summaryMem `json:"memory,omitempty"`
		Fs       *summaryFs  `json:"fs,omitempty"`
	}
	summaryPod struct {
		PodRef     summaryRef         `json:"podRef"`
		Containers []summaryContainer `json:"containers"`
		CPU        *summaryCPU        `json:"cpu,omitempty"`
		Memory     *summaryMem        `json:"memory,omitempty"`
		Network    *summaryNet        `json:"network,omitempty"`
	}
	summaryRef struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	}
	summaryContainer struct {
		Name      string      `json:"name"`
		StartTime *time.Time  `json:"startTime,omitempty"`
		CPU       *summaryCPU `json:"cpu,omitempty"`
		Memory    *summaryMem `json:"memory,omitempty"`
		Logs      *summaryFs  `json:"logs,omitempty"`
	}
	summaryCPU struct {
		Time                 time.Time `json:"time"`
		UsageCoreNanoSeconds uint64    `json:"usageCoreNanoSeconds"`
	}
	summaryMem struct {
		Time            time.Time `json:"time"`
		WorkingSetBytes uint64    `json:"workingSetBytes"`
	}
	summaryFs struct {
		Time           time.Time `json:"time"`
		AvailableBytes uint64    `json:"availableBytes"`
		CapacityBytes  uint64    `json:"capacityBytes"`
		UsedBytes      uint64    `json:"usedBytes"`
		InodesFree     *uint64   `json:"inodesFree,omitempty"`
		Inodes         *uint64   `json:"inodes,omitempty"`
		InodesUsed     *uint64   `json:"inodesUsed,omitempty"`
	}
	summaryIface struct {
		Name     string `json:"name"`
		RxBytes  uint64 `json:"rxBytes"`
		RxErrors uint64 `json:"rxErrors"`
		TxBytes  uint64 `json:"txBytes"`
		TxErrors uint64 `json:"txErrors"`
	}
	summaryNet struct {
		Time time.Time `json:"time"`
		summaryIface
		Interfaces []summaryIface `json:"interfaces"`
	}
)

// fsPart is f as the summary's FsStats; inodes only where statfs gave
// them.
func fsPart(f *wire.FsUsage) *summaryFs {
	if f == nil {
		return nil
	}
	s := &summaryFs{Time: time.Unix(0, f.At).UTC(), AvailableBytes: f.AvailableBytes, CapacityBytes: f.CapacityBytes, UsedBytes: f.UsedBytes}
	if f.Inodes > 0 {
		free, total, used := f.InodesFree, f.Inodes, f.Inodes-f.InodesFree
		s.InodesFree, s.Inodes, s.InodesUsed = &free, &total, &used
	}
	return s
}

// netPart is n as the summary's NetworkStats: the pod's interface, as the
// default and as the only one.
func netPart(n *wire.NetworkUsage) *summaryNet {
	if n == nil {
		return nil
	}
	i := summaryIface{Name: n.Interface, RxBytes: n.RxBytes, RxErrors: n.RxErrors, TxBytes: n.TxBytes, TxErrors: n.TxErrors}
	return &summaryNet{Time: time.Unix(0, n.At).UTC(), summaryIface: i, Interfaces: []summaryIface{i}}
}

func usageParts(u wire.Usage) (*summaryCPU, *summaryMem) {
	t := time.Unix(0, u.At).UTC()
	return &summaryCPU{Time: t, UsageCoreNanoSeconds: u.CPUNanos}, &summaryMem{Time: t, WorkingSetBytes: u.MemoryWorkingSet}
}

func (s *Server) serveStatsSummary(w http.ResponseWriter, r *http.Request) {
	node, err := requestNode(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	resp, status, reason := s.statsOf(r, node, wire.StatsRequest{})
	if status != 0 {
		http.Error(w, reason, status)
		return
	}
	sum := summary{Node: summaryNode{NodeName: node}, Pods: []summaryPod{}}
	if resp.Node != nil {
		sum.Node.CPU, sum.Node.Memory = usageParts(*resp.Node)
	}
	sum.Node.Fs = fsPart(resp.NodeFs)
	nets := map[[2]string]*wire.NetworkUsage{}
	for _, p := range resp.Pods {
		nets[[2]string{p.Namespace, p.Pod}] = p.Network
	}
	cs := sortedContainers(resp.Containers)
	pods := podTotals(cs)
	i := 0
	for _, p := range pods {
		sp := summaryPod{PodRef: summaryRef{Name: p.Pod, Namespace: p.Namespace}, Network: netPart(nets[[2]string{p.Namespace, p.Pod}])}
		sp.CPU, sp.Memory = usageParts(p.Usage)
		for ; i < len(cs) && cs[i].Namespace == p.Namespace && cs[i].Pod == p.Pod; i++ {
			c := summaryContainer{Name: cs[i].Container, Logs: fsPart(cs[i].Logs)}
			c.CPU, c.Memory = usageParts(cs[i].Usage)
			if cs[i].StartTime > 0 {
				st := time.Unix(cs[i].StartTime, 0).UTC()
				c.StartTime = &st
			}
			sp.Containers = append(sp.Containers, c)
		}
		sum.Pods = append(sum.Pods, sp)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(sum)
}
