package wire

import (
	"errors"
	"fmt"
	"net"
)

// Field limits shared by both sides. A message exceeding one is invalid.
const (
	maxNameLen    = 253 // a DNS subdomain, as Kubernetes names are
	maxTextLen    = 1024
	maxAddresses  = 16
	maxConditions = 16
)

// Hello opens a connection. The node name is not in it: the relay takes it
// from the client certificate.
type Hello struct {
	MinVersion   uint16   `cbor:"1,keyasint"`
	MaxVersion   uint16   `cbor:"2,keyasint"`
	AgentVersion string   `cbor:"3,keyasint"`
	Node         NodeInfo `cbor:"4,keyasint"`
	// Objects are the downstream objects the agent holds, with their
	// versions: the relay answers with what differs.
	Objects []ObjectVersion `cbor:"5,keyasint,omitempty"`
	// Upgrades says the agent takes upgrade offers: it has an installer
	// and an upgrade signing key pinned in its configuration. The relay
	// offers no upgrade to an agent without it.
	Upgrades bool `cbor:"6,keyasint,omitempty"`
}

// Validate implements Body.
func (h *Hello) Validate() error {
	if h.MinVersion == 0 || h.MaxVersion < h.MinVersion {
		return fmt.Errorf("hello: bad version range [%d, %d]", h.MinVersion, h.MaxVersion)
	}
	if err := checkText("hello: agentVersion", h.AgentVersion, maxNameLen, true); err != nil {
		return err
	}
	if len(h.Objects) > maxObjects {
		return fmt.Errorf("hello: %d object versions (limit %d)", len(h.Objects), maxObjects)
	}
	for i := range h.Objects {
		if err := h.Objects[i].Validate(); err != nil {
			return err
		}
	}
	return h.Node.Validate()
}

// HelloAck answers a Hello with the chosen protocol version and the node
// name the relay knows the agent by.
type HelloAck struct {
	Version  uint16 `cbor:"1,keyasint"`
	NodeName string `cbor:"2,keyasint"`
	// HeartbeatSeconds is how often the agent sends a heartbeat. The relay
	// treats a connection silent for three intervals as dead.
	HeartbeatSeconds uint32 `cbor:"3,keyasint"`
	RelayVersion     string `cbor:"4,keyasint,omitempty"`
	// PodCIDRs are the Node's spec.podCIDRs (one per family), when the
	// cluster allocates them: the agent's default pod network uses the
	// first, and keeps it in its store for when the link is down.
	PodCIDRs []string `cbor:"5,keyasint,omitempty"`
}

// Validate implements Body.
func (a *HelloAck) Validate() error {
	if a.Version == 0 {
		return errors.New("hello-ack: no version")
	}
	if err := checkText("hello-ack: nodeName", a.NodeName, maxNameLen, true); err != nil {
		return err
	}
	if a.HeartbeatSeconds == 0 || a.HeartbeatSeconds > 3600 {
		return fmt.Errorf("hello-ack: heartbeat %ds out of range", a.HeartbeatSeconds)
	}
	if err := checkPodCIDRs("hello-ack", a.PodCIDRs); err != nil {
		return err
	}
	return checkText("hello-ack: relayVersion", a.RelayVersion, maxNameLen, false)
}

// checkPodCIDRs checks a Node's pod CIDRs: at most one per family, each a
// network address.
func checkPodCIDRs(what string, cidrs []string) error {
	if len(cidrs) > 2 {
		return fmt.Errorf("%s: %d podCIDRs (at most one per family)", what, len(cidrs))
	}
	for _, c := range cidrs {
		if _, _, err := net.ParseCIDR(c); err != nil {
			return fmt.Errorf("%s: podCIDR %q: %w", what, c, err)
		}
	}
	return nil
}

// NodeConfig is what the agent takes from its Node, sent by the relay
// when it sees it change after the hello-ack: a new Node gets its pod CIDR
// from the controller manager moments after the relay created it, and the
// agent learns it without reconnecting.
type NodeConfig struct {
	// PodCIDRs are the Node's spec.podCIDRs, as in HelloAck.
	PodCIDRs []string `cbor:"1,keyasint,omitempty"`
}

