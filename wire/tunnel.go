package wire

import (
	"errors"
	"fmt"
	"strings"
)

// Tunnels carry kubectl exec, attach and port-forward between the relay
// and an agent, many at once on the one link. The relay opens one with
// TunnelOpen; both sides then send TunnelData on numbered channels, each
// direction bounded by TunnelWindow bytes not yet acknowledged with
// TunnelAck, so a stalled tunnel holds no more than that and never blocks
// heartbeats, status or other tunnels. A TunnelData with EOF ends one
// channel in one direction (stdin, or the write half of a forwarded
// connection). TunnelClose ends the tunnel: from the agent it carries the
// exit code or why it failed; from the relay it cancels (kubectl went
// away). A frame that breaks these rules ends its tunnel only, never the
// link. Tunnels are not durable: a lost link ends them all.

// TunnelWindow is the most unacknowledged data a side sends on one
// tunnel; the receiver buffers at most that much.
const TunnelWindow = 64 << 10

// Tunnel kinds.
const (
	TunnelExec        uint8 = 1
	TunnelAttach      uint8 = 2
	TunnelPortForward uint8 = 3
)

// Tunnel channels. Port-forward uses ChanStdin for both directions.
const (
	ChanStdin  uint8 = 0 // relay → agent; a port-forward's data both ways
	ChanStdout uint8 = 1 // agent → relay
	ChanStderr uint8 = 2 // agent → relay
)

// Bounds on an exec's command.
const (
	MaxExecArgs     = 256
	MaxExecArgBytes = 64 << 10 // all arguments together
)

// TunnelOpen asks the agent to exec in, attach to or dial into a pod.
type TunnelOpen struct {
	ID        uint32 `cbor:"1,keyasint"`
	Kind      uint8  `cbor:"2,keyasint"`
	Namespace string `cbor:"3,keyasint"`
	Pod       string `cbor:"4,keyasint"`
	// Container is required for exec and attach, empty for port-forward.
	Container string   `cbor:"5,keyasint,omitempty"`
	Command   []string `cbor:"6,keyasint,omitempty"`
	TTY       bool     `cbor:"7,keyasint,omitempty"`
	Stdin     bool     `cbor:"8,keyasint,omitempty"`
	Stdout    bool     `cbor:"9,keyasint,omitempty"`
	Stderr    bool     `cbor:"10,keyasint,omitempty"`
	// Port is the pod's port a port-forward dials on its loopback.
	Port uint16 `cbor:"11,keyasint,omitempty"`
}

// Validate implements Body.
func (o *TunnelOpen) Validate() error {
	if o.ID == 0 {
		return errors.New("tunnel-open: no id")
	}
	if err := CheckLabel("tunnel-open: namespace", o.Namespace); err != nil {
		return err
	}
	if err := CheckSubdomain("tunnel-open: pod", o.Pod); err != nil {
		return err
	}
	switch o.Kind {
	case TunnelExec, TunnelAttach:
		if err := CheckLabel("tunnel-open: container", o.Container); err != nil {
			return err
		}
		if o.Port != 0 {
			return errors.New("tunnel-open: a port on an exec or attach")
		}
		if o.TTY && o.Stderr {
			return errors.New("tunnel-open: a terminal has no separate stderr")
		}
		if !o.Stdin && !o.Stdout && !o.Stderr {
			return errors.New("tunnel-open: none of stdin, stdout, stderr")
		}
	case TunnelPortForward:
		if o.Port == 0 {
			return errors.New("tunnel-open: port-forward without a port")
		}
		if o.Container != "" || len(o.Command) > 0 || o.TTY || o.Stdin || o.Stdout || o.Stderr {
			return errors.New("tunnel-open: a port-forward takes only a pod and a port")
		}
	default:
		return fmt.Errorf("tunnel-open: unknown kind %d", o.Kind)
	}
	if o.Kind == TunnelExec {
		if len(o.Command) == 0 {
			return errors.New("tunnel-open: exec without a command")
		}
		if len(o.Command) > MaxExecArgs {
			return fmt.Errorf("tunnel-open: %d arguments (limit %d)", len(o.Command), MaxExecArgs)
		}
		n := 0
		for _, a := range o.Command {
			n += len(a)
			if strings.IndexByte(a, 0) >= 0 {
				return errors.New("tunnel-open: an argument holds a NUL byte")
			}
		}
		if n > MaxExecArgBytes {
			return fmt.Errorf("tunnel-open: command of %d bytes (limit %d)", n, MaxExecArgBytes)
		}
	} else if len(o.Command) > 0 {
		return errors.New("tunnel-open: a command on an attach or port-forward")
	}
	return nil
}

// TunnelData carries bytes of one channel of a tunnel.
type TunnelData struct {
	ID      uint32 `cbor:"1,keyasint"`
	Channel uint8  `cbor:"2,keyasint,omitempty"`
	Data    []byte `cbor:"3,keyasint,omitempty"`
	// EOF ends the channel in the sender's direction, after Data.
	EOF bool `cbor:"4,keyasint,omitempty"`
}

// Validate implements Body.
func (d *TunnelData) Validate() error {
	if d.ID == 0 {
		return errors.New("tunnel-data: no id")
	}
	if d.Channel > ChanStderr {
		return fmt.Errorf("tunnel-data: unknown channel %d", d.Channel)
	}
	if len(d.Data) > MaxStreamChunk {
		return fmt.Errorf("tunnel-data: %d bytes (limit %d)", len(d.Data), MaxStreamChunk)
	}
	return nil
}

// TunnelAck grants credit: Consumed is the total bytes of the tunnel the
// sender of the ack has taken from its buffers (all channels together).
type TunnelAck struct {
	ID       uint32 `cbor:"1,keyasint"`
	Consumed uint64 `cbor:"2,keyasint"`
}

// Validate implements Body.
func (a *TunnelAck) Validate() error {
	if a.ID == 0 {
		return errors.New("tunnel-ack: no id")
	}
	return nil
}

// TunnelResize sets the size of an exec's or attach's terminal.
type TunnelResize struct {
	ID     uint32 `cbor:"1,keyasint"`
	Width  uint16 `cbor:"2,keyasint"`
	Height uint16 `cbor:"3,keyasint"`
}

// Validate implements Body.
func (r *TunnelResize) Validate() error {
	if r.ID == 0 {
		return errors.New("tunnel-resize: no id")
	}
	return nil
}

// TunnelClose ends a tunnel.
type TunnelClose struct {
	ID uint32 `cbor:"1,keyasint"`
	// Exited says the command ran and exited with ExitCode.
	Exited   bool  `cbor:"2,keyasint,omitempty"`
	ExitCode int32 `cbor:"3,keyasint,omitempty"`
	// Error says why the tunnel failed or was cancelled.
	Error string `cbor:"4,keyasint,omitempty"`
}

// Validate implements Body.
func (c *TunnelClose) Validate() error {
	if c.ID == 0 {
		return errors.New("tunnel-close: no id")
	}
	if !c.Exited && c.ExitCode != 0 {
		return errors.New("tunnel-close: an exit code without an exit")
	}
	return checkText("tunnel-close: error", c.Error, maxTextLen, false)
}
