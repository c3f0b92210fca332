package broker

import (
	"strings"
	"sync"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// kept holds the agent's own retained messages (its reported, status and
// node status topics) as topic and payload, and hands them to clients as
// they subscribe. mochi keeps a retained message as a whole packet (about
// 900 bytes before its payload) under a topic tree node of its own, and
// copies its whole retained map every second to expire messages; a
// gateway's devices have several topics each, so the agent keeps its own
// here for the cost of the bytes, and mochi keeps only apps' and its $SYS
// messages. The agent still publishes with the retain flag set, so that
// subscribers asking for retain-as-published see it; the guard's
// OnRetainMessage hook takes each straight back out of mochi's index.
//
// The agent's messages are never expired: they are its current state,
// cleared by publishing an empty payload when a device goes away.
// Their number is bounded by the twins loop's devices and properties.
type kept struct {
	mu  sync.RWMutex
	msg map[string]string // topic → payload

	// pending are the subscriptions whose SUBACK is being written, by
	// client: the retained messages follow the SUBACK [MQTT-3.8.4-4].
	// A client has at most one SUBSCRIBE in hand at a time (mochi reads
	// a client's packets one after another), so at most one per client.
	pmu     sync.Mutex
	pending map[*mochi.Client]*pendingSub
}

type pendingSub struct {
	id      uint16
	filters []packets.Subscription
	existed []bool
	codes   []byte
}

func newKept() *kept {
	return &kept{msg: map[string]string{}, pending: map[*mochi.Client]*pendingSub{}}
}

// set keeps payload as topic's retained message; an empty payload clears
// it.
func (k *kept) set(topic string, payload []byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(payload) == 0 {
		delete(k.msg, topic)
		return
	}
	k.msg[topic] = string(payload)
}

// each calls fn for every retained message matching filter, from a
// snapshot (fn may block).
func (k *kept) each(filter string, fn func(topic, payload string)) {
	type m struct{ topic, payload string }
	var out []m
	k.mu.RLock()
	if !strings.ContainsAny(filter, "+#") {
		if p, ok := k.msg[filter]; ok {
			out = append(out, m{filter, p})
		}
	} else {
		for t, p := range k.msg {
			if matches(filter, t) {
				out = append(out, m{t, p})
			}
		}
	}
	k.mu.RUnlock()
	for _, x := range out {
		fn(x.topic, x.payload)
	}
}

// subscribing notes a client's SUBSCRIBE before mochi adds its filters,
// to know which of them the client held already (MQTT 5 retain handling
// 1 sends retained messages only for new subscriptions).
func (k *kept) subscribing(cl *mochi.Client, pk packets.Packet) {
	p := &pendingSub{id: pk.PacketID, filters: pk.Filters, existed: make([]bool, len(pk.Filters))}
	for i, f := range pk.Filters {
		_, p.existed[i] = cl.State.Subscriptions.Get(f.Filter)
	}
	k.pmu.Lock()
	k.pending[cl] = p
	k.pmu.Unlock()
}

// subscribed notes the reason codes mochi decided.
func (k *kept) subscribed(cl *mochi.Client, pk packets.Packet, codes []byte) {
	k.pmu.Lock()
	defer k.pmu.Unlock()
	if p := k.pending[cl]; p != nil && p.id == pk.PacketID && len(codes) == len(p.filters) {
		p.codes = codes
	} else {
		delete(k.pending, cl)
	}
}

// acked sends the retained messages matching a subscription once its
// SUBACK is written, as mochi does its own: retain flag set, at QoS 0 (the
// agent publishes at QoS 0), none for shared subscriptions or when the
// retain handling option says not to.
func (k *kept) acked(cl *mochi.Client, pk packets.Packet) {
	k.pmu.Lock()
	p := k.pending[cl]
	if p != nil && p.id == pk.PacketID {
		delete(k.pending, cl)
	}
	k.pmu.Unlock()
	if p == nil || p.id != pk.PacketID || p.codes == nil {
		return
	}
	for i, sub := range p.filters {
		if p.codes[i] >= packets.ErrUnspecifiedError.Code || mochi.IsSharedFilter(sub.Filter) ||
			sub.RetainHandling == 2 || sub.RetainHandling == 1 && p.existed[i] { // [MQTT-3.3.1-10] [MQTT-3.3.1-11]
			continue
		}
		k.each(sub.Filter, func(topic, payload string) {
			// An error (closed connection, or over the client's maximum
			// packet size) drops this message, as mochi does.
			_ = cl.WritePacket(packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true},
				TopicName:   topic,
				Payload:     []byte(payload),
			})
		})
	}
}

// gone forgets a disconnected client.
func (k *kept) gone(cl *mochi.Client) {
	k.pmu.Lock()
	delete(k.pending, cl)
	k.pmu.Unlock()
}

// matches reports whether topic matches the MQTT topic filter (without a
// $share prefix): + is one level, a final # any number including none;
// topics starting with $ match no filter starting with a wildcard
// [MQTT-4.7.2-1].
func matches(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	for {
		f, frest, fmore := strings.Cut(filter, "/")
		if f == "#" && !fmore {
			return true
		}
		t, trest, tmore := strings.Cut(topic, "/")
		if f != "+" && f != t {
			return false
		}
		switch {
		case fmore && tmore:
			filter, topic = frest, trest
		case fmore: // the topic ends: "a/#" matches "a"
			return frest == "#"
		default:
			return !tmore
		}
	}
}
