// Package broker is the agent's embedded MQTT broker (mochi-mqtt), bound
// to loopback by default, with optional username/password and TLS. It
// registers itself with outpost.dev/agent/mqtt when linked; build with the
// tag outpost_no_broker to leave it out.
//
// Everything it holds is bounded: clients, pending writes and in-flight
// messages per client, packet size, session lifetime, and retained
// messages published by apps. Apps may publish under outpost/ only on the
// desired topics; the reported and status topics are the agent's.
package broker

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"outpost.dev/agent/mqtt"
)

func init() { mqtt.RegisterBroker(Start) }

// Limits of the embedded broker.
const (
	DefaultMaxClients = 32
	maxPending        = 64       // queued writes per client
	maxInflight       = 64       // QoS>0 messages in flight per client
	maxPacket         = 16 << 10 // bytes; twin messages are well under 1 KiB
	maxSession        = 3600     // seconds a disconnected session is kept
	// MaxAppRetained and maxAppRetainedBytes bound what apps can make the
	// broker keep: beyond them, messages from apps are delivered but not
	// retained (at most 4 MiB of apps' retained payloads).
	MaxAppRetained      = 1024
	maxAppRetainedBytes = 4 << 10
)

// Conn is the agent's inline connection to the embedded broker.
type Conn struct {
	s      *mochi.Server
	node   string
	subID  atomic.Int64
	closed sync.Once
	kept   *kept
}

// Start starts the broker on cfg.Listen and returns the agent's inline
// connection to it.
func Start(cfg mqtt.Config) (mqtt.Conn, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Listen == "" {
		cfg.Listen = mqtt.DefaultListen
	}
	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumClients = int64(cfg.MaxClients)
	if caps.MaximumClients <= 0 {
		caps.MaximumClients = DefaultMaxClients
	}
	caps.MaximumClientWritesPending = maxPending
	caps.MaximumInflight = maxInflight
	caps.ReceiveMaximum = maxInflight
	caps.MaximumPacketSize = maxPacket
	caps.MaximumSessionExpiryInterval = maxSession
	caps.MaximumMessageExpiryInterval = maxSession
	caps.TopicAliasMaximum = 64
	s := mochi.New(&mochi.Options{
		InlineClient: true,
		Capabilities: caps,
		// mochi logs every connection at info; the agent's log keeps
		// warnings and errors from it.
		Logger: slog.New(warnOnly{cfg.Log.Handler()}),
		// No $SYS topics: mochi has no switch for them, so their
		// ticker is set beyond any uptime and the set it publishes
		// when it starts is cleared below. They would cost a retained
		// packet each, a heap scan (runtime.ReadMemStats) per update,
		// and apps' retained slots.
		SysTopicResendInterval: math.MaxInt64 / int64(time.Second),
	})
	k := newKept(s)
	g := &guard{s: s, user: cfg.Username, pass: cfg.Password, log: cfg.Log, kept: k}
	if err := s.AddHook(g, nil); err != nil {
		return nil, err
	}
	lc := listeners.Config{Type: listeners.TypeTCP, ID: "outpost", Address: cfg.Listen}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt: certFile/keyFile: %w", err)
		}
		lc.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	l := listeners.NewTCP(lc)
	if err := s.AddListener(l); err != nil {
		return nil, fmt.Errorf("mqtt: embedded broker cannot listen on %s (%w): set mqtt.listen to a free address, or mqtt.enabled: false", cfg.Listen, err)
	}
	if err := s.Serve(); err != nil {
		return nil, err
	}
	for topic := range s.Topics.Retained.GetAll() {
		if strings.HasPrefix(topic, mochi.SysPrefix+"/") {
			s.Topics.RetainMessage(packets.Packet{TopicName: topic})
		}
	}
	cfg.Log.Info("MQTT broker listening", "addr", l.Address(), "tls", lc.TLSConfig != nil, "auth", cfg.Username != "")
	return &Conn{s: s, node: cfg.Node, kept: k}, nil
}

// Addr returns the address the broker listens on (useful with port 0).
func (c *Conn) Addr() string {
	if l, ok := c.s.Listeners.Get("outpost"); ok {
		return l.Address()
	}
	return ""
}

// Publish implements mqtt.Conn. The agent's retained messages are kept
// by the Conn rather than by mochi (see kept).
func (c *Conn) Publish(topic string, payload []byte, retain bool) error {
	if retain {
		return c.kept.publish(topic, payload)
	}
	return c.s.Publish(topic, payload, false, 0)
}

