package mqtt_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"outpost.dev/agent/internal/testpki"
	"outpost.dev/agent/mqtt"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"a/+", "a/b", true},
		{"a/+", "a/", true},
		{"a/+", "a/b/c", false},
		{"a/+/c", "a/b/c", true},
		{"a/#", "a", true},
		{"a/#", "a/b/c", true},
		{"#", "a/b", true},
		{"#", "$SYS/broker", false},
		{"+/b", "$SYS/b", false},
		{"$SYS/#", "$SYS/broker", true},
		{"outpost/gw1/devices/+/+/desired/+", "outpost/gw1/devices/default/lamp/desired/on", true},
		{"outpost/gw1/devices/+/+/desired/+", "outpost/gw1/devices/default/lamp/desired", false},
	} {
		if got := mqtt.Match(c.filter, c.topic); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
	}
}

// A broker that restarts drops the agent's connection: the agent connects
// again, says it is online and subscribes again, so apps' desired writes
// reach the device.
func TestExternalBrokerRestart(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	stop := startMosquittoOn(t, addr)
	var logs syncWriter
	logs.w = &bytes.Buffer{}
	log := slog.New(slog.NewTextHandler(&logs, nil))
	conn, err := mqtt.Open(mqtt.Config{Node: node, URL: "tcp://" + addr, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, conn, mqtt.BridgeConfig{Log: log})
	a.put(t, "lamp", &wire.Device{Driver: "gpio-out", Pin: "GPIO17"})
	eventually(t, "connected", func() bool { return strings.Contains(logs.String(), "MQTT broker connected") })
	stop()
	eventually(t, "connection lost logged", func() bool { return strings.Contains(logs.String(), "MQTT broker connection lost") })
	if err := conn.Publish("x", []byte("y"), false); err != mqtt.ErrNotConnected {
		t.Errorf("Publish while the broker is down = %v, want ErrNotConnected", err)
	}
	startMosquittoOn(t, addr)
	app := dial(t, addr)
	app.sub(t, "outpost/"+node+"/status")
	// Reconnecting waits out the backoff the failed attempts built up.
	wait.For(t, 30*time.Second, "online again", func() bool { b, _ := app.last("outpost/" + node + "/status"); return string(b) == "online" })
	app.sub(t, topic("lamp", "reported/on"))
	eventually(t, "lamp state republished", func() bool { _, ok := app.last(topic("lamp", "reported/on")); return ok })
	app.pub(t, topic("lamp", "desired/on"), "true")
	eventually(t, "desired write after the restart reaches the pin", func() bool { return a.sim.Pins["GPIO17"].Read() == true })
}

// A broker is untrusted: a refusal is logged saying what to check, and a
// packet over the size limit ends the connection instead of being read;
// the agent keeps retrying either way.
func TestExternalBrokerRefusalsAndOversizedPackets(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var logs syncWriter
	logs.w = &bytes.Buffer{}
	conn, err := mqtt.Open(mqtt.Config{Node: node, URL: "tcp://" + l.Addr().String(), Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// accept takes the agent's next connection and its CONNECT packet.
	accept := func() net.Conn {
		t.Helper()
		l.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second))
		c, err := l.Accept()
		if err != nil {
			t.Fatalf("the agent did not connect again: %v", err)
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		hdr := make([]byte, 2)
		if _, err := io.ReadFull(c, hdr); err != nil || hdr[0] != 0x10 || hdr[1] >= 0x80 {
			t.Fatalf("CONNECT header %x: %v", hdr, err)
		}
		if _, err := io.ReadFull(c, make([]byte, hdr[1])); err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := accept()
	c.Write([]byte{0x20, 2, 0, 4}) // CONNACK: bad username or password
	c.Close()
	eventually(t, "refusal logged", func() bool { return strings.Contains(logs.String(), "check mqtt.username and mqtt.password") })

	c = accept()
	c.Write([]byte{0x20, 2, 0, 0})          // CONNACK: accepted
	c.Write([]byte{0x30, 0x80, 0x80, 0x40}) // a 1 MiB PUBLISH follows
	eventually(t, "oversized packet refused", func() bool { return strings.Contains(logs.String(), "over the 65536-byte limit") })
	c.Close()
	accept().Close()
}

// The agent does not keep mochi-mqtt's test fixture table (built at init,
// about 360 KB of heap) alive.
func TestMochiFixturesDropped(t *testing.T) {
	if packets.TPacketData != nil {
		t.Fatalf("packets.TPacketData holds %d packet types after init: the agent keeps mochi-mqtt's test fixtures in memory", len(packets.TPacketData))
	}
}

// A broker that stops reading never blocks the agent: Publish queues a
// bounded number of packets, then drops with ErrQueueFull at once.
func TestExternalBrokerNotReading(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	conn, err := mqtt.Open(mqtt.Config{Node: node, URL: "tcp://" + l.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	l.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second))
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(c, hdr); err != nil {
		t.Fatal(err)
	}
	io.ReadFull(c, make([]byte, hdr[1]))
	c.Write([]byte{0x20, 2, 0, 0}) // CONNACK, then nothing is read again
	eventually(t, "connected", func() bool { return conn.Publish("probe", nil, false) == nil })

	payload := bytes.Repeat([]byte("x"), 32<<10)
	start := time.Now()
	full := false
	for i := 0; i < 10000 && !full; i++ {
		err := conn.Publish("outpost/"+node+"/flood", payload, false)
		switch err {
		case nil:
		case mqtt.ErrQueueFull:
			full = true
		default:
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
	if !full {
		t.Fatal("10,000 publishes of 32 KiB to a broker that does not read were all accepted: the queue is not bounded")
	}
	// A Publish that waited on the broker would take the 10 s write
	// timeout; filling the queue takes milliseconds.
	if d := time.Since(start); d > 9*time.Second {
		t.Errorf("publishing until the queue was full took %s: Publish waited on the broker", d)
	}
}

// ssl:// URLs speak TLS and check the broker's certificate against
// caFile; without it the system roots, which do not know a private CA.
func TestExternalBrokerTLS(t *testing.T) {
	ca := testpki.NewCA(t, "mqtt-test-ca")
	srv := ca.ServerTLS(t).Certificates[0]
	keyDER, err := x509.MarshalPKCS8PrivateKey(srv.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	// Started as root, mosquitto would switch to its own user, which
	// cannot read the test's private directory.
	startMosquittoOn(t, addr, "certfile "+file("server.pem", "CERTIFICATE", srv.Certificate[0]),
		"keyfile "+file("server.key", "PRIVATE KEY", keyDER), "user root")
	caFile := file("ca.pem", "CERTIFICATE", ca.Cert.Raw)

	logs := syncWriter{w: &bytes.Buffer{}}
	conn, err := mqtt.Open(mqtt.Config{Node: node, URL: "ssl://" + addr, CAFile: caFile, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got := make(chan string, 64)
	conn.Subscribe("apps/#", func(topic string, payload []byte) {
		select {
		case got <- topic + " " + string(payload):
		default:
		}
	})
	// The broker sends the agent's own message back to its subscription:
	// both directions went through TLS.
	eventually(t, "a message round trip over TLS", func() bool {
		conn.Publish("apps/hello", []byte("world"), false)
		select {
		case m := <-got:
			return m == "apps/hello world"
		default:
			return false
		}
	})

	logs2 := syncWriter{w: &bytes.Buffer{}}
	bad, err := mqtt.Open(mqtt.Config{Node: "other", URL: "ssl://" + addr, Log: slog.New(slog.NewTextHandler(&logs2, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	eventually(t, "untrusted certificate refused", func() bool {
		return strings.Contains(logs2.String(), "MQTT broker unreachable") && strings.Contains(logs2.String(), "certificate")
	})
}
