package wire

import (
	"errors"
	"fmt"
	"reflect"

	"github.com/fxamacker/cbor/v2"
)

// Protocol versions this build speaks. The hello carries the agent's range;
// the relay picks the highest version both support.
const (
	ProtocolMin uint16 = 1
	ProtocolMax uint16 = 1
)

// MaxFrameSize is the hard upper bound of one encoded frame, on both sides.
// Readers must refuse larger messages before reading them whole.
const MaxFrameSize = 1 << 20

// Decoder limits. They bound the work and memory a hostile frame can cost.
const (
	maxNesting  = 16
	maxElements = 4096
)

// Type says what a frame's body is.
type Type uint8

// Message types. Zero is not a valid type, so a frame without one fails.
const (
	TypeHello      Type = 1 // agent → relay, first frame on a connection
	TypeHelloAck   Type = 2 // relay → agent, answer to Hello
	TypeHeartbeat  Type = 3 // both ways; the relay echoes the agent's
	TypeError      Type = 4 // both ways; says why before a close
	TypeNodeStatus Type = 5 // agent → relay, durable (carries Seq)
	TypeAck        Type = 6 // relay → agent, acknowledges Frame.Ack
	TypeSync       Type = 7 // relay → agent, downstream objects
	TypePodStatus  Type = 8 // agent → relay, durable (carries Seq)
	TypeStreamOpen Type = 9 // relay → agent, opens a log stream
	TypeStreamData Type = 10
	TypeStreamAck  Type = 11
	TypeTwinReport Type = 12 // agent → relay, durable (carries Seq)
	// TypeCertRequest (agent → relay) asks for a new node certificate;
	// TypeCertIssued (relay → agent) answers it. See CertRequest.
	TypeCertRequest Type = 13
	TypeCertIssued  Type = 14
	// Tunnels (kubectl exec, attach, port-forward): see TunnelOpen.
	TypeTunnelOpen   Type = 15 // relay → agent
	TypeTunnelData   Type = 16 // both ways
	TypeTunnelAck    Type = 17 // both ways, grants credit
	TypeTunnelResize Type = 18 // relay → agent
	TypeTunnelClose  Type = 19 // both ways
	// Resource usage on demand: see StatsRequest.
	TypeStatsRequest  Type = 20 // relay → agent
	TypeStatsResponse Type = 21 // agent → relay
	// TypeNodeConfig (relay → agent) says what changed in the agent's
	// Node that the agent acts on, after the hello-ack. See NodeConfig.
	TypeNodeConfig Type = 22
	// Agent upgrades: see UpgradeOffer.
	TypeUpgradeOffer        Type = 23 // relay → agent
	TypeUpgradeChunkRequest Type = 24 // agent → relay
	TypeUpgradeChunk        Type = 25 // relay → agent
	TypeUpgradeReport       Type = 26 // agent → relay, durable (carries Seq)
)

var typeNames = map[Type]string{
	TypeHello:         "hello",
	TypeHelloAck:      "hello-ack",
	TypeHeartbeat:     "heartbeat",
	TypeError:         "error",
	TypeNodeStatus:    "node-status",
	TypeAck:           "ack",
	TypeSync:          "sync",
	TypePodStatus:     "pod-status",
	TypeStreamOpen:    "stream-open",
	TypeStreamData:    "stream-data",
	TypeStreamAck:     "stream-ack",
	TypeTwinReport:    "twin-report",
	TypeCertRequest:   "cert-request",
	TypeCertIssued:    "cert-issued",
	TypeTunnelOpen:    "tunnel-open",
	TypeTunnelData:    "tunnel-data",
	TypeTunnelAck:     "tunnel-ack",
	TypeTunnelResize:  "tunnel-resize",
	TypeTunnelClose:   "tunnel-close",
	TypeStatsRequest:  "stats-request",
	TypeStatsResponse: "stats-response",
	TypeNodeConfig:    "node-config",

	TypeUpgradeOffer:        "upgrade-offer",
	TypeUpgradeChunkRequest: "upgrade-chunk-request",
	TypeUpgradeChunk:        "upgrade-chunk",
	TypeUpgradeReport:       "upgrade-report",
}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Known reports whether this build understands t.
func (t Type) Known() bool { _, ok := typeNames[t]; return ok }

