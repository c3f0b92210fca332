package wire

import (
	"errors"
	"fmt"
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
}

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
	return c.Usage.Validate()
}

// StatsResponse answers a StatsRequest. Error, if set, says why the agent
// has no figures (then Node is unset).
type StatsResponse struct {
	ID    uint32 `cbor:"1,keyasint"`
	Error string `cbor:"2,keyasint,omitempty"`
	Node  *Usage `cbor:"3,keyasint,omitempty"`
	// Containers are the running containers the agent could read.
	Containers []ContainerUsage `cbor:"4,keyasint,omitempty"`
	// Truncated says more containers ran than MaxStatsContainers.
	Truncated bool `cbor:"5,keyasint,omitempty"`
}

// Validate implements Body.
func (r *StatsResponse) Validate() error {
	if r.ID == 0 {
		return errors.New("stats-response: no id")
	}
	if err := checkText("stats-response: error", r.Error, maxTextLen, false); err != nil {
		return err
	}
	if r.Error == "" && r.Node == nil {
		return errors.New("stats-response: neither figures nor an error")
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
	return nil
}
