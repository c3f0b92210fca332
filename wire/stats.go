package wire

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Resource usage (kubectl top, through metrics-server). The relay asks a
// node's agent with StatsRequest when something scrapes the node's
// kubelet endpoint; the agent answers with one StatsResponse carrying
// the node's and each running container's cumulative CPU time and memory
// working set, read from its cgroups then. Nothing is sent while nobody
// asks, and neither message is durable: a lost link fails the scrape.

// MaxStatsContainers bounds the containers of one StatsResponse; an agent
// running more reports the first ones and says so in Truncated.
const MaxStatsContainers = 1024

// StatsRequest asks the agent for a StatsResponse with the same ID.
type StatsRequest struct {
	ID uint32 `cbor:"1,keyasint"`
	// Metrics asks for the agent's own metrics (what its local metrics
	// endpoint serves) instead of usage: the node's kubelet /metrics.
	Metrics bool `cbor:"2,keyasint,omitempty" json:",omitempty"`
}

// MaxMetricsBytes bounds StatsResponse.Metrics.
const MaxMetricsBytes = 256 << 10

// Validate implements Body.
func (r *StatsRequest) Validate() error {
	if r.ID == 0 {
		return errors.New("stats-request: no id")
	}
	return nil
}

// Usage is one reading of a cgroup (or of the node). At is when it was
// read, in unix nanoseconds on the agent's clock; CPUNanos is the
// cumulative CPU time used in core-nanoseconds; MemoryWorkingSet is
// memory in use less inactive file pages, in bytes, as the kubelet
// computes it.
type Usage struct {
	At               int64  `cbor:"1,keyasint"`
	CPUNanos         uint64 `cbor:"2,keyasint"`
	MemoryWorkingSet uint64 `cbor:"3,keyasint"`
}

// Validate reports a reading without a time.
func (u *Usage) Validate() error {
	if u.At <= 0 {
		return fmt.Errorf("usage: time %d must be positive", u.At)
	}
	return nil
}

// ContainerUsage is one running container's reading.
type ContainerUsage struct {
	Namespace string `cbor:"1,keyasint"`
	Pod       string `cbor:"2,keyasint"`
	Container string `cbor:"3,keyasint"`
	// StartTime is when the container was created, in unix seconds: a
	// new one means the counter started again.
	StartTime int64 `cbor:"4,keyasint,omitempty"`
	Usage     Usage `cbor:"5,keyasint"`
	// Logs is what the container's log files (the current one and its
	// rotated ones) take, on the file system that holds them.
	Logs *FsUsage `cbor:"6,keyasint,omitempty"`
}

// Validate implements Body's checks for one entry.
func (c *ContainerUsage) Validate() error {
	if err := CheckLabel("stats: namespace", c.Namespace); err != nil {
		return err
	}
	if err := CheckSubdomain("stats: pod", c.Pod); err != nil {
		return err
	}
	if err := CheckLabel("stats: container", c.Container); err != nil {
		return err
	}
	if c.StartTime < 0 {
		return fmt.Errorf("stats: container %s/%s/%s: start time %d is negative", c.Namespace, c.Pod, c.Container, c.StartTime)
	}
	if err := c.Usage.Validate(); err != nil {
		return err
	}
	if c.Logs != nil {
		if err := c.Logs.Validate(); err != nil {
			return fmt.Errorf("stats: container %s/%s/%s: logs: %w", c.Namespace, c.Pod, c.Container, err)
		}
	}
	return nil
}

// FsUsage is a file system's use at At (unix nanoseconds): its size,
// what is free for unprivileged users and its inodes, from statfs; and
// UsedBytes, what the files reported on take (for the node's file
// system, capacity less free blocks).
type FsUsage struct {
	At             int64  `cbor:"1,keyasint"`
	CapacityBytes  uint64 `cbor:"2,keyasint,omitempty"`
	AvailableBytes uint64 `cbor:"3,keyasint,omitempty"`
	UsedBytes      uint64 `cbor:"4,keyasint,omitempty"`
	Inodes         uint64 `cbor:"5,keyasint,omitempty"`
	InodesFree     uint64 `cbor:"6,keyasint,omitempty"`
}

// Validate reports figures that cannot be right.
func (f *FsUsage) Validate() error {
	if f.At <= 0 {
		return fmt.Errorf("fs usage: time %d must be positive", f.At)
	}
	if f.AvailableBytes > f.CapacityBytes || f.InodesFree > f.Inodes {
		return fmt.Errorf("fs usage: %d bytes free of %d, %d inodes free of %d", f.AvailableBytes, f.CapacityBytes, f.InodesFree, f.Inodes)
	}
	return nil
}

