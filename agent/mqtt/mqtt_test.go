package mqtt_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"outpost.dev/agent/mqtt"
	"outpost.dev/agent/mqtt/broker"
	_ "outpost.dev/agent/mqtt/kubeedge"
	"outpost.dev/agent/outbox"
	"outpost.dev/agent/store"
	"outpost.dev/agent/twins"
	_ "outpost.dev/hal/all"
	"outpost.dev/hal/sim"
	"outpost.dev/test/harness"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

const node = "gw1"

// agent is the agent's twins and MQTT side on the sim board, with the real
// store and outbox.
type agent struct {
	st     *store.Store
	ob     *outbox.Outbox
	sim    *sim.Sim
	loop   *twins.Loop
	bridge *mqtt.Bridge
	conn   mqtt.Conn
	ver    int
}

func startAgent(t testing.TB, conn mqtt.Conn, bcfg mqtt.BridgeConfig) *agent {
	t.Helper()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ob, err := outbox.Open(st.Bolt(), outbox.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	changes := make(chan struct{}, 1)
	a := &agent{st: st, ob: ob, sim: sim.New(nil), conn: conn}
	bcfg.Node = node
	a.bridge, err = mqtt.NewBridge(conn, bcfg)
	if err != nil {
		t.Fatal(err)
	}
	a.loop = twins.New(twins.Config{Source: st, Changes: changes, Buses: a.sim, Outbox: ob, Publisher: a.bridge, Resync: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	if err := a.bridge.Start(ctx, a.loop); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); a.loop.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		conn.Close()
		st.Close()
	})
	return a
}

// put stores a Device the way a relay sync does.
func (a *agent) put(t testing.TB, name string, d *wire.Device) {
	t.Helper()
	a.ver++
	_, err := a.st.ApplySync(&wire.Sync{Upserts: []wire.Object{{
		Kind: wire.KindDevice, UID: "uid-" + name, Namespace: "default", Name: name,
		Version: strconv.Itoa(a.ver), Device: d,
	}}})
	if err != nil {
		t.Fatal(err)
	}
}

