package broker_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"outpost.dev/agent/mqtt"
	"outpost.dev/agent/mqtt/broker"
	"outpost.dev/test/wait"
)

// raw is an MQTT client on the broker's own packet codec, for what paho
// does not speak (MQTT 5 subscription options) or does not do (never
// reading).
type raw struct {
	t       testing.TB
	c       net.Conn
	version byte
	r       *bufio.Reader
}

func dialRaw(t testing.TB, addr, id string, version byte) *raw {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &raw{t: t, c: c, version: version, r: bufio.NewReader(c)}
	name := "MQTT"
	if version == 3 {
		name = "MQIsdp"
	}
	r.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: version,
		Connect: packets.ConnectParams{ProtocolName: []byte(name), Clean: true, Keepalive: 60, ClientIdentifier: id}})
	return r
}

func (r *raw) write(pk packets.Packet) {
	r.t.Helper()
	pk.ProtocolVersion = r.version
	var b bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&b)
	case packets.Subscribe:
		pk.FixedHeader.Qos = 1
		err = pk.SubscribeEncode(&b)
	}
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.c.Write(b.Bytes()); err != nil {
		r.t.Fatal(err)
	}
}

func (r *raw) subscribe(id uint16, subs ...packets.Subscription) {
	r.t.Helper()
	r.write(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: id, Filters: subs})
}

// read returns the next packet from the broker.
func (r *raw) read() packets.Packet {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	hb, err := r.r.ReadByte()
	if err != nil {
		r.t.Fatal(err)
	}
	var pk packets.Packet
	if err := pk.FixedHeader.Decode(hb); err != nil {
		r.t.Fatal(err)
	}
	n, _, err := packets.DecodeLength(r.r)
	if err != nil {
		r.t.Fatal(err)
	}
	pk.FixedHeader.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(r.r, body); err != nil {
		r.t.Fatal(err)
	}
	pk.ProtocolVersion = r.version
	switch pk.FixedHeader.Type {
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Connack:
		err = pk.ConnackDecode(body)
	}
	if err != nil {
		r.t.Fatal(err)
	}
	return pk
}

// until reads packets up to the SUBACK of id and the retained message of
// the exact filter subscribed with it, returning every PUBLISH on the way
// as "topic payload retained".
func (r *raw) until(id uint16, topic string) []string {
	r.t.Helper()
	var got []string
	acked := false
	for {
		pk := r.read()
		switch pk.FixedHeader.Type {
		case packets.Suback:
			acked = acked || pk.PacketID == id
		case packets.Publish:
			got = append(got, pk.TopicName+" "+string(pk.Payload)+" "+strconv.FormatBool(pk.FixedHeader.Retain))
			if acked && pk.TopicName == topic {
				return got
			}
		}
	}
}