// Frame is the envelope of every message.
type Frame struct {
	Type Type `cbor:"1,keyasint"`
	// Seq numbers durable upstream reports; the relay acks it after the
	// API write succeeded.
	Seq uint64 `cbor:"2,keyasint,omitempty"`
	// Ack is the highest Seq the relay has made durable (TypeAck).
	Ack  uint64          `cbor:"3,keyasint,omitempty"`
	Body cbor.RawMessage `cbor:"4,keyasint,omitempty"`
}

// Body is implemented by every message body. Validate reports a missing or
// out-of-range field, so handlers can use a decoded body without checks.
type Body interface {
	Validate() error
}

// Errors returned by Decode. Callers match them with errors.Is.
var (
	ErrTooLarge  = errors.New("frame too large")
	ErrMalformed = errors.New("malformed frame")
	ErrInvalid   = errors.New("invalid message")
)

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
		MaxNestedLevels:  maxNesting,
		MaxArrayElements: maxElements,
		MaxMapPairs:      maxElements,
		UTF8:             cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// Encode builds one frame of type t carrying body (nil for none) and
// returns its bytes. It fails if the frame would exceed MaxFrameSize.
func Encode(t Type, seq uint64, body Body) ([]byte, error) {
	f := Frame{Type: t, Seq: seq}
	if body != nil && !isNil(body) {
		if err := body.Validate(); err != nil {
			return nil, fmt.Errorf("encode %s: %w", t, err)
		}
		b, err := encMode.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", t, err)
		}
		f.Body = b
	}
	return EncodeFrame(f)
}

// EncodeFrame encodes a complete frame, enforcing MaxFrameSize.
func EncodeFrame(f Frame) ([]byte, error) {
	b, err := encMode.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", f.Type, err)
	}
	if len(b) > MaxFrameSize {
		return nil, fmt.Errorf("encode %s: %d bytes: %w (limit %d)", f.Type, len(b), ErrTooLarge, MaxFrameSize)
	}
	return b, nil
}

// Decode parses one frame. It does not decode the body; use Frame.Decode.
func Decode(b []byte) (Frame, error) {
	var f Frame
	if len(b) > MaxFrameSize {
		return f, fmt.Errorf("%d bytes: %w (limit %d)", len(b), ErrTooLarge, MaxFrameSize)
	}
	if err := decMode.Unmarshal(b, &f); err != nil {
		return Frame{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if f.Type == 0 {
		return Frame{}, fmt.Errorf("%w: no message type", ErrInvalid)
	}
	if len(f.Body) > 0 {
		if err := decMode.Wellformed(f.Body); err != nil {
			return Frame{}, fmt.Errorf("%w: body: %v", ErrMalformed, err)
		}
	}
	return f, nil
}

// DecodeBody decodes the frame's body into v and validates it. A frame
// without a body decodes as v's zero value, which then must validate.
func (f Frame) DecodeBody(v Body) error {
	if len(f.Body) > 0 {
		if err := decMode.Unmarshal(f.Body, v); err != nil {
			return fmt.Errorf("%w: %s body: %v", ErrMalformed, f.Type, err)
		}
	}
	if err := v.Validate(); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalid, f.Type, err)
	}
	return nil
}

func isNil(v any) bool {
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}

// Negotiate picks the highest protocol version in both [min, max] and this
// build's range.
func Negotiate(min, max uint16) (uint16, bool) {
	hi := max
	if hi > ProtocolMax {
		hi = ProtocolMax
	}
	lo := min
	if lo < ProtocolMin {
		lo = ProtocolMin
	}
	if lo > hi {
		return 0, false
	}
	return hi, true
}

// Marshal encodes a body on its own, deterministically, for storage (the
// agent keeps what it was sent in this form).
func Marshal(v Body) ([]byte, error) {
	if err := v.Validate(); err != nil {
		return nil, err
	}
	return encMode.Marshal(v)
}

// Unmarshal decodes what Marshal encoded, with the same limits and
// validation as a frame body.
func Unmarshal(b []byte, v Body) error {
	if len(b) > MaxFrameSize {
		return fmt.Errorf("%d bytes: %w (limit %d)", len(b), ErrTooLarge, MaxFrameSize)
	}
	if err := decMode.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := v.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}
