// Package mqtt is the agent's MQTT side: the connection to a broker (the
// embedded one by default, or an external one through the agent's own
// MQTT 3.1.1 client on the embedded broker's packet codec), and the
// [Bridge] that publishes device twins on Outpost's documented topics and
// takes desired values apps write there.
//
// The embedded broker (package outpost.dev/agent/mqtt/broker, mochi-mqtt)
// and KubeEdge's device-twin topics (package outpost.dev/agent/mqtt/kubeedge)
// are optional: they register themselves here when linked, and the
// build tags outpost_no_broker and outpost_no_kubeedge compile them out
// (see outpost.dev/agent/mqtt/condregister). This package names neither.
//
// Topics, for node N and Device namespace/name NS/D (docs/mqtt.md):
//
//	outpost/N/status                          online | offline (retained)
//	outpost/N/devices/NS/D/reported           JSON of every property (retained)
//	outpost/N/devices/NS/D/reported/P         plain value of property P (retained)
//	outpost/N/devices/NS/D/status             {"connected":…,"error":…} (retained)
//	outpost/N/devices/NS/D/desired/P          apps write a value for P
//	outpost/N/devices/NS/D/desired            apps write {"P": value, …}
//	outpost/N/devices/NS/D/errors             why a desired write was refused
package mqtt
