package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
	"outpost.dev/test/wait"
)

// Devices on the sim board, end to end: kubectl apply → relay → agent →
// hal (sim) → MQTT and twin reports → relay → Device status.

const reportInterval = time.Second

// deviceYAML is a Device for node with the given driver and connection.
func deviceYAML(name, node, driver, conn, props string) string {
	return fmt.Sprintf(`apiVersion: outpost.dev/v1alpha1
kind: Device
metadata:
  name: %s
  namespace: default
spec:
  nodeName: %s
  driver: %s
  connection: {%s}
%s`, name, node, driver, conn, props)
}

const bmeProps = `  properties:
    - {name: temperature, type: float, unit: "°C", pollInterval: 200ms, reportInterval: 1s}
    - {name: humidity, type: float, unit: "%RH", pollInterval: 200ms, reportInterval: 1s}
    - {name: pressure, type: float, unit: hPa, pollInterval: 200ms, reportInterval: 1s}
`

const lampProps = `  properties:
    - {name: "on", type: bool, access: ReadWrite, pollInterval: 200ms, reportInterval: 1s}
`

func kubectlApply(t *testing.T, ctx context.Context, yaml string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "device.yaml")
	if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := st.CP.Kubectl(ctx, "apply", "-f", f); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// deviceStatus is the part of a Device the tests read.
type deviceStatus struct {
	Status struct {
		Summary  string `json:"summary"`
		Reported map[string]struct {
			Value any    `json:"value"`
			Unit  string `json:"unit"`
			At    string `json:"at"`
		} `json:"reported"`
		Conditions []struct {
			Type, Status, Reason, Message string
		} `json:"conditions"`
	} `json:"status"`
}

func (d *deviceStatus) cond(typ string) (status, msg string) {
	for _, c := range d.Status.Conditions {
		if c.Type == typ {
			return c.Status, c.Message
		}
	}
	return "", ""
}

// getDevice reads a Device with kubectl get -o json.
func getDevice(ctx context.Context, name string) (*deviceStatus, string, error) {
	out, err := st.CP.Kubectl(ctx, "get", "device", name, "-n", "default", "-o", "json")
	if err != nil {
		return nil, out, err
	}
	var d deviceStatus
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		return nil, out, err
	}
	return &d, out, nil
}

// waitDevice polls the Device until ok says so, or fails after timeout.
func waitDevice(t *testing.T, ctx context.Context, name string, timeout time.Duration, what string, ok func(*deviceStatus) bool) *deviceStatus {
	t.Helper()
	var d *deviceStatus
	wait.State(t, ctx, timeout, "device "+name+": "+what, func() (bool, string) {
		got, out, err := getDevice(ctx, name)
		d = got
		return err == nil && ok(got), "\n" + out
	})
	return d
}

func hasValues(names ...string) func(*deviceStatus) bool {
	return func(d *deviceStatus) bool {
		for _, n := range names {
			if _, ok := d.Status.Reported[n]; !ok {
				return false
			}
		}
		return true
	}
}

// deviceAgent joins and starts an agent of its own for the device tests,
// with mqttConfig added to its config's mqtt block.
func deviceAgent(t *testing.T, ctx context.Context, name, mqttConfig string) *stack.Agent {
	t.Helper()
	a, err := st.Join(ctx, relay, name)
	if err != nil {
		t.Fatal(err)
	}
	a.MQTTConfig = mqttConfig
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	agents[name] = a
	t.Cleanup(func() { a.Stop() })
	if err := st.WaitNodeReady(ctx, name, true, 60*time.Second); err != nil {
		t.Fatalf("%v\nagent log:\n%s", err, a.Proc.LogTail(30))
	}
	return a
}

// mosquittoSub runs mosquitto_sub for count messages on topic and returns
// them, one a line.
func mosquittoSub(ctx context.Context, addr, topic string, count int) (string, error) {
	host, port, _ := strings.Cut(addr, ":")
	cmd := exec.CommandContext(ctx, "mosquitto_sub", "-h", host, "-p", port, "-t", topic, "-v",
		"-C", strconv.Itoa(count), "-W", "10")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("mosquitto_sub -t %s: %v: %s", topic, err, out)
	}
	return string(out), nil
}

