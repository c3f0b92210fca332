package wire

import (
	"errors"
	"fmt"
)

// PodStatus reports what the agent sees of one pod (TypePodStatus). It is
// a durable report, keyed by the pod's UID in the outbox so only the latest
// is kept, and acked after the relay wrote it to the API server.
type PodStatus struct {
	UID       string `cbor:"1,keyasint"`
	Namespace string `cbor:"2,keyasint"`
	Name      string `cbor:"3,keyasint"`
	// Phase is Pending, Running, Succeeded or Failed.
	Phase      string      `cbor:"4,keyasint"`
	Conditions []Condition `cbor:"5,keyasint,omitempty"`
	// Containers and InitContainers are in the pod's order.
	Containers     []ContainerStatus `cbor:"6,keyasint,omitempty"`
	InitContainers []ContainerStatus `cbor:"7,keyasint,omitempty"`
	PodIP          string            `cbor:"8,keyasint,omitempty"`
	HostIP         string            `cbor:"9,keyasint,omitempty"`
	StartTime      int64             `cbor:"10,keyasint,omitempty"` // unix seconds
	Reason         string            `cbor:"11,keyasint,omitempty"`
	Message        string            `cbor:"12,keyasint,omitempty"`
	// Terminated says every container of a deleting pod has stopped: the
	// relay then completes the deletion, as a kubelet does.
	Terminated bool `cbor:"13,keyasint,omitempty"`
	// PodIPs are the pod's addresses, PodIP first (one per family).
	PodIPs []string `cbor:"14,keyasint,omitempty"`
	// EphemeralContainers are the statuses of the pod's ephemeral
	// containers (status.ephemeralContainerStatuses), in the pod's order.
	EphemeralContainers []ContainerStatus `cbor:"20,keyasint,omitempty" json:",omitempty"`
}

// Validate implements Body.
func (s *PodStatus) Validate() error {
	for _, f := range []struct {
		what, v string
		max     int
	}{{"uid", s.UID, 128}, {"namespace", s.Namespace, 63}, {"name", s.Name, maxNameLen}} {
		if err := checkText("pod-status: "+f.what, f.v, f.max, true); err != nil {
			return err
		}
	}
	switch s.Phase {
	case "Pending", "Running", "Succeeded", "Failed":
	default:
		return fmt.Errorf("pod-status %s/%s: phase %q", s.Namespace, s.Name, s.Phase)
	}
	if len(s.Conditions) > maxConditions || len(s.Containers)+len(s.InitContainers)+len(s.EphemeralContainers) > maxContainers {
		return errors.New("pod-status: too many conditions or containers")
	}
	for i := range s.Conditions {
		if err := s.Conditions[i].Validate(); err != nil {
			return err
		}
	}
	for _, cs := range [][]ContainerStatus{s.InitContainers, s.Containers, s.EphemeralContainers} {
		for i := range cs {
			if err := cs[i].Validate(); err != nil {
				return err
			}
		}
	}
	for _, f := range []struct{ what, v string }{{"podIP", s.PodIP}, {"hostIP", s.HostIP}, {"reason", s.Reason}} {
		if err := checkText("pod-status: "+f.what, f.v, 128, false); err != nil {
			return err
		}
	}
	if len(s.PodIPs) > 2 {
		return fmt.Errorf("pod-status: %d podIPs (at most one per family)", len(s.PodIPs))
	}
	for _, ip := range s.PodIPs {
		if err := checkText("pod-status: podIPs", ip, 128, true); err != nil {
			return err
		}
	}
	return checkText("pod-status: message", s.Message, maxTextLen, false)
}

// ContainerStatus is one container's status, as a kubelet reports it.
type ContainerStatus struct {
	Name         string         `cbor:"1,keyasint"`
	Image        string         `cbor:"2,keyasint"`
	ImageID      string         `cbor:"3,keyasint,omitempty"`
	ContainerID  string         `cbor:"4,keyasint,omitempty"` // containerd://…
	Ready        bool           `cbor:"5,keyasint,omitempty"`
	Started      bool           `cbor:"6,keyasint,omitempty"`
	RestartCount int32          `cbor:"7,keyasint,omitempty"`
	State        ContainerState `cbor:"8,keyasint"`
	LastState    ContainerState `cbor:"9,keyasint,omitempty"`
}

// Validate reports a missing name or an impossible state.
func (c *ContainerStatus) Validate() error {
	if err := checkText("container-status: name", c.Name, 63, true); err != nil {
		return err
	}
	if err := checkText("container-status "+c.Name+": image", c.Image, 512, false); err != nil {
		return err
	}
	if len(c.ImageID) > 512 || len(c.ContainerID) > 256 || c.RestartCount < 0 {
		return fmt.Errorf("container-status %s: bad image id, container id or restart count", c.Name)
	}
	if err := c.State.Validate(true); err != nil {
		return fmt.Errorf("container-status %s: %w", c.Name, err)
	}
	return c.LastState.Validate(false)
}

