package usage

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"outpost.dev/wire"
)

// Container is a running container to read: its pod's names, its own,
// when it was created, its cgroup (the OCI spec's cgroupsPath), its
// task's process (whose network namespace is the pod's; 0 if unknown) and
// its log file ("" if none).
type Container struct {
	Namespace, Pod, Name string
	Created              time.Time
	Cgroup               string
	Pid                  uint32
	LogPath              string
}

// Containers lists the running containers (the pod reconciler).
type Containers func(ctx context.Context) ([]Container, error)

// Config configures a Server.
type Config struct {
	Reader     *Reader
	Containers Containers // nil: the node's figures only
	// NodeFs is a directory on the node's file system (the agent's state
	// directory); "" leaves the node's file system out.
	NodeFs string
	// Interface is the pod's network interface (cni.IfName); "" leaves
	// pod networks out.
	Interface string
	// Metrics renders the agent's own metrics (metrics.Render), for a
	// request of the node's /metrics; nil answers such a request with an
	// error.
	Metrics func() []byte
	// Send queues one frame on the link (link.Link.Send).
	Send func(t wire.Type, seq uint64, body wire.Body) error
	Log  *slog.Logger
}

// collectTimeout bounds one collection; the relay gives up sooner.
const collectTimeout = 10 * time.Second

// Server answers stats requests, one at a time: a request while one is
// being collected is answered with an error, so a scraper cannot pile up
// work on the node.
type Server struct {
	cfg  Config
	busy atomic.Bool
	wg   sync.WaitGroup
}

// New returns a Server.
func New(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg}
}

// Wait waits for a running collection to end.
func (s *Server) Wait() { s.wg.Wait() }

// Handle takes a stats request and reports whether f was one. It never
// blocks the link's read loop: the collection runs on its own.
func (s *Server) Handle(f wire.Frame) bool {
	if f.Type != wire.TypeStatsRequest {
		return false
	}
	var req wire.StatsRequest
	if err := f.DecodeBody(&req); err != nil {
		s.cfg.Log.Warn("stats request refused", "err", err)
		return true
	}
	if req.Metrics {
		s.reply(s.agentMetrics(req.ID))
		return true
	}
	if !s.busy.CompareAndSwap(false, true) {
		s.reply(&wire.StatsResponse{ID: req.ID, Error: errBusy.Error()})
		return true
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.busy.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), collectTimeout)
		defer cancel()
		s.reply(s.Collect(ctx, req.ID))
	}()
	return true
}

// agentMetrics answers a request for the agent's own metrics, cut at
// the last whole line within wire.MaxMetricsBytes.
func (s *Server) agentMetrics(id uint32) *wire.StatsResponse {
	if s.cfg.Metrics == nil {
		return &wire.StatsResponse{ID: id, Error: "this agent serves no metrics of its own"}
	}
	b := s.cfg.Metrics()
	if len(b) > wire.MaxMetricsBytes {
		b = b[:wire.MaxMetricsBytes]
		b = b[:bytes.LastIndexByte(b, '\n')+1]
	}
	if len(b) == 0 {
		return &wire.StatsResponse{ID: id, Error: "the agent's metrics are empty"}
	}
	return &wire.StatsResponse{ID: id, Metrics: b}
}

func (s *Server) reply(r *wire.StatsResponse) {
	if err := s.cfg.Send(wire.TypeStatsResponse, 0, r); err != nil {
		s.cfg.Log.Warn("stats response not sent", "err", err)
	}
}

// Collect reads the node and every running container into a response
// with id. A container whose cgroup cannot be read (it just stopped) is
// left out; a node that cannot be read answers with the error.
func (s *Server) Collect(ctx context.Context, id uint32) *wire.StatsResponse {
	node, err := s.cfg.Reader.Node()
	if err != nil {
		return &wire.StatsResponse{ID: id, Error: "reading the node's usage: " + truncate(err.Error())}
	}
	resp := &wire.StatsResponse{ID: id, Node: &node}
	if s.cfg.NodeFs != "" {
		if fs, err := s.cfg.Reader.Fs(s.cfg.NodeFs); err == nil {
			resp.NodeFs = &fs
		} else {
			s.cfg.Log.Debug("stats: node file system not read", "err", err)
		}
	}
	if s.cfg.Containers == nil {
		return resp
	}
	cs, err := s.cfg.Containers(ctx)
	if err != nil {
		s.cfg.Log.Warn("stats: listing containers failed; node figures only", "err", err)
		return resp
	}
	for _, c := range cs {
		if len(resp.Containers) == wire.MaxStatsContainers {
			resp.Truncated = true
			break
		}
		u, err := s.cfg.Reader.Cgroup(c.Cgroup)
		if err != nil {
			s.cfg.Log.Debug("stats: container cgroup not read", "pod", c.Namespace+"/"+c.Pod, "container", c.Name, "err", err)
			continue
		}
		cu := wire.ContainerUsage{Namespace: c.Namespace, Pod: c.Pod, Container: c.Name, Usage: u}
		if !c.Created.IsZero() {
			cu.StartTime = c.Created.Unix()
		}
		if c.LogPath != "" {
			if l, err := s.cfg.Reader.Logs(c.LogPath); err == nil {
				cu.Logs = &l
			}
		}
		if cu.Validate() != nil {
			continue // names the relay would refuse; not this agent's to send
		}
		resp.Containers = append(resp.Containers, cu)
		s.podNetwork(resp, c)
	}
	return resp
}

// podNetwork adds c's pod to resp.Pods, with its network read through c's
// process, unless the pod is there already or would be one too many.
func (s *Server) podNetwork(resp *wire.StatsResponse, c Container) {
	if s.cfg.Interface == "" {
		return
	}
	if n := len(resp.Pods); n > 0 && resp.Pods[n-1].Namespace == c.Namespace && resp.Pods[n-1].Pod == c.Pod {
		return // most often the containers of a pod come together
	}
	for _, p := range resp.Pods {
		if p.Namespace == c.Namespace && p.Pod == c.Pod {
			return
		}
	}
	if len(resp.Pods) == wire.MaxStatsContainers {
		resp.Truncated = true
		return
	}
	p := wire.PodUsage{Namespace: c.Namespace, Pod: c.Pod}
	n, err := s.cfg.Reader.PodNetwork(c.Pid, s.cfg.Interface)
	switch {
	case err == nil:
		p.Network = &n
	case errors.Is(err, errHostNetwork):
	default:
		s.cfg.Log.Debug("stats: pod network not read", "pod", c.Namespace+"/"+c.Pod, "err", err)
	}
	if p.Validate() == nil {
		resp.Pods = append(resp.Pods, p)
	}
}

func truncate(s string) string {
	if len(s) > 512 {
		return s[:512]
	}
	return s
}
