package broker

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// kept holds the agent's own retained messages (its reported, status and
// node status topics) as topic and payload. mochi keeps a retained
// message as a whole packet (about 900 bytes before its payload) under a
// topic tree node of its own, and copies its whole retained map every
// second to expire messages; a gateway's devices have several topics
// each, so the agent keeps its own here for the cost of the bytes, and
// mochi keeps only apps' retained messages. The agent still publishes
// with the retain flag set, so that subscribers asking for
// retain-as-published see it; the guard's OnRetainMessage hook takes each
// straight back out of mochi's index.
//
// A client gets them through mochi's own retained pass: right after a
// SUBACK is written the matching messages are put in mochi's index, mochi
// queues them to the client as it does its own retained messages (retain
// flag set, none for shared subscriptions, MQTT 5 retain handling, a full
// queue drops them), and once the SUBSCRIBE is processed they are taken
// out again. mu orders that pass against the agent's retained publishes:
// both hold it while they queue messages to clients, and queueing never
// blocks (mochi drops a message for a client whose queue is full), so a
// client's queue gets each of the agent's topics in the order of the
// agent's publishes, and an older value never follows a newer one.
//
// The agent's messages are never expired: they are its current state,
// cleared by publishing an empty payload when a device goes away.
// Their number is bounded by the twins loop's devices and properties.
type kept struct {
	s   *mochi.Server
	mu  sync.Mutex
	msg map[string]keptMsg // topic → payload
	seq atomic.Uint64      // counts the agent's retained publishes

	// inIndex is how many of the agent's messages a retained pass holds
	// in mochi's index (they do not count against apps' limit).
	inIndex atomic.Int64

	// passes are the clients' SUBSCRIBEs being processed. A client has
	// at most one in hand at a time (mochi reads a client's packets one
	// after another).
	pmu    sync.Mutex
	passes map[*mochi.Client]*pass
}

type keptMsg struct {
	payload string
	seq     uint64 // kept.seq when published
}

type pass struct {
	id      uint16
	filters []packets.Subscription
	// seq is kept.seq when the client's filters were added: the
	// agent's publishes after it reach the client live, so their topics
	// need no retained copy, and those before it did not (unless the
	// client held a matching filter already).
	seq    uint64
	locked bool     // the pass holds kept.mu
	topics []string // the agent's topics put in mochi's index
}

func newKept(s *mochi.Server) *kept {
	return &kept{s: s, msg: map[string]keptMsg{}, passes: map[*mochi.Client]*pass{}}
}

// publish keeps payload as topic's retained message (an empty payload
// clears it) and publishes it, retained, through mochi.
func (k *kept) publish(topic string, payload []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(payload) == 0 {
		delete(k.msg, topic)
	} else {
		k.msg[topic] = keptMsg{string(payload), k.seq.Add(1)}
	}
	return k.s.Publish(topic, payload, true, 0)
}

// subscribeInline subscribes the agent's own handler: subscribe, then h
// gets the kept messages matching filter, in order with the agent's
// publishes (h runs holding mu, as it does for each of the agent's
// retained publishes).
func (k *kept) subscribeInline(filter string, subscribe func() error, h func(topic string, payload []byte)) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := subscribe(); err != nil {
		return err
	}
	k.eachLocked(filter, func(t string, m keptMsg) { h(t, []byte(m.payload)) })
	return nil
}

// subscribing runs before mochi adds a client's filters, subscribed
// after (mochi calls both, with nothing between them that waits on the
// client): mu is held between them, so each of the agent's publishes
// either reached the client's subscription tree entries or comes after
// them.
func (k *kept) subscribing() { k.mu.Lock() }

// subscribed notes a client's SUBSCRIBE once mochi has added its filters.
func (k *kept) subscribed(cl *mochi.Client, pk packets.Packet) {
	p := &pass{id: pk.PacketID, filters: pk.Filters, seq: k.seq.Load()}
	k.mu.Unlock()
	k.pmu.Lock()
	k.passes[cl] = p
	k.pmu.Unlock()
}

// acked runs once the SUBACK is written, just before mochi's retained
// pass: it takes mu and puts the kept messages matching the client's
// filters in mochi's index, except those published since the filters were
// added (the client gets those live).
func (k *kept) acked(cl *mochi.Client, pk packets.Packet) {
	k.pmu.Lock()
	p := k.passes[cl]
	k.pmu.Unlock()
	if p == nil || p.id != pk.PacketID || p.locked {
		return
	}
	k.mu.Lock()
	k.pmu.Lock()
	p.locked = true
	k.pmu.Unlock()
	var in map[string]bool
	for _, sub := range p.filters {
		if mochi.IsSharedFilter(sub.Filter) || sub.RetainHandling == 2 {
			continue // mochi sends none; spare the index
		}
		k.eachLocked(sub.Filter, func(topic string, m keptMsg) {
			if m.seq > p.seq || in[topic] {
				return
			}
			if in == nil {
				in = map[string]bool{}
			}
			in[topic] = true
			p.topics = append(p.topics, topic)
			k.s.Topics.RetainMessage(packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true},
				TopicName:   topic,
				Payload:     []byte(m.payload),
				Created:     time.Now().Unix(), // else mochi's expiry (1 h after Created) could take it mid-pass
			})
		})
	}
	k.inIndex.Add(int64(len(p.topics)))
}

// processed runs once mochi has processed the SUBSCRIBE: the kept
// messages leave mochi's index and mu is released.
func (k *kept) processed(cl *mochi.Client) {
	k.pmu.Lock()
	p := k.passes[cl]
	delete(k.passes, cl)
	k.pmu.Unlock()
	if p == nil || !p.locked {
		return
	}
	for _, t := range p.topics {
		k.s.Topics.RetainMessage(packets.Packet{TopicName: t})
	}
	k.inIndex.Add(-int64(len(p.topics)))
	k.mu.Unlock()
}

// gone forgets a disconnected client (mochi calls it after the client's
// last packet was processed).
func (k *kept) gone(cl *mochi.Client) {
	k.pmu.Lock()
	if p := k.passes[cl]; p != nil && !p.locked {
		delete(k.passes, cl)
	}
	k.pmu.Unlock()
}

// eachLocked calls fn for every kept message matching filter; k.mu is
// held.
func (k *kept) eachLocked(filter string, fn func(topic string, m keptMsg)) {
	if !strings.ContainsAny(filter, "+#") {
		if m, ok := k.msg[filter]; ok {
			fn(filter, m)
		}
		return
	}
	for t, m := range k.msg {
		if matches(filter, t) {
			fn(t, m)
		}
	}
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