// PostStartHookFailed begins the terminated state's message of a
// container the agent killed because its postStart hook failed, and
// PreStopHookFailed that of one whose preStop hook failed as it was
// stopped (unless a failed probe or postStart hook says why it was
// stopped); the rest says how the hook failed. The relay records a
// FailedPostStartHook or FailedPreStopHook event for them, as a kubelet
// does.
const (
	PostStartHookFailed = "PostStartHook failed: "
	PreStopHookFailed   = "PreStopHook failed: "
)

// StateKind says which of a container's states applies.
type StateKind uint8

// Container states.
const (
	StateWaiting    StateKind = 1
	StateRunning    StateKind = 2
	StateTerminated StateKind = 3
)

// ContainerState is a container's state; times are unix milliseconds.
type ContainerState struct {
	Kind       StateKind `cbor:"1,keyasint,omitempty"`
	Reason     string    `cbor:"2,keyasint,omitempty"` // e.g. CrashLoopBackOff, ErrImagePull, Completed
	Message    string    `cbor:"3,keyasint,omitempty"`
	StartedAt  int64     `cbor:"4,keyasint,omitempty"`
	FinishedAt int64     `cbor:"5,keyasint,omitempty"`
	ExitCode   int32     `cbor:"6,keyasint,omitempty"`
	Signal     int32     `cbor:"7,keyasint,omitempty"`
}

// Validate reports an unknown kind; required says the state must be set.
func (s *ContainerState) Validate(required bool) error {
	if s.Kind == 0 && !required {
		return nil
	}
	if s.Kind < StateWaiting || s.Kind > StateTerminated {
		return fmt.Errorf("state: unknown kind %d", s.Kind)
	}
	if err := checkText("state: reason", s.Reason, 128, false); err != nil {
		return err
	}
	return checkText("state: message", s.Message, maxTextLen, false)
}

// Streams carry kubectl logs (and later exec) between the relay and an
// agent: the relay opens one with StreamOpen, the agent answers with
// StreamData frames and ends with a StreamData whose EOF is set (Error says
// why, if it failed). The relay grants credit with StreamAck so a slow
// reader bounds what the agent buffers. Streams are not durable.

// StreamWindow is the most unacknowledged data an agent sends on a stream.
const StreamWindow = 256 << 10

// MaxStreamChunk is the largest Data in one StreamData frame.
const MaxStreamChunk = 32 << 10

// StreamOpen asks the agent for a container's log (TypeStreamOpen).
type StreamOpen struct {
	ID        uint32 `cbor:"1,keyasint"`
	Namespace string `cbor:"2,keyasint"`
	Pod       string `cbor:"3,keyasint"`
	Container string `cbor:"4,keyasint"`
	Follow    bool   `cbor:"5,keyasint,omitempty"`
	Previous  bool   `cbor:"6,keyasint,omitempty"`
	// TailLines < 0 means all lines.
	TailLines    int64 `cbor:"7,keyasint,omitempty"`
	LimitBytes   int64 `cbor:"8,keyasint,omitempty"`
	SinceSeconds int64 `cbor:"9,keyasint,omitempty"`
	Timestamps   bool  `cbor:"10,keyasint,omitempty"`
}

// Validate implements Body.
func (o *StreamOpen) Validate() error {
	if o.ID == 0 {
		return errors.New("stream-open: no id")
	}
	for _, f := range []struct{ what, v string }{{"namespace", o.Namespace}, {"pod", o.Pod}} {
		if err := checkText("stream-open: "+f.what, f.v, maxNameLen, true); err != nil {
			return err
		}
	}
	if o.LimitBytes < 0 || o.SinceSeconds < 0 {
		return errors.New("stream-open: negative limit")
	}
	// They name a log directory on the gateway.
	if err := CheckLabel("stream-open: namespace", o.Namespace); err != nil {
		return err
	}
	if err := CheckSubdomain("stream-open: pod", o.Pod); err != nil {
		return err
	}
	if o.Container != "" {
		return CheckLabel("stream-open: container", o.Container)
	}
	return nil
}

// StreamData carries stream bytes, agent → relay (TypeStreamData).
type StreamData struct {
	ID    uint32 `cbor:"1,keyasint"`
	Data  []byte `cbor:"2,keyasint,omitempty"`
	EOF   bool   `cbor:"3,keyasint,omitempty"`
	Error string `cbor:"4,keyasint,omitempty"`
}

// Validate implements Body.
func (d *StreamData) Validate() error {
	if d.ID == 0 {
		return errors.New("stream-data: no id")
	}
	if len(d.Data) > MaxStreamChunk {
		return fmt.Errorf("stream-data: %d bytes (limit %d)", len(d.Data), MaxStreamChunk)
	}
	return checkText("stream-data: error", d.Error, maxTextLen, false)
}

// StreamAck grants credit or cancels, relay → agent (TypeStreamAck).
type StreamAck struct {
	ID uint32 `cbor:"1,keyasint"`
	// Consumed is the total bytes of the stream the relay has delivered.
	Consumed uint64 `cbor:"2,keyasint,omitempty"`
	// Cancel ends the stream (the kubectl client went away).
	Cancel bool `cbor:"3,keyasint,omitempty"`
}

// Validate implements Body.
func (a *StreamAck) Validate() error {
	if a.ID == 0 {
		return errors.New("stream-ack: no id")
	}
	return nil
}