// mosquittoSubscribed starts mosquitto_sub for count messages on topic and
// returns once the broker has acknowledged the subscription (its -d output
// says SUBACK); out then gives what it printed when it ends.
func mosquittoSubscribed(t *testing.T, ctx context.Context, addr, topic string, count int) (out func() string) {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	// Line-buffered (coreutils' stdbuf): into a pipe, mosquitto_sub's
	// stdio would hold the SUBACK line until it exits.
	cmd := exec.CommandContext(ctx, "stdbuf", "-oL", "mosquitto_sub", "-d", "-h", host, "-p", port, "-t", topic, "-v",
		"-C", strconv.Itoa(count), "-W", "10")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("mosquitto_sub: %v", err)
	}
	var (
		mu  sync.Mutex
		buf strings.Builder
	)
	text := func() string { mu.Lock(); defer mu.Unlock(); return buf.String() }
	subacked := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for acked := false; sc.Scan(); {
			mu.Lock()
			buf.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if !acked && strings.Contains(sc.Text(), "SUBACK") {
				acked = true
				close(subacked)
			}
		}
	}()
	go func() { err := cmd.Wait(); pw.CloseWithError(err) }()
	select {
	case <-subacked:
	case <-done:
		t.Fatalf("mosquitto_sub ended before subscribing: %s", text())
	case <-time.After(10 * time.Second):
		t.Fatalf("mosquitto_sub not subscribed within 10s: %s", text())
	}
	return func() string { <-done; return text() }
}

func mosquittoPub(t *testing.T, ctx context.Context, addr, topic, msg string) {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	if out, err := exec.CommandContext(ctx, "mosquitto_pub", "-h", host, "-p", port, "-t", topic, "-m", msg).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub -t %s -m %q: %v: %s", topic, msg, err, out)
	}
}

// TestDevices runs the Device flows against the agent's embedded broker.
func TestDevices(t *testing.T) {
	needStack(t)
	for _, tool := range []string{"mosquitto_sub", "mosquitto_pub"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install Debian's mosquitto-clients", tool)
		}
	}
	ctx := ctxFor(t, 3*time.Minute)
	a := deviceAgent(t, ctx, "dev-gw", "")
	deviceFlows(t, ctx, a, "emb")
}

// TestDevicesExternalMosquitto runs the same flows with the agent on an
// external Mosquitto (Debian's) instead of its embedded broker.
func TestDevicesExternalMosquitto(t *testing.T) {
	needStack(t)
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/mosquitto"); err != nil {
			t.Fatal("mosquitto not found: install Debian's mosquitto")
		}
	}
	ctx := ctxFor(t, 3*time.Minute)
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n", port)), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := harness.StartProcess("mosquitto", exec.Command(bin, "-c", conf), filepath.Join(st.Dir, "logs", "mosquitto.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(5 * time.Second) })
	addr := "127.0.0.1:" + strconv.Itoa(port)
	a := deviceAgent(t, ctx, "dev-ext", "url: tcp://"+addr)
	a.MQTTAddr = addr // clients talk to Mosquitto
	deviceFlows(t, ctx, a, "ext")
}