// TestMQTT5RetainHandling: MQTT 5 subscription options apply to the
// agent's retained messages as to any: retain handling 0 sends them on
// every SUBSCRIBE, 1 only for a new subscription, 2 never, and none to a
// shared subscription; a live message keeps its retain flag for
// retain-as-published.
func TestMQTT5RetainHandling(t *testing.T) {
	c, err := broker.Start(mqtt.Config{Node: "gw", Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	conn := c.(*broker.Conn)
	const tp, mark = "outpost/gw/devices/default/air/status", "outpost/gw/status"
	for topic, v := range map[string]string{tp: "s1", mark: "online"} {
		if err := conn.Publish(topic, []byte(v), true); err != nil {
			t.Fatal(err)
		}
	}
	r := dialRaw(t, conn.Addr(), "v5", 5)
	if pk := r.read(); pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 {
		t.Fatalf("connect: %+v", pk)
	}
	// Each SUBSCRIBE also asks for mark, whose retained message ends what
	// that SUBSCRIBE sends.
	m := packets.Subscription{Filter: mark}
	for i, c := range []struct {
		sub  packets.Subscription
		want []string
	}{
		{packets.Subscription{Filter: tp, RetainHandling: 1}, []string{tp + " s1 true"}},
		{packets.Subscription{Filter: tp, RetainHandling: 1}, nil},
		{packets.Subscription{Filter: tp, RetainHandling: 0}, []string{tp + " s1 true"}},
		{packets.Subscription{Filter: "outpost/gw/devices/#", RetainHandling: 2}, nil},
		{packets.Subscription{Filter: "$share/g/outpost/gw/#"}, nil},
	} {
		id := uint16(i + 1)
		r.subscribe(id, c.sub, m)
		got := r.until(id, mark)
		if got[len(got)-1] != mark+" online true" {
			t.Fatalf("SUBSCRIBE %d: %q", id, got)
		}
		if got := got[:len(got)-1]; !slices.Equal(got, c.want) {
			t.Errorf("SUBSCRIBE %d %+v: got %q, want %q", id, c.sub, got, c.want)
		}
	}
	// Retain-as-published keeps the flag of a live message.
	rap := dialRaw(t, conn.Addr(), "rap", 5)
	rap.read() // CONNACK
	rap.subscribe(1, packets.Subscription{Filter: tp, RetainAsPublished: true, RetainHandling: 2})
	if pk := rap.read(); pk.FixedHeader.Type != packets.Suback {
		t.Fatalf("got %+v before the SUBACK", pk)
	}
	if err := conn.Publish(tp, []byte("s2"), true); err != nil {
		t.Fatal(err)
	}
	if pk := rap.read(); pk.FixedHeader.Type != packets.Publish || string(pk.Payload) != "s2" || !pk.FixedHeader.Retain {
		t.Errorf("live message %+v: want s2 with the retain flag (retain-as-published)", pk)
	}
}

// TestSlowClientNeverHoldsThePublisher: a client that subscribes and
// then never reads fills its connection and its queue; the agent's
// retained publishes and other apps' subscriptions go on, and the other
// apps get the last value.
func TestSlowClientNeverHoldsThePublisher(t *testing.T) {
	c, err := broker.Start(mqtt.Config{Node: "gw", Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	conn := c.(*broker.Conn)
	const tp = "outpost/gw/devices/default/air/reported"
	slow := dialRaw(t, conn.Addr(), "slow", 4)
	slow.subscribe(1, packets.Subscription{Filter: "#"})
	payload := bytes.Repeat([]byte("x"), 8<<10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 4000 { // 32 MiB: more than the socket buffers hold
			if i == 2000 {
				slow.subscribe(2, packets.Subscription{Filter: tp}) // a SUBACK that cannot be written
			}
			if err := conn.Publish(tp, append(payload, strconv.Itoa(i)...), true); err != nil {
				t.Error(err)
				return
			}
		}
		if err := conn.Publish(tp, []byte("last"), true); err != nil {
			t.Error(err)
		}
	}()
	wait.For(t, 60*time.Second, "the agent's publishes to finish", func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	})
	var mu sync.Mutex
	var last string
	app := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + conn.Addr()).SetClientID("app"))
	if tok := app.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer app.Disconnect(0)
	if tok := app.Subscribe(tp, 0, func(_ paho.Client, m paho.Message) {
		mu.Lock()
		last = string(m.Payload())
		mu.Unlock()
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	wait.For(t, 10*time.Second, "the app to get the last value", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return last == "last"
	})
}

// TestNoSysTopics: the broker keeps no $SYS messages (a SUBSCRIBE to
// $SYS/# and the node status gets the status alone; a $SYS message would
// be queued before it).
func TestNoSysTopics(t *testing.T) {
	c, err := broker.Start(mqtt.Config{Node: "gw", Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	conn := c.(*broker.Conn)
	const mark = "outpost/gw/status"
	if err := conn.Publish(mark, []byte("online"), true); err != nil {
		t.Fatal(err)
	}
	r := dialRaw(t, conn.Addr(), "sys", 4)
	r.read() // CONNACK
	r.subscribe(1, packets.Subscription{Filter: "$SYS/#"}, packets.Subscription{Filter: mark})
	if got := r.until(1, mark); !slices.Equal(got, []string{mark + " online true"}) {
		t.Errorf("got %q, want the status alone", got)
	}
}