func embedded(t testing.TB) (mqtt.Conn, string) {
	t.Helper()
	c, err := mqtt.Open(mqtt.Config{Node: node, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	return c, c.(*broker.Conn).Addr()
}

// client is an app on the gateway: a paho client.
type client struct {
	c    paho.Client
	mu   sync.Mutex
	msgs map[string][][]byte
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	cl := &client{msgs: map[string][][]byte{}}
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(fmt.Sprintf("app-%d", time.Now().UnixNano())).
		SetConnectTimeout(5 * time.Second)
	cl.c = paho.NewClient(o)
	if tok := cl.c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("paho connect to %s: %v", addr, tok.Error())
	}
	t.Cleanup(func() { cl.c.Disconnect(100) })
	return cl
}

func (cl *client) sub(t testing.TB, filter string) {
	t.Helper()
	tok := cl.c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		cl.mu.Lock()
		cl.msgs[m.Topic()] = append(cl.msgs[m.Topic()], bytes.Clone(m.Payload()))
		cl.mu.Unlock()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
}

func (cl *client) pub(t testing.TB, topic, payload string) {
	t.Helper()
	if tok := cl.c.Publish(topic, 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// last returns the last message on topic.
func (cl *client) last(topic string) ([]byte, bool) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	m := cl.msgs[topic]
	if len(m) == 0 {
		return nil, false
	}
	return m[len(m)-1], true
}

func (cl *client) count(topic string) int {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return len(cl.msgs[topic])
}

func eventually(t testing.TB, what string, ok func() bool) {
	t.Helper()
	wait.For(t, 10*time.Second, what, ok)
}

func topic(name, suffix string) string {
	return "outpost/" + node + "/devices/default/" + name + "/" + suffix
}

type reading struct {
	Value any    `json:"value"`
	Unit  string `json:"unit"`
	At    string `json:"at"`
}

func checkReported(t testing.TB, payload []byte) map[string]reading {
	t.Helper()
	var m map[string]reading
	if err := json.Unmarshal(payload, &m); err != nil {
		t.Fatalf("reported is not JSON: %v: %s", err, payload)
	}
	temp, ok := m["temperature"].Value.(float64)
	if !ok || temp < 19 || temp > 23 || m["temperature"].Unit == "" {
		t.Fatalf("reported temperature %+v, want about 21 with a unit: %s", m["temperature"], payload)
	}
	if _, err := time.Parse(time.RFC3339Nano, m["temperature"].At); err != nil {
		t.Fatalf("at: %v", err)
	}
	for _, p := range []string{"humidity", "pressure"} {
		if _, ok := m[p].Value.(float64); !ok {
			t.Fatalf("reported lacks %s: %s", p, payload)
		}
	}
	return m
}

func bme(poll int64) *wire.Device {
	d := &wire.Device{Driver: "bme280", Bus: "I2C1", Address: 0x76}
	if poll > 0 {
		for _, p := range []string{"temperature", "humidity", "pressure"} {
			d.Properties = append(d.Properties, wire.DeviceProperty{Name: p, PollMillis: poll})
		}
	}
	return d
}

func TestEmbeddedBrokerPublishesToPaho(t *testing.T) {
	conn, addr := embedded(t)
	a := startAgent(t, conn, mqtt.BridgeConfig{})
	app := dial(t, addr)
	app.sub(t, "outpost/"+node+"/#")
	a.put(t, "air", bme(0))

	eventually(t, "reported JSON", func() bool { _, ok := app.last(topic("air", "reported")); return ok })
	b, _ := app.last(topic("air", "reported"))
	checkReported(t, b)
	eventually(t, "per-property topic", func() bool { _, ok := app.last(topic("air", "reported/temperature")); return ok })
	b, _ = app.last(topic("air", "reported/temperature"))
	if f, err := strconv.ParseFloat(string(b), 64); err != nil || f < 19 || f > 23 {
		t.Fatalf("reported/temperature = %q", b)
	}
	eventually(t, "device status", func() bool { _, ok := app.last(topic("air", "status")); return ok })
	b, _ = app.last(topic("air", "status"))
	if !strings.Contains(string(b), `"connected":true`) {
		t.Errorf("status = %s", b)
	}
	if b, ok := app.last("outpost/" + node + "/status"); !ok || string(b) != "online" {
		t.Errorf("node status = %q %v", b, ok)
	}
	// The same readings went upstream through the outbox (queued just
	// after they are published).
	eventually(t, "a twin report in the outbox", func() bool { es, err := a.ob.Pending(0, 10); return err != nil || len(es) > 0 })
	es, err := a.ob.Pending(0, 10)
	if err != nil || len(es) == 0 || es[0].Key != "device/default/air" || es[0].Type != wire.TypeTwinReport {
		t.Fatalf("outbox: %v %+v", err, es)
	}
	// A new subscriber gets the retained state at once.
	late := dial(t, addr)
	late.sub(t, topic("air", "reported"))
	eventually(t, "retained reported", func() bool { _, ok := late.last(topic("air", "reported")); return ok })

	// Apps may not publish on the agent's reported topics: the broker
	// drops the publication and the client.
	late.sub(t, topic("air", "reported/temperature"))
	late.sub(t, "apps/fence")
	app.pub(t, topic("air", "reported/temperature"), "99")
	eventually(t, "the offending app disconnected", func() bool { return !app.c.IsConnectionOpen() })
	// Had the broker passed the publication on, it would have queued it
	// for late before dropping app; late's queue is in order, so it would
	// arrive before late's own later publication.
	late.pub(t, "apps/fence", "after")
	eventually(t, "the fence delivered", func() bool { b, _ := late.last("apps/fence"); return string(b) == "after" })
	if b, _ := late.last(topic("air", "reported/temperature")); string(b) == "99" {
		t.Fatal("an app's publication on a reported topic reached a subscriber")
	}
	// Compare values, not text: a reading or timestamp may contain "99".
	if b, _ := app.last(topic("air", "reported/temperature")); string(b) == "99" {
		t.Fatal("an app overwrote reported state")
	}
	b, _ = late.last(topic("air", "reported"))
	var rep map[string]struct {
		Value float64 `json:"value"`
	}
	if err := json.Unmarshal(b, &rep); err != nil || rep["temperature"].Value == 99 {
		t.Fatalf("reported after an app's write: %s (%v)", b, err)
	}
}

func TestDesiredOverMQTT(t *testing.T) {
	conn, addr := embedded(t)
	a := startAgent(t, conn, mqtt.BridgeConfig{})
	app := dial(t, addr)
	app.sub(t, topic("lamp", "#"))
	a.put(t, "lamp", &wire.Device{Driver: "gpio-out", Pin: "GPIO17"})
	eventually(t, "lamp off", func() bool { b, _ := app.last(topic("lamp", "reported/on")); return string(b) == "false" })

	app.pub(t, topic("lamp", "desired/on"), "true")
	eventually(t, "sim pin high", func() bool { return a.sim.Pins["GPIO17"].Read() == true })
	eventually(t, "reported on", func() bool { b, _ := app.last(topic("lamp", "reported/on")); return string(b) == "true" })

	app.pub(t, topic("lamp", "desired"), `{"on": false}`)
	eventually(t, "sim pin low", func() bool { return a.sim.Pins["GPIO17"].Read() == false })
	app.pub(t, topic("lamp", "desired/on"), `{"value": 1}`)
	eventually(t, "sim pin high again", func() bool { return a.sim.Pins["GPIO17"].Read() == true })
	// The bridge counts a write after the device took it.
	eventually(t, "3 accepted", func() bool { return a.bridge.Stats().Accepted == 3 })
	if s := a.bridge.Stats(); s.Accepted != 3 || s.Rejected != 0 {
		t.Errorf("stats %+v, want 3 accepted", s)
	}
}

func TestGarbageOnDesiredIsRejected(t *testing.T) {
	conn, addr := embedded(t)
	logs := &syncWriter{w: &bytes.Buffer{}}
	a := startAgent(t, conn, mqtt.BridgeConfig{Log: slog.New(slog.NewTextHandler(logs, nil))})
	app := dial(t, addr)
	app.sub(t, topic("+", "errors"))
	a.put(t, "lamp", &wire.Device{Driver: "gpio-out", Pin: "GPIO4"})
	a.put(t, "air", bme(0))
	eventually(t, "devices up", func() bool { return a.loop.Stats().Connected == 2 })

	cases := []struct{ topic, payload, want string }{
		{topic("lamp", "desired/on"), "abc", "not a number"},
		{topic("lamp", "desired/on"), `"true"`, "not a number"},
		{topic("lamp", "desired/on"), "7", "takes true or false"},
		{topic("lamp", "desired"), "{not json", "JSON object"},
		{topic("lamp", "desired/brightness"), "1", "unknown property"},
		{topic("air", "desired/temperature"), "25", "read-only"},
		{topic("ghost", "desired/on"), "true", "no such device"},
	}
	for _, c := range cases {
		app.pub(t, c.topic, c.payload)
	}
	eventually(t, "all rejected", func() bool { return a.bridge.Stats().Rejected == int64(len(cases)) })
	eventually(t, "reasons published", func() bool {
		return app.count(topic("lamp", "errors"))+app.count(topic("air", "errors"))+app.count(topic("ghost", "errors")) == len(cases)
	})
	var all []string
	for _, d := range []string{"lamp", "air", "ghost"} {
		app.mu.Lock()
		for _, m := range app.msgs[topic(d, "errors")] {
			all = append(all, string(m))
		}
		app.mu.Unlock()
	}
	joined := strings.Join(all, "\n")
	for _, c := range cases {
		if !strings.Contains(joined, c.want) {
			t.Errorf("no error saying %q for %s %q in:\n%s", c.want, c.topic, c.payload, joined)
		}
	}
	if a.sim.Pins["GPIO4"].Read() {
		t.Error("garbage switched the lamp on")
	}
	if !strings.Contains(logs.String(), "MQTT message refused") {
		t.Errorf("refusals not logged: %s", logs.String())
	}
}

func TestDenyPolicy(t *testing.T) {
	conn, addr := embedded(t)
	a := startAgent(t, conn, mqtt.BridgeConfig{Writes: mqtt.DenyWrites})
	app := dial(t, addr)
	app.sub(t, topic("lamp", "errors"))
	a.put(t, "lamp", &wire.Device{Driver: "gpio-out", Pin: "GPIO6"})
	eventually(t, "lamp up", func() bool { return a.loop.Stats().Connected == 1 })
	app.pub(t, topic("lamp", "desired/on"), "true")
	eventually(t, "refusal", func() bool { b, _ := app.last(topic("lamp", "errors")); return strings.Contains(string(b), "disabled") })
	if a.sim.Pins["GPIO6"].Read() {
		t.Fatal("deny policy let a write through")
	}
}

func TestEmbeddedBrokerAuth(t *testing.T) {
	c, err := mqtt.Open(mqtt.Config{Node: node, Listen: "127.0.0.1:0", Username: "app", Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addr := c.(*broker.Conn).Addr()
	for _, pw := range []string{"", "wrong"} {
		o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("x").SetUsername("app").SetPassword(pw)
		cl := paho.NewClient(o)
		tok := cl.Connect()
		tok.WaitTimeout(5 * time.Second)
		if tok.Error() == nil {
			cl.Disconnect(0)
			t.Fatalf("connected with password %q", pw)
		}
	}
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("y").SetUsername("app").SetPassword("s3cret")
	cl := paho.NewClient(o)
	if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("right password refused: %v", tok.Error())
	}
	cl.Disconnect(0)
}

func TestKubeEdgeTopics(t *testing.T) {
	conn, addr := embedded(t)
	a := startAgent(t, conn, mqtt.BridgeConfig{Dialects: []string{"kubeedge"}})
	app := dial(t, addr)
	app.sub(t, "$hw/events/device/#")
	a.put(t, "lamp", &wire.Device{Driver: "gpio-out", Pin: "GPIO9"})
	eventually(t, "twin document", func() bool { _, ok := app.last("$hw/events/device/lamp/twin/update/document"); return ok })
	b, _ := app.last("$hw/events/device/lamp/twin/update/document")
	var doc struct {
		Twin map[string]struct {
			Current struct {
				Actual struct{ Value string } `json:"actual"`
			} `json:"current"`
		} `json:"twin"`
	}
	if err := json.Unmarshal(b, &doc); err != nil || doc.Twin["on"].Current.Actual.Value != "false" {
		t.Fatalf("document %s: %v", b, err)
	}
	app.pub(t, "$hw/events/device/lamp/twin/update", `{"event_id":"e1","twin":{"on":{"expected":{"value":"true"}}}}`)
	eventually(t, "sim pin high", func() bool { return a.sim.Pins["GPIO9"].Read() == true })
	eventually(t, "update result", func() bool {
		b, _ := app.last("$hw/events/device/lamp/twin/update/result")
		return strings.Contains(string(b), `"e1"`) && strings.Contains(string(b), `"actual":{"value":"true"`)
	})
	app.pub(t, "$hw/events/device/lamp/twin/get", `{"event_id":"g1"}`)
	eventually(t, "get result", func() bool {
		b, _ := app.last("$hw/events/device/lamp/twin/get/result")
		return strings.Contains(string(b), `"g1"`)
	})
	app.pub(t, "$hw/events/device/lamp/twin/update", `{"twin":{"on":{"expected":{"value":"maybe"}}}}`)
	eventually(t, "garbage rejected", func() bool { return a.bridge.Stats().Rejected == 1 })
}

func TestMosquittoSubSeesRetainedReported(t *testing.T) {
	sub := harness.RequireTool(t, "mosquitto_sub", "mosquitto-clients")
	conn, addr := embedded(t)
	a := startAgent(t, conn, mqtt.BridgeConfig{})
	a.put(t, "air", bme(0))
	eventually(t, "first report", func() bool { return a.loop.Stats().Reports > 0 })
	seen := dial(t, addr)
	seen.sub(t, topic("air", "reported"))
	eventually(t, "the reported state retained", func() bool { _, ok := seen.last(topic("air", "reported")); return ok })
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command(sub, "-h", host, "-p", port, "-t", topic("air", "reported"), "-C", "1", "-W", "10").CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_sub: %v: %s", err, out)
	}
	checkReported(t, bytes.TrimSpace(out))
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startMosquitto runs Debian's mosquitto on a free loopback port.
func startMosquitto(t testing.TB) string {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startMosquittoOn(t, addr)
	return addr
}

// startMosquittoOn runs Debian's mosquitto on addr until the test ends or
// the returned function stops it; conf lines are added to its listener's.
func startMosquittoOn(t testing.TB, addr string, conf ...string) (stop func()) {
	bin := harness.RequireTool(t, "mosquitto", "mosquitto")
	_, port, _ := net.SplitHostPort(addr)
	file := filepath.Join(t.TempDir(), "mosquitto.conf")
	os.WriteFile(file, []byte(fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n%s", port,
		strings.Join(append(conf, ""), "\n"))), 0o644)
	cmd := exec.Command(bin, "-c", file)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() { once.Do(func() { cmd.Process.Kill(); cmd.Wait() }) }
	t.Cleanup(stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mosquitto's output:\n%s", out.String())
		}
	})
	eventually(t, "mosquitto listening", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return stop
}

func TestExternalMosquitto(t *testing.T) {
	addr := startMosquitto(t)
	conn, err := mqtt.Open(mqtt.Config{Node: node, URL: "tcp://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	app := dial(t, addr)
	app.sub(t, "outpost/"+node+"/#")
	a := startAgent(t, conn, mqtt.BridgeConfig{})
	a.put(t, "air", bme(0))
	a.put(t, "lamp", &wire.Device{Driver: "gpio-out", Pin: "GPIO17"})
	eventually(t, "reported via mosquitto", func() bool { _, ok := app.last(topic("air", "reported")); return ok })
	b, _ := app.last(topic("air", "reported"))
	checkReported(t, b)
	eventually(t, "node online", func() bool { b, _ := app.last("outpost/" + node + "/status"); return string(b) == "online" })
	eventually(t, "lamp reported", func() bool { b, _ := app.last(topic("lamp", "reported/on")); return string(b) == "false" })
	app.pub(t, topic("lamp", "desired/on"), "true")
	eventually(t, "sim pin high", func() bool { return a.sim.Pins["GPIO17"].Read() == true })
	eventually(t, "reported on", func() bool { b, _ := app.last(topic("lamp", "reported/on")); return string(b) == "true" })
	app.pub(t, topic("lamp", "desired/on"), "nonsense")
	eventually(t, "garbage rejected", func() bool { return a.bridge.Stats().Rejected == 1 })
	conn.Close()
	eventually(t, "node offline", func() bool { b, _ := app.last("outpost/" + node + "/status"); return string(b) == "offline" })
}

// A broker that is down is one log line, not one per attempt; the agent
// connects when it comes up and publishes the state it has.
func TestExternalBrokerDownThenUp(t *testing.T) {
	bin := harness.RequireTool(t, "mosquitto", "mosquitto")
	port := freePort(t)
	var logs syncWriter
	var buf bytes.Buffer
	logs.w = &buf
	log := slog.New(slog.NewTextHandler(&logs, nil))
	conn, err := mqtt.Open(mqtt.Config{Node: node, URL: fmt.Sprintf("tcp://127.0.0.1:%d", port), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, conn, mqtt.BridgeConfig{Log: log})
	a.put(t, "air", bme(0))
	// Attempts at 0, 1 and 3 s: the line is logged as the first one fails.
	eventually(t, "three failed attempts", func() bool { return mqtt.FailedAttempts(conn) >= 3 })
	if n := strings.Count(logs.String(), "MQTT broker unreachable"); n != 1 {
		t.Fatalf("%d 'unreachable' lines for %d failed attempts, want 1:\n%s", n, mqtt.FailedAttempts(conn), logs.String())
	}
	if a.loop.Stats().Reports == 0 {
		t.Fatal("twins stopped while the broker was down")
	}

	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n", port)), 0o644)
	cmd := exec.Command(bin, "-c", conf)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// The next attempt may be up to 8 s away (backoff), more on a loaded
	// machine.
	wait.For(t, 30*time.Second, "connected", func() bool { return strings.Contains(logs.String(), "MQTT broker connected") })
	app := dial(t, fmt.Sprintf("127.0.0.1:%d", port))
	app.sub(t, topic("air", "reported"))
	eventually(t, "state republished", func() bool { _, ok := app.last(topic("air", "reported")); return ok })
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

// TestLateSubscriberGetsRetainedState: an app subscribing after the
// devices reported gets every device's retained reported, per-property
// and status messages, marked retained, through exact and wildcard
// filters; a removed device's are gone, and live messages keep flowing
// after the retained ones.
func TestLateSubscriberGetsRetainedState(t *testing.T) {
	conn, addr := embedded(t)
	a := startAgent(t, conn, mqtt.BridgeConfig{})
	a.put(t, "air", bme(0))
	a.put(t, "gone", &wire.Device{Driver: "sht3x", Bus: "I2C1", Address: 0x44})
	wait.For(t, 10*time.Second, "both devices connected", func() bool { return a.loop.Stats().Connected == 2 })
	early := dial(t, addr)
	early.sub(t, "outpost/"+node+"/devices/#")
	eventually(t, "both devices' state", func() bool {
		_, g := early.last(topic("gone", "status"))
		_, a := early.last(topic("air", "reported/pressure"))
		return g && a
	})
	if _, err := a.st.ApplySync(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindDevice, UID: "uid-gone"}}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "gone's status cleared", func() bool { b, ok := early.last(topic("gone", "status")); return ok && len(b) == 0 })

	type msg struct {
		payload  string
		retained bool
	}
	for _, filter := range []string{"outpost/" + node + "/devices/#", "outpost/+/devices/default/+/reported/+", topic("air", "status"), "#"} {
		t.Run(filter, func(t *testing.T) {
			var mu sync.Mutex
			got := map[string]msg{}
			late := dial(t, addr)
			tok := late.c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
				mu.Lock()
				// Live messages may come too, without the flag.
				got[m.Topic()] = msg{string(m.Payload()), got[m.Topic()].retained || m.Retained()}
				mu.Unlock()
			})
			if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("subscribe %s: %v", filter, tok.Error())
			}
			want := map[string]bool{}
			switch filter {
			case topic("air", "status"):
				want[topic("air", "status")] = true
			case "outpost/+/devices/default/+/reported/+":
				for _, p := range []string{"temperature", "humidity", "pressure"} {
					want[topic("air", "reported/"+p)] = true
				}
			default:
				want[topic("air", "status")], want[topic("air", "reported")] = true, true
				for _, p := range []string{"temperature", "humidity", "pressure"} {
					want[topic("air", "reported/"+p)] = true
				}
			}
			wait.For(t, 10*time.Second, "the retained state", func() bool {
				mu.Lock()
				defer mu.Unlock()
				for tp := range want {
					if m, ok := got[tp]; !ok || m.payload == "" {
						return false
					}
				}
				return true
			})
			mu.Lock()
			defer mu.Unlock()
			for tp, m := range got {
				if strings.Contains(tp, "/gone/") {
					t.Errorf("the removed device's %s was retained: %q", tp, m.payload)
				}
				if want[tp] && !m.retained {
					t.Errorf("%s never arrived with the retain flag", tp)
				}
				if !want[tp] && filter != "#" && strings.HasPrefix(tp, "outpost/") {
					t.Errorf("%s does not match %s", tp, filter)
				}
				if strings.HasPrefix(tp, "$") {
					t.Errorf("%s matched %s", tp, filter)
				}
			}
		})
	}
}
