package mqtt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"outpost.dev/agent/twins"
)

// Policy says whether apps may write desired values over MQTT.
type Policy string

// Policies for BridgeConfig.Writes.
const (
	AllowWrites Policy = "allow"
	DenyWrites  Policy = "deny"
)

// Twins is what the bridge needs of the twins loop.
type Twins interface {
	Write(ctx context.Context, ref twins.Ref, name string, x any) error
	Each(fn func(twins.State))
}

// BridgeConfig configures a Bridge.
type BridgeConfig struct {
	Node string
	// Writes is the policy for the desired topics (default allow).
	Writes Policy
	// Dialects are further topic schemes to speak ("kubeedge").
	Dialects []string
	Log      *slog.Logger
}

// Dialect is a further topic scheme spoken next to Outpost's, such as
// KubeEdge's device-twin topics.
type Dialect interface {
	// Start subscribes the dialect's topics.
	Start() error
	// Publish and Remove follow the bridge's.
	Publish(s twins.State)
	Remove(ref twins.Ref)
}

// Limits on what apps send.
const (
	maxDesiredPayload = 4 << 10
	queueLen          = 64
)

// Bridge publishes device states on the topic scheme and applies desired
// values written by apps. It implements twins.Publisher.
type Bridge struct {
	c        Conn
	node     string
	prefix   string // outpost/<node>/devices/
	writes   Policy
	log      *slog.Logger
	dialects []Dialect
	tw       Twins
	queue    chan message

	mu      sync.Mutex
	devices map[twins.Ref]*published

	published, publishErrors, accepted, rejected, dropped atomic.Int64
	logWindow, logged, suppressed                         atomic.Int64
}

type message struct {
	topic   string
	payload []byte
	handle  func(topic string, payload []byte)
}

// published is what was last published for a device, to publish only
// changes and to clear retained topics when it goes away.
type published struct {
	status string
	props  []string
}

// BridgeStats are the bridge's counters.
type BridgeStats struct {
	// Published counts messages published, PublishErrors those the
	// broker did not take (external broker down).
	Published, PublishErrors int64
	// Accepted and Rejected count desired writes from apps; Dropped those
	// refused because the queue was full.
	Accepted, Rejected, Dropped int64
}

// NewBridge returns a bridge over c.
func NewBridge(c Conn, cfg BridgeConfig) (*Bridge, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	switch cfg.Writes {
	case "":
		cfg.Writes = AllowWrites
	case AllowWrites, DenyWrites:
	default:
		return nil, fmt.Errorf("mqtt: desired writes policy %q is not allow or deny", cfg.Writes)
	}
	b := &Bridge{
		c: c, node: cfg.Node, prefix: "outpost/" + cfg.Node + "/devices/", writes: cfg.Writes, log: cfg.Log,
		queue: make(chan message, queueLen), devices: map[twins.Ref]*published{},
	}
	for _, name := range cfg.Dialects {
		f, err := lookupDialect(name)
		if err != nil {
			return nil, err
		}
		b.dialects = append(b.dialects, f(b))
	}
	return b, nil
}

// Start subscribes the desired topics and serves them until ctx is done;
// tw is where writes go.
func (b *Bridge) Start(ctx context.Context, tw Twins) error {
	b.tw = tw
	go b.run(ctx)
	// Two filters rather than desired/#, whose match of the parent level
	// not every broker implements.
	for _, f := range []string{"+/+/desired", "+/+/desired/+"} {
		if err := b.Subscribe(b.prefix+f, b.handleDesired); err != nil {
			return err
		}
	}
	for _, d := range b.dialects {
		if err := d.Start(); err != nil {
			return err
		}
	}
	b.PublishRaw(StatusTopic(b.node), []byte("online"), true)
	b.c.OnConnect(b.republish)
	return nil
}

// Conn returns the connection, for dialects.
func (b *Bridge) Conn() Conn { return b.c }

// Node returns the node name.
func (b *Bridge) Node() string { return b.node }

// Subscribe subscribes filter with a handler run on the bridge's own
// goroutine, through a bounded queue: a flood of messages is dropped and
// counted, never buffered without bound.
func (b *Bridge) Subscribe(filter string, h func(topic string, payload []byte)) error {
	return b.c.Subscribe(filter, func(topic string, payload []byte) {
		select {
		case b.queue <- message{topic, bytes.Clone(payload), h}:
		default:
			b.dropped.Add(1)
			b.logRejected(topic, errors.New("too many desired writes at once; dropped"))
		}
	})
}