// Validate implements Body.
func (c *NodeConfig) Validate() error { return checkPodCIDRs("node-config", c.PodCIDRs) }

// Heartbeat keeps a connection alive. It has no body; the type alone is
// three bytes on the wire.
type Heartbeat struct{}

// Validate implements Body.
func (*Heartbeat) Validate() error { return nil }

// ErrorCode classifies an Error frame.
type ErrorCode uint16

// Error codes.
const (
	CodeMalformed   ErrorCode = 1 // the frame could not be decoded
	CodeTooLarge    ErrorCode = 2 // the frame exceeded MaxFrameSize
	CodeVersion     ErrorCode = 3 // no common protocol version
	CodeForbidden   ErrorCode = 4 // the sender may not do this
	CodeUnknownType ErrorCode = 5 // the receiver does not know the type
	CodeProtocol    ErrorCode = 6 // a valid frame at the wrong time
	CodeInternal    ErrorCode = 7 // the receiver failed; try again later
	CodeInvalid     ErrorCode = 8 // a decoded message missing a field
)

// Error tells the peer why something it sent was refused. Fatal errors are
// followed by a close.
type Error struct {
	Code   ErrorCode `cbor:"1,keyasint"`
	Reason string    `cbor:"2,keyasint"`
	Fatal  bool      `cbor:"3,keyasint,omitempty"`
}

// Validate implements Body.
func (e *Error) Validate() error {
	if e.Code == 0 {
		return errors.New("error: no code")
	}
	return checkText("error: reason", e.Reason, maxTextLen, false)
}

func (e *Error) Error() string { return fmt.Sprintf("peer error %d: %s", e.Code, e.Reason) }

// NodeStatus reports the node's current facts and conditions. It is a
// durable report: the frame carries a Seq and the agent keeps it until acked.
type NodeStatus struct {
	Node       NodeInfo    `cbor:"1,keyasint"`
	Conditions []Condition `cbor:"2,keyasint,omitempty"`
	// Link, if set, is the agent's view of its link and outbox; the relay
	// shows it in the node's conditions. Older relays ignore it.
	Link *LinkStats `cbor:"3,keyasint,omitempty"`
}

// LinkStats are the agent's figures about its upstream queue and link, as
// of At. Times are unix seconds on the agent's clock.
type LinkStats struct {
	At int64 `cbor:"1,keyasint"`
	// OutboxReports and OutboxBytes are what waits in the outbox for an
	// ack; OutboxMaxBytes is its bound (0 if unknown).
	OutboxReports  uint64 `cbor:"2,keyasint"`
	OutboxBytes    uint64 `cbor:"3,keyasint"`
	OutboxMaxBytes uint64 `cbor:"4,keyasint,omitempty"`
	// OutboxDropped counts time-series reports dropped to make room,
	// since the outbox was created.
	OutboxDropped uint64 `cbor:"5,keyasint,omitempty"`
	// LastSync is when the agent last heard from a relay (0: never).
	LastSync int64 `cbor:"6,keyasint,omitempty"`
}

// Validate reports a figure that cannot be right.
func (l *LinkStats) Validate() error {
	if l.At <= 0 || l.LastSync < 0 {
		return fmt.Errorf("link stats: times %d, %d must be positive", l.At, l.LastSync)
	}
	return nil
}

// Validate implements Body.
func (s *NodeStatus) Validate() error {
	if err := s.Node.Validate(); err != nil {
		return err
	}
	if len(s.Conditions) > maxConditions {
		return fmt.Errorf("node-status: %d conditions (limit %d)", len(s.Conditions), maxConditions)
	}
	for i := range s.Conditions {
		if err := s.Conditions[i].Validate(); err != nil {
			return err
		}
	}
	if s.Link != nil {
		return s.Link.Validate()
	}
	return nil
}

// Ack has no body: Frame.Ack holds the acknowledged sequence number.
type Ack struct{}

// Validate implements Body.
func (*Ack) Validate() error { return nil }