// NetworkUsage is one network interface's counters at At (unix
// nanoseconds), as the pod sees them (received is what came into the pod).
type NetworkUsage struct {
	At        int64  `cbor:"1,keyasint"`
	Interface string `cbor:"2,keyasint"`
	RxBytes   uint64 `cbor:"3,keyasint,omitempty"`
	RxErrors  uint64 `cbor:"4,keyasint,omitempty"`
	TxBytes   uint64 `cbor:"5,keyasint,omitempty"`
	TxErrors  uint64 `cbor:"6,keyasint,omitempty"`
}

// maxInterfaceName is IFNAMSIZ less its terminating NUL.
const maxInterfaceName = 15

// Validate reports a reading without a time or with a name no interface
// has.
func (n *NetworkUsage) Validate() error {
	if n.At <= 0 {
		return fmt.Errorf("network usage: time %d must be positive", n.At)
	}
	if n.Interface == "" || len(n.Interface) > maxInterfaceName || strings.ContainsAny(n.Interface, "/: ") {
		return fmt.Errorf("network usage: interface name %q: want 1 to %d characters without '/', ':' or spaces", n.Interface, maxInterfaceName)
	}
	for _, r := range n.Interface {
		if r < 0x21 || r > 0x7e {
			return fmt.Errorf("network usage: interface name %q: printable ASCII only", n.Interface)
		}
	}
	return nil
}

// PodUsage is what the agent reads of a pod as a whole: its network
// namespace's interface (not for pods on the host's network).
type PodUsage struct {
	Namespace string        `cbor:"1,keyasint"`
	Pod       string        `cbor:"2,keyasint"`
	Network   *NetworkUsage `cbor:"3,keyasint,omitempty"`
}

// Validate implements Body's checks for one entry.
func (p *PodUsage) Validate() error {
	if err := CheckLabel("stats: namespace", p.Namespace); err != nil {
		return err
	}
	if err := CheckSubdomain("stats: pod", p.Pod); err != nil {
		return err
	}
	if p.Network != nil {
		if err := p.Network.Validate(); err != nil {
			return fmt.Errorf("stats: pod %s/%s: %w", p.Namespace, p.Pod, err)
		}
	}
	return nil
}

// StatsResponse answers a StatsRequest. Error, if set, says why the agent
// has no figures (then Node is unset).
type StatsResponse struct {
	ID    uint32 `cbor:"1,keyasint"`
	Error string `cbor:"2,keyasint,omitempty"`
	Node  *Usage `cbor:"3,keyasint,omitempty"`
	// Containers are the running containers the agent could read.
	Containers []ContainerUsage `cbor:"4,keyasint,omitempty"`
	// Truncated says more containers ran than MaxStatsContainers (or
	// more pods than that).
	Truncated bool `cbor:"5,keyasint,omitempty"`
	// NodeFs is the file system of the agent's state directory (where
	// container logs and pod volumes live).
	NodeFs *FsUsage `cbor:"6,keyasint,omitempty"`
	// Pods are the pods of the running containers the agent could read,
	// at most MaxStatsContainers.
	Pods []PodUsage `cbor:"7,keyasint,omitempty"`
	// Metrics answers a request for the agent's own metrics: the
	// Prometheus text format, at most MaxMetricsBytes.
	Metrics []byte `cbor:"8,keyasint,omitempty" json:",omitempty"`
}

// Validate implements Body.
func (r *StatsResponse) Validate() error {
	if r.ID == 0 {
		return errors.New("stats-response: no id")
	}
	if err := checkText("stats-response: error", r.Error, maxTextLen, false); err != nil {
		return err
	}
	if r.Error == "" && r.Node == nil && r.Metrics == nil {
		return errors.New("stats-response: neither figures nor an error")
	}
	if len(r.Metrics) > MaxMetricsBytes {
		return fmt.Errorf("stats-response: %d bytes of metrics (limit %d)", len(r.Metrics), MaxMetricsBytes)
	}
	if !utf8.Valid(r.Metrics) {
		return errors.New("stats-response: metrics are not UTF-8 text")
	}
	if r.Node != nil {
		if err := r.Node.Validate(); err != nil {
			return fmt.Errorf("stats-response: node: %w", err)
		}
	}
	if len(r.Containers) > MaxStatsContainers {
		return fmt.Errorf("stats-response: %d containers (limit %d)", len(r.Containers), MaxStatsContainers)
	}
	for i := range r.Containers {
		if err := r.Containers[i].Validate(); err != nil {
			return err
		}
	}
	if r.NodeFs != nil {
		if err := r.NodeFs.Validate(); err != nil {
			return fmt.Errorf("stats-response: node fs: %w", err)
		}
	}
	if len(r.Pods) > MaxStatsContainers {
		return fmt.Errorf("stats-response: %d pods (limit %d)", len(r.Pods), MaxStatsContainers)
	}
	for i := range r.Pods {
		if err := r.Pods[i].Validate(); err != nil {
			return err
		}
	}
	return nil
}