func (b *Bridge) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-b.queue:
			m.handle(m.topic, m.payload)
		}
	}
}

// Stats returns the counters.
func (b *Bridge) Stats() BridgeStats {
	return BridgeStats{
		Published: b.published.Load(), PublishErrors: b.publishErrors.Load(),
		Accepted: b.accepted.Load(), Rejected: b.rejected.Load(), Dropped: b.dropped.Load(),
	}
}

// DeviceTopic returns outpost/<node>/devices/<ns>/<name>/<suffix>.
func (b *Bridge) DeviceTopic(ref twins.Ref, suffix string) string {
	return b.prefix + ref.Namespace + "/" + ref.Name + "/" + suffix
}

// PublishRaw publishes and counts.
func (b *Bridge) PublishRaw(topic string, payload []byte, retain bool) {
	if err := b.c.Publish(topic, payload, retain); err != nil {
		b.publishErrors.Add(1)
		return
	}
	b.published.Add(1)
}

// Publish implements twins.Publisher.
func (b *Bridge) Publish(s twins.State) {
	b.PublishRaw(b.DeviceTopic(s.Ref, "reported"), ReportedJSON(s.Values), true)
	for _, r := range s.Values {
		if slices.Contains(s.Changed, r.Name) {
			b.PublishRaw(b.DeviceTopic(s.Ref, "reported/"+r.Name), PlainValue(r), true)
		}
	}
	status := statusJSON(s)
	b.mu.Lock()
	p := b.devices[s.Ref]
	if p == nil {
		p = &published{}
		b.devices[s.Ref] = p
	}
	statusChanged := p.status != status
	p.status = status
	for _, name := range s.Changed {
		if !slices.Contains(p.props, name) {
			p.props = append(p.props, name)
		}
	}
	b.mu.Unlock()
	if statusChanged {
		b.PublishRaw(b.DeviceTopic(s.Ref, "status"), []byte(status), true)
	}
	for _, d := range b.dialects {
		d.Publish(s)
	}
}

// Remove implements twins.Publisher: it clears the device's retained
// topics.
func (b *Bridge) Remove(ref twins.Ref) {
	b.mu.Lock()
	p := b.devices[ref]
	delete(b.devices, ref)
	b.mu.Unlock()
	b.PublishRaw(b.DeviceTopic(ref, "reported"), nil, true)
	b.PublishRaw(b.DeviceTopic(ref, "status"), nil, true)
	if p != nil {
		for _, name := range p.props {
			b.PublishRaw(b.DeviceTopic(ref, "reported/"+name), nil, true)
		}
	}
	for _, d := range b.dialects {
		d.Remove(ref)
	}
}

// Lookup finds a served device by name alone (KubeEdge device ids have no
// namespace); ok is false when none or several match.
func (b *Bridge) Lookup(name string) (ref twins.Ref, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for r := range b.devices {
		if r.Name == name {
			ref, n = r, n+1
		}
	}
	return ref, n == 1
}

// republish publishes every device's full state again, after a
// (re)connection.
func (b *Bridge) republish() {
	b.mu.Lock()
	for _, p := range b.devices {
		p.status = ""
	}
	b.mu.Unlock()
	b.tw.Each(func(s twins.State) {
		s.Changed = make([]string, len(s.Values))
		for i, r := range s.Values {
			s.Changed[i] = r.Name
		}
		b.Publish(s)
	})
}

