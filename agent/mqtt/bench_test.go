package mqtt_test

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"periph.io/x/conn/v3/gpio"

	"outpost.dev/agent/mqtt"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

// BenchmarkReadToPublish measures sensor read → MQTT delivery on the sim
// board: from the reading's timestamp (taken when the hal read returned) to
// its arrival at a paho client of the embedded broker (p50/p99-µs), and
// from an edge on a gpio-in pin to that arrival (edge-p50/p99-µs). Each
// iteration drives the simulated pin to the other level.
func BenchmarkReadToPublish(b *testing.B) {
	conn, addr := embedded(b)
	a := startAgent(b, conn, mqtt.BridgeConfig{})
	app := dial(b, addr)
	var mu sync.Mutex
	var lat, edge []time.Duration
	var driven time.Time
	got := make(chan struct{}, 1)
	tok := app.c.Subscribe(topic("button", "reported"), 0, func(_ paho.Client, m paho.Message) {
		now := time.Now()
		var r map[string]reading
		if json.Unmarshal(m.Payload(), &r) != nil {
			return
		}
		at, err := time.Parse(time.RFC3339Nano, r["level"].At)
		if err != nil {
			return
		}
		mu.Lock()
		lat = append(lat, now.Sub(at))
		if !driven.IsZero() {
			edge = append(edge, now.Sub(driven))
		}
		mu.Unlock()
		select {
		case got <- struct{}{}:
		default:
		}
	})
	tok.Wait()
	pin := a.sim.Pins["GPIO20"]
	a.put(b, "button", &wire.Device{Driver: "gpio-in", Pin: "GPIO20", Properties: []wire.DeviceProperty{{Name: "level", PollMillis: 60000}}})
	<-got
	mu.Lock()
	lat = lat[:0]
	mu.Unlock()
	level := false
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		level = !level
		mu.Lock()
		driven = time.Now()
		mu.Unlock()
		pin.Drive(gpioLevel(level))
		select {
		case <-got:
		case <-time.After(time.Second):
			b.Fatal("no publication within 1 s of an edge")
		}
	}
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	pct := func(d []time.Duration, p int) float64 {
		slices.Sort(d)
		return float64(d[min(len(d)*p/100, len(d)-1)].Microseconds())
	}
	if len(lat) > 0 && len(edge) > 0 {
		b.ReportMetric(pct(lat, 50), "p50-µs")
		b.ReportMetric(pct(lat, 99), "p99-µs")
		b.ReportMetric(pct(edge, 50), "edge-p50-µs")
		b.ReportMetric(pct(edge, 99), "edge-p99-µs")
	}
}

func gpioLevel(b bool) gpio.Level { return gpio.Level(b) }

// BenchmarkMemory100Devices runs 100 sim devices at a 1 s poll with the
// embedded broker and one app subscribed to everything, and reports the
// heap and the process's RSS and PSS (which include the test binary).
func BenchmarkMemory100Devices(b *testing.B) { benchMemory(b, 100) }

// BenchmarkMemoryNoDevices is the cost of the twins loop and the embedded
// broker on a gateway without devices.
func BenchmarkMemoryNoDevices(b *testing.B) { benchMemory(b, 0) }

// heapProfile names a file for the heap profile of benchMemory, written
// after the devices ran and before they stop (-memprofile is written
// once the benchmark has cleaned up): go test -run '^$' -bench
// Memory100Devices -benchtime 1x ./agent/mqtt/ -args -heapprofile=FILE
// -test.memprofilerate=1.
var heapProfile = flag.String("heapprofile", "", "write benchMemory's heap profile to this file")

func benchMemory(b *testing.B, n int) {
	runtime.GC()
	rss0, pss0 := procMem()
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)

	conn, addr := embedded(b)
	a := startAgent(b, conn, mqtt.BridgeConfig{})
	app := dial(b, addr)
	app.c.Subscribe("outpost/#", 0, func(paho.Client, paho.Message) {}).Wait()
	kinds := []func(i int) *wire.Device{
		func(int) *wire.Device { return &wire.Device{Driver: "bme280", Bus: "I2C1", Address: 0x76} },
		func(int) *wire.Device { return &wire.Device{Driver: "sht3x", Bus: "I2C1", Address: 0x44} },
		func(int) *wire.Device {
			return &wire.Device{Driver: "ads1115", Bus: "I2C1", Address: 0x48, Options: map[string]string{"channel": "1"}}
		},
		func(int) *wire.Device { return &wire.Device{Driver: "mcp3008", Bus: "SPI0.0"} },
		func(i int) *wire.Device { return &wire.Device{Driver: "gpio-out", Pin: fmt.Sprintf("GPIO%d", i%28)} },
	}
	for i := 0; i < n; i++ {
		a.put(b, fmt.Sprintf("dev%03d", i), kinds[i%len(kinds)](i))
	}
	wait.State(b, context.Background(), 30*time.Second, "every device connected", func() (bool, string) {
		s := a.loop.Stats()
		return s.Connected >= n, fmt.Sprintf("%d of %d: %+v", s.Connected, n, s)
	})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		time.Sleep(5 * time.Second) // five polls of every device
	}
	b.StopTimer()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, pss := procMem()
	if *heapProfile != "" {
		f, err := os.Create(*heapProfile)
		if err != nil {
			b.Fatal(err)
		}
		err = pprof.Lookup("heap").WriteTo(f, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	s := a.loop.Stats()
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
	b.ReportMetric(float64(ms.HeapInuse-min(ms.HeapInuse, ms0.HeapInuse))/(1<<20), "heap-delta-MiB")
	b.ReportMetric(float64(rss)/(1<<20), "rss-MiB")
	b.ReportMetric(float64(rss-min(rss, rss0))/(1<<20), "rss-delta-MiB")
	b.ReportMetric(float64(pss)/(1<<20), "pss-MiB")
	b.ReportMetric(float64(pss-min(pss, pss0))/(1<<20), "pss-delta-MiB")
	b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
	b.ReportMetric(float64(s.Reads), "reads")
}

// procMem reads the process's RSS and PSS in bytes (0 where unknown).
func procMem() (rss, pss uint64) {
	f, err := os.Open("/proc/self/smaps_rollup")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 2 {
			continue
		}
		n, _ := strconv.ParseUint(fs[1], 10, 64)
		switch fs[0] {
		case "Rss:":
			rss = n << 10
		case "Pss:":
			pss = n << 10
		}
	}
	return rss, pss
}
