package stack

import (
	"fmt"
	"strings"
)

// MemWorkload is the workload the memory benchmarks put on one node: a
// number of Devices on the sim board's buses and of pods running busybox
// sleep, all labelled bench=mem in the default namespace.
type MemWorkload struct {
	Node          string
	Devices, Pods int
	// Image is the pods' image reference as the node pulls it.
	Image string
}

// YAML is the workload as one multi-document manifest for kubectl apply.
// The sim board has a BME280 at I2C1 0x76 and an SHT3x at 0x44; every
// third Device is each of those, the rest GPIO outputs on GPIO0…27; every
// property is polled every 5 s and reported every 10 s.
func (w MemWorkload) YAML() string {
	var y strings.Builder
	for i := range w.Devices {
		switch i % 3 {
		case 0:
			fmt.Fprintf(&y, memDeviceDoc, i, w.Node, "bme280", `bus: I2C1, address: "0x76"`,
				"    - {name: temperature, type: float, pollInterval: 5s, reportInterval: 10s}\n"+
					"    - {name: humidity, type: float, pollInterval: 5s, reportInterval: 10s}\n")
		case 1:
			fmt.Fprintf(&y, memDeviceDoc, i, w.Node, "sht3x", `bus: I2C1, address: "0x44"`,
				"    - {name: temperature, type: float, pollInterval: 5s, reportInterval: 10s}\n")
		default:
			fmt.Fprintf(&y, memDeviceDoc, i, w.Node, "gpio-out", fmt.Sprintf("pin: GPIO%d", i%28),
				`    - {name: "on", type: bool, access: ReadWrite, pollInterval: 5s, reportInterval: 10s}`+"\n")
		}
	}
	for i := range w.Pods {
		fmt.Fprintf(&y, memPodDoc, i, w.Node, w.Image)
	}
	return y.String()
}

const memDeviceDoc = `apiVersion: outpost.dev/v1alpha1
kind: Device
metadata:
  name: bench-dev-%03d
  namespace: default
  labels: {bench: mem}
spec:
  nodeName: %s
  driver: %s
  connection: {%s}
  properties:
%s---
`

const memPodDoc = `apiVersion: v1
kind: Pod
metadata:
  name: bench-pod-%02d
  namespace: default
  labels: {bench: mem}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: %s
    command: [sleep, "100000"]
---
`