// Subscribe implements mqtt.Conn: h gets the retained messages matching
// filter at once, then every message published on it. h runs while the
// agent's retained messages are delivered in order (see kept), so it must
// not itself publish a retained message.
func (c *Conn) Subscribe(filter string, h mqtt.Handler) error {
	id := int(c.subID.Add(1))
	return c.kept.subscribeInline(filter, func() error {
		return c.s.Subscribe(filter, id, func(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
			h(pk.TopicName, pk.Payload)
		})
	}, h)
}

// OnConnect implements mqtt.Conn: the inline client is always connected.
func (c *Conn) OnConnect(fn func()) { go fn() }

// Close implements mqtt.Conn.
func (c *Conn) Close() error {
	var err error
	c.closed.Do(func() {
		c.Publish(mqtt.StatusTopic(c.node), []byte("offline"), true)
		err = c.s.Close()
	})
	return err
}

// guard authenticates clients and keeps apps off the agent's topics.
type guard struct {
	mochi.HookBase
	s          *mochi.Server
	user, pass string
	log        *slog.Logger
	warned     atomic.Bool
	kept       *kept
}

func (g *guard) ID() string { return "outpost-guard" }

func (g *guard) Provides(b byte) bool {
	return bytes.Contains([]byte{mochi.OnConnectAuthenticate, mochi.OnACLCheck, mochi.OnPublish,
		mochi.OnRetainMessage, mochi.OnSubscribe, mochi.OnSubscribed, mochi.OnPacketSent, mochi.OnPacketProcessed, mochi.OnDisconnect}, []byte{b})
}

func (g *guard) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	if g.user == "" {
		return true
	}
	u := subtle.ConstantTimeCompare(pk.Connect.Username, []byte(g.user))
	p := subtle.ConstantTimeCompare(pk.Connect.Password, []byte(g.pass))
	return u&p == 1
}

// OnACLCheck lets apps publish under outpost/ only on desired topics
// (outpost/<node>/devices/<ns>/<name>/desired[/<prop>]).
func (g *guard) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	if !write || cl.Net.Inline || !strings.HasPrefix(topic, "outpost/") {
		return true
	}
	p := strings.Split(topic, "/")
	return len(p) >= 6 && len(p) <= 7 && p[2] == "devices" && p[5] == "desired"
}

func (g *guard) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Retain && !cl.Net.Inline && len(pk.Payload) > 0 &&
		(len(pk.Payload) > maxAppRetainedBytes || int64(g.s.Topics.Retained.Len())-g.kept.inIndex.Load() >= MaxAppRetained) {
		pk.FixedHeader.Retain = false
		if g.warned.CompareAndSwap(false, true) {
			g.log.Warn("MQTT broker holds the most retained messages it keeps, or this one is too large; retained messages from apps past the limits are delivered but not retained",
				"limit", MaxAppRetained, "max_bytes", maxAppRetainedBytes, "client", cl.ID, "topic", pk.TopicName)
		}
	}
	return pk, nil
}

// OnRetainMessage takes the agent's retained messages back out of mochi's
// index as soon as mochi has put them there: the Conn keeps them.
func (g *guard) OnRetainMessage(cl *mochi.Client, pk packets.Packet, r int64) {
	if cl.Net.Inline && len(pk.Payload) > 0 {
		g.s.Topics.RetainMessage(packets.Packet{TopicName: pk.TopicName})
	}
}

// OnSubscribe and OnSubscribed bracket mochi's adding a client's filters,
// OnPacketSent (of the SUBACK) and OnPacketProcessed (of the SUBSCRIBE)
// its retained pass for the client: see kept.
func (g *guard) OnSubscribe(cl *mochi.Client, pk packets.Packet) packets.Packet {
	if !cl.Net.Inline {
		g.kept.subscribing()
	}
	return pk
}

func (g *guard) OnSubscribed(cl *mochi.Client, pk packets.Packet, _ []byte) {
	if !cl.Net.Inline {
		g.kept.subscribed(cl, pk)
	}
}

func (g *guard) OnPacketSent(cl *mochi.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type == packets.Suback {
		g.kept.acked(cl, pk)
	}
}

func (g *guard) OnPacketProcessed(cl *mochi.Client, pk packets.Packet, _ error) {
	if pk.FixedHeader.Type == packets.Subscribe && !cl.Net.Inline {
		g.kept.processed(cl)
	}
}

func (g *guard) OnDisconnect(cl *mochi.Client, _ error, _ bool) { g.kept.gone(cl) }

// warnOnly passes records at warning level and above.
type warnOnly struct{ slog.Handler }

func (w warnOnly) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && w.Handler.Enabled(ctx, l)
}

func (w warnOnly) WithAttrs(a []slog.Attr) slog.Handler { return warnOnly{w.Handler.WithAttrs(a)} }
func (w warnOnly) WithGroup(n string) slog.Handler      { return warnOnly{w.Handler.WithGroup(n)} }