func deviceFlows(t *testing.T, ctx context.Context, a *stack.Agent, prefix string) {
	node := a.Name
	bme, lamp := prefix+"-bme", prefix+"-lamp"
	topic := func(dev, rest string) string { return "outpost/" + node + "/devices/default/" + dev + "/" + rest }
	t.Cleanup(func() {
		st.CP.Kubectl(context.Background(), "delete", "device", "-n", "default", "--ignore-not-found", "--wait=false",
			bme, lamp, prefix+"-nodriver", prefix+"-nobus", prefix+"-noaddr")
	})

	applied := time.Now()
	kubectlApply(t, ctx, deviceYAML(bme, node, "bme280", `bus: I2C1, address: "0x76"`, bmeProps))
	kubectlApply(t, ctx, deviceYAML(lamp, node, "gpio-out", `pin: GPIO17`, lampProps))

	t.Run("reported", func(t *testing.T) {
		// Within two report intervals of the device opening; the sync and
		// the open add well under a second on top.
		d := waitDevice(t, ctx, bme, 2*reportInterval+3*time.Second, "temperature, humidity and pressure",
			hasValues("temperature", "humidity", "pressure"))
		t.Logf("reported %.1fs after apply: %s", time.Since(applied).Seconds(), d.Status.Summary)
		if s, _ := d.cond("Connected"); s != "True" {
			t.Errorf("Connected = %q, want True", s)
		}
		temp := d.Status.Reported["temperature"]
		if v, ok := temp.Value.(float64); !ok || v < -40 || v > 85 || temp.Unit != "°C" {
			t.Errorf("temperature = %v %q, want a plausible value in °C", temp.Value, temp.Unit)
		}
		if p, _ := d.Status.Reported["pressure"].Value.(float64); p < 300 || p > 1100 {
			t.Errorf("pressure = %v hPa, implausible", p)
		}
		firstAt := temp.At
		waitDevice(t, ctx, bme, 3*reportInterval+2*time.Second, "a newer temperature", func(d *deviceStatus) bool {
			return d.Status.Reported["temperature"].At != firstAt
		})
		out, err := st.CP.Kubectl(ctx, "get", "devices", "-n", "default", "-o", "wide")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("kubectl get devices -o wide:\n%s", out)
		for _, col := range []string{"NODE", "DRIVER", "CONNECTED", "REPORTED", "AGE", "temperature="} {
			if !strings.Contains(out, col) {
				t.Errorf("kubectl get devices lacks %q", col)
			}
		}
		if out, err := st.CP.Kubectl(ctx, "get", "device", bme, "-n", "default", "-o", "yaml"); err != nil || !strings.Contains(out, "reported:") {
			t.Errorf("kubectl get device -o yaml: %v\n%s", err, out)
		}
	})

	t.Run("mosquitto_sub", func(t *testing.T) {
		out, err := mosquittoSub(ctx, a.MQTTAddr, topic(bme, "reported/+"), 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"temperature", "humidity", "pressure"} {
			if !strings.Contains(out, "/reported/"+p+" ") {
				t.Errorf("mosquitto_sub got no %s reading:\n%s", p, out)
			}
		}
		out, err = mosquittoSub(ctx, a.MQTTAddr, topic(bme, "reported"), 1)
		if err != nil {
			t.Fatal(err)
		}
		_, payload, _ := strings.Cut(strings.TrimSpace(out), " ")
		var rep map[string]struct {
			Value float64 `json:"value"`
			Unit  string  `json:"unit"`
		}
		if err := json.Unmarshal([]byte(payload), &rep); err != nil || rep["humidity"].Unit == "" {
			t.Errorf("reported JSON %q: %v", payload, err)
		}
	})

	t.Run("paho", func(t *testing.T) {
		got := make(chan string, 16)
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + a.MQTTAddr).SetClientID("e2e-" + prefix).SetConnectTimeout(5 * time.Second))
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("paho connect: %v", tok.Error())
		}
		defer c.Disconnect(100)
		tok := c.Subscribe(topic(bme, "reported/temperature"), 0, func(_ paho.Client, m paho.Message) {
			select {
			case got <- string(m.Payload()):
			default:
			}
		})
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("paho subscribe: %v", tok.Error())
		}
		var vals []string
		timeout := time.After(10 * time.Second)
		for len(vals) < 2 {
			select {
			case v := <-got:
				if _, err := strconv.ParseFloat(v, 64); err != nil {
					t.Fatalf("temperature payload %q is not a number", v)
				}
				vals = append(vals, v)
			case <-timeout:
				t.Fatalf("paho got %d temperature readings in 10s, want 2 (retained + live)", len(vals))
			}
		}
	})

	onIs := func(want bool) func(*deviceStatus) bool {
		return func(d *deviceStatus) bool {
			v, ok := d.Status.Reported["on"].Value.(bool)
			return ok && v == want
		}
	}
	t.Run("desired via kubectl patch", func(t *testing.T) {
		waitDevice(t, ctx, lamp, 10*time.Second, "on=false at start", onIs(false))
		start := time.Now()
		if out, err := st.CP.Kubectl(ctx, "patch", "device", lamp, "-n", "default", "--type", "merge",
			"-p", `{"spec":{"desired":{"on":true}}}`); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		// Reported is read back from the pin after the write: the sim pin
		// latched high.
		waitDevice(t, ctx, lamp, 10*time.Second, "on=true read back", onIs(true))
		t.Logf("desired on=true reported after %v", time.Since(start).Round(time.Millisecond))
		out, err := mosquittoSub(ctx, a.MQTTAddr, topic(lamp, "reported/on"), 1)
		if err != nil || !strings.Contains(out, " true") {
			t.Errorf("MQTT reported/on after the patch: %v %q", err, out)
		}
	})

	t.Run("desired via MQTT", func(t *testing.T) {
		mosquittoPub(t, ctx, a.MQTTAddr, topic(lamp, "desired/on"), "false")
		waitDevice(t, ctx, lamp, 10*time.Second, "on=false after the MQTT write", onIs(false))
		mosquittoPub(t, ctx, a.MQTTAddr, topic(lamp, "desired"), `{"on": true}`)
		waitDevice(t, ctx, lamp, 10*time.Second, "on=true after the MQTT write", onIs(true))
	})

	t.Run("garbage on the desired topic", func(t *testing.T) {
		errs := mosquittoSubscribed(t, ctx, a.MQTTAddr, topic(lamp, "errors"), 1)
		mosquittoPub(t, ctx, a.MQTTAddr, topic(lamp, "desired/on"), "abc")
		out := errs()
		if !strings.Contains(out, `"error"`) || !strings.Contains(out, "desired/on") {
			t.Fatalf("no rejection on %s: %s", topic(lamp, "errors"), out)
		}
		t.Logf("rejected: %s", strings.TrimSpace(out))
		if !strings.Contains(a.Proc.LogTail(200), "abc") && !strings.Contains(a.Proc.LogTail(200), "desired") {
			t.Errorf("the agent log does not mention the refused write")
		}
		// The lamp is unchanged and keeps working.
		waitDevice(t, ctx, lamp, 5*time.Second, "on still true", onIs(true))
	})

	t.Run("wiring errors", func(t *testing.T) {
		kubectlApply(t, ctx, deviceYAML(prefix+"-nodriver", node, "nosuch", `bus: I2C1, address: 0x76`, ""))
		kubectlApply(t, ctx, deviceYAML(prefix+"-nobus", node, "bme280", `bus: I2C9, address: "0x76"`, ""))
		kubectlApply(t, ctx, deviceYAML(prefix+"-noaddr", node, "bme280", `bus: I2C1, address: "0x77"`, ""))
		for dev, want := range map[string][]string{
			prefix + "-nodriver": {"nosuch"},
			prefix + "-nobus":    {"I2C9"},
			prefix + "-noaddr":   {"0x77"},
		} {
			d := waitDevice(t, ctx, dev, 10*time.Second, "condition Error", func(d *deviceStatus) bool {
				s, _ := d.cond("Error")
				return s == "True"
			})
			_, msg := d.cond("Error")
			for _, w := range want {
				if !strings.Contains(msg, w) {
					t.Errorf("%s: Error message %q does not say %q", dev, msg, w)
				}
			}
			if s, _ := d.cond("Connected"); s != "False" {
				t.Errorf("%s: Connected = %q, want False", dev, s)
			}
			t.Logf("%s: %s", dev, msg)
		}
		// The good device keeps reporting.
		d, _, err := getDevice(ctx, bme)
		if err != nil {
			t.Fatal(err)
		}
		at := d.Status.Reported["temperature"].At
		waitDevice(t, ctx, bme, 3*reportInterval+2*time.Second, "bme280 still reporting", func(d *deviceStatus) bool {
			return d.Status.Reported["temperature"].At != at
		})
	})
}
