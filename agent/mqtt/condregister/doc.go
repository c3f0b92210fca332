// Package condregister links the agent's optional MQTT features unless a
// build tag leaves them out, the way Tailscale's feature/condregister
// does: the agent imports this package and never names the features.
//
//	outpost_no_broker    no embedded broker (an external one via mqtt.url)
//	outpost_no_kubeedge  no KubeEdge device-twin topics
package condregister