// handleDesired serves outpost/<node>/devices/<ns>/<name>/desired[/<prop>].
func (b *Bridge) handleDesired(topic string, payload []byte) {
	rest := strings.TrimPrefix(topic, b.prefix)
	parts := strings.Split(rest, "/")
	if len(parts) < 3 || parts[2] != "desired" || len(parts) > 4 {
		b.Reject(topic, nil, errors.New("not a desired topic: use outpost/<node>/devices/<namespace>/<name>/desired[/<property>]"))
		return
	}
	ref := twins.Ref{Namespace: parts[0], Name: parts[1]}
	if len(bytes.TrimSpace(payload)) == 0 {
		return // a retained desired message being cleared
	}
	if len(payload) > maxDesiredPayload {
		b.Reject(topic, &ref, fmt.Errorf("payload of %d bytes is over the %d byte limit", len(payload), maxDesiredPayload))
		return
	}
	if len(parts) == 4 {
		x, err := ParseValue(payload)
		if err != nil {
			b.Reject(topic, &ref, fmt.Errorf("property %s: %w", parts[3], err))
			return
		}
		b.Write(topic, ref, parts[3], x)
		return
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(payload, &m); err != nil {
		b.Reject(topic, &ref, fmt.Errorf("want a JSON object of property: value (%v)", err))
		return
	}
	for _, name := range slices.Sorted(maps.Keys(m)) {
		x, err := ParseValue(m[name])
		if err != nil {
			b.Reject(topic, &ref, fmt.Errorf("property %s: %w", name, err))
			continue
		}
		b.Write(topic, ref, name, x)
	}
}

// Write applies the writes policy and writes one value, publishing the
// reason on the device's errors topic when refused.
func (b *Bridge) Write(topic string, ref twins.Ref, name string, x any) error {
	if b.writes == DenyWrites {
		err := errors.New("desired writes over MQTT are disabled on this node (mqtt.desiredWrites: deny); patch the Device instead")
		b.Reject(topic, &ref, err)
		return err
	}
	if err := b.tw.Write(context.Background(), ref, name, x); err != nil {
		b.Reject(topic, &ref, err)
		return err
	}
	b.accepted.Add(1)
	return nil
}

// Reject counts and logs a refused message and publishes the reason on
// the device's errors topic (when the device is known from the topic).
func (b *Bridge) Reject(topic string, ref *twins.Ref, err error) {
	b.rejected.Add(1)
	b.logRejected(topic, err)
	if ref == nil {
		return
	}
	body, _ := json.Marshal(struct {
		Topic string `json:"topic"`
		Error string `json:"error"`
		At    string `json:"at"`
	}{topic, err.Error(), time.Now().UTC().Format(time.RFC3339Nano)})
	b.PublishRaw(b.DeviceTopic(*ref, "errors"), body, false)
}

// logRejected logs at most 10 refusals per 10 s, then how many it left out.
func (b *Bridge) logRejected(topic string, err error) {
	now := time.Now().Unix() / 10
	if w := b.logWindow.Load(); w != now && b.logWindow.CompareAndSwap(w, now) {
		if n := b.suppressed.Swap(0); n > 0 {
			b.log.Warn("MQTT messages refused and not logged", "count", n)
		}
		b.logged.Store(0)
	}
	if b.logged.Add(1) > 10 {
		b.suppressed.Add(1)
		return
	}
	b.log.Warn("MQTT message refused", "topic", topic, "err", err)
}

// ParseValue parses a desired value: a JSON number, true or false, or
// {"value": x}.
func ParseValue(payload []byte) (any, error) {
	var x any
	if err := json.Unmarshal(bytes.TrimSpace(payload), &x); err != nil {
		return nil, fmt.Errorf("not a number, true or false, or {\"value\": …}: %.64q", payload)
	}
	if m, ok := x.(map[string]any); ok {
		v, ok := m["value"]
		if !ok || len(m) != 1 {
			return nil, errors.New(`a JSON object must be {"value": x}`)
		}
		x = v
	}
	switch x.(type) {
	case float64, bool:
		return x, nil
	}
	return nil, fmt.Errorf("not a number, true or false: %.64q", payload)
}

// ReportedJSON is the retained JSON of a device's readings:
// {"temperature":{"value":21.5,"unit":"°C","at":"2026-…Z"},…}.
func ReportedJSON(vals []twins.Reading) []byte {
	b := make([]byte, 0, 64*len(vals)+2)
	b = append(b, '{')
	for i, r := range vals {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, r.Name)
		b = append(b, `:{"value":`...)
		b = append(b, PlainValue(r)...)
		if r.Unit != "" {
			b = append(b, `,"unit":`...)
			b = appendString(b, r.Unit)
		}
		b = append(b, `,"at":"`...)
		b = r.At.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, `"}`...)
	}
	return append(b, '}')
}

// PlainValue is a reading as a JSON scalar: 21.5, 3, true.
func PlainValue(r twins.Reading) []byte {
	if r.Type == "bool" {
		return strconv.AppendBool(nil, r.Bool)
	}
	return strconv.AppendFloat(nil, r.Num, 'f', -1, 64)
}

func statusJSON(s twins.State) string {
	b := []byte(`{"connected":`)
	b = strconv.AppendBool(b, s.Connected)
	b = append(b, `,"driver":`...)
	b = appendString(b, s.Driver)
	if s.Error != "" {
		b = append(b, `,"error":`...)
		b = appendString(b, s.Error)
	}
	return string(append(b, '}'))
}

func appendString(b []byte, s string) []byte {
	j, _ := json.Marshal(s)
	return append(b, j...)
}