// NodeInfo describes the gateway, read by the agent from the machine.
type NodeInfo struct {
	Arch          string    `cbor:"1,keyasint"` // GOARCH, e.g. arm64
	OS            string    `cbor:"2,keyasint"` // GOOS, e.g. linux
	OSImage       string    `cbor:"3,keyasint,omitempty"`
	KernelVersion string    `cbor:"4,keyasint,omitempty"`
	Board         string    `cbor:"5,keyasint"`
	Hostname      string    `cbor:"6,keyasint,omitempty"`
	Addresses     []Address `cbor:"7,keyasint,omitempty"`
	Capacity      Resources `cbor:"8,keyasint"`
	Allocatable   Resources `cbor:"9,keyasint"`
	MachineID     string    `cbor:"10,keyasint,omitempty"`
	BootID        string    `cbor:"11,keyasint,omitempty"`
	// ContainerRuntime is e.g. containerd://1.6.20, empty if none is found.
	ContainerRuntime string `cbor:"12,keyasint,omitempty"`
}

// Validate implements Body.
func (n *NodeInfo) Validate() error {
	if err := checkText("node: arch", n.Arch, 32, true); err != nil {
		return err
	}
	if err := checkText("node: os", n.OS, 32, true); err != nil {
		return err
	}
	if err := checkText("node: board", n.Board, 64, true); err != nil {
		return err
	}
	for _, f := range []struct{ name, v string }{
		{"osImage", n.OSImage}, {"kernelVersion", n.KernelVersion}, {"hostname", n.Hostname},
		{"machineID", n.MachineID}, {"bootID", n.BootID}, {"containerRuntime", n.ContainerRuntime},
	} {
		if err := checkText("node: "+f.name, f.v, maxNameLen, false); err != nil {
			return err
		}
	}
	if len(n.Addresses) > maxAddresses {
		return fmt.Errorf("node: %d addresses (limit %d)", len(n.Addresses), maxAddresses)
	}
	for _, a := range n.Addresses {
		if err := checkText("node: address type", a.Type, 32, true); err != nil {
			return err
		}
		if err := checkText("node: address", a.Address, maxNameLen, true); err != nil {
			return err
		}
	}
	if err := n.Capacity.Validate("capacity"); err != nil {
		return err
	}
	return n.Allocatable.Validate("allocatable")
}

// Address is one of the node's addresses, typed as Kubernetes types them
// (InternalIP, ExternalIP, Hostname).
type Address struct {
	Type    string `cbor:"1,keyasint"`
	Address string `cbor:"2,keyasint"`
}

// Resources are node resources in base units.
type Resources struct {
	CPUMillis        int64 `cbor:"1,keyasint"`
	MemoryBytes      int64 `cbor:"2,keyasint"`
	Pods             int64 `cbor:"3,keyasint"`
	EphemeralStorage int64 `cbor:"4,keyasint,omitempty"` // bytes
}

// Validate reports a negative or absent figure.
func (r Resources) Validate(what string) error {
	if r.CPUMillis <= 0 || r.MemoryBytes <= 0 || r.Pods < 0 || r.EphemeralStorage < 0 {
		return fmt.Errorf("node: %s: cpu %dm, memory %d, pods %d, storage %d: must be positive",
			what, r.CPUMillis, r.MemoryBytes, r.Pods, r.EphemeralStorage)
	}
	return nil
}

// Condition is a node or object condition as the agent sees it.
type Condition struct {
	Type    string `cbor:"1,keyasint"`
	Status  string `cbor:"2,keyasint"` // True, False or Unknown
	Reason  string `cbor:"3,keyasint,omitempty"`
	Message string `cbor:"4,keyasint,omitempty"`
}

// Validate implements Body.
func (c *Condition) Validate() error {
	if err := checkText("condition: type", c.Type, 64, true); err != nil {
		return err
	}
	switch c.Status {
	case "True", "False", "Unknown":
	default:
		return fmt.Errorf("condition %s: status %q is not True, False or Unknown", c.Type, c.Status)
	}
	if err := checkText("condition: reason", c.Reason, 128, false); err != nil {
		return err
	}
	return checkText("condition: message", c.Message, maxTextLen, false)
}

func checkText(what, s string, max int, required bool) error {
	if required && s == "" {
		return fmt.Errorf("%s missing", what)
	}
	if len(s) > max {
		return fmt.Errorf("%s is %d bytes (limit %d)", what, len(s), max)
	}
	return nil
}
