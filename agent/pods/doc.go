// Package pods is the agent's pod reconciler: it makes containerd run
// what the store says should run on this gateway, and reports what runs.
//
// It is level-triggered, like a client-go controller. Every pass compares the desired pods
// (the store, written by agent/desired before anything acts on it) with
// the containers containerd holds in the agent's namespace, told apart by
// labels (pod UID, container name, attempt), and fixes the difference. It
// wakes on store changes, on container exits (one cheap containerd call
// lists every task, polled every second or two), on its own timers
// (crash and image-pull back-off, probes) and on a periodic resync; a
// missed signal is repaired by the next pass.
//
// Because the state is read back from containerd rather than remembered,
// a restarted agent adopts the containers it created (same container, same
// task: nothing restarts), starts the pods whose containers are gone (the
// gateway rebooted), and removes the containers of pods no longer wanted.
// Containers without Outpost's managed label are never touched.
//
// Each admitted pod has a worker (at most MaxPods) that acts on its
// containers in steps, each pod's on a goroutine of its own while one is
// due, so a slow image pull or a long grace period delays only its own
// pod; between steps (waiting for a restart's back-off or the next probe)
// a pod holds a timer, not a goroutine. Pulls are limited to a few at a
// time.
//
// Status goes like a kubelet's into the outbox (key "pod/<uid>", coalesced,
// durable), only when it changed. When containerd cannot be reached the
// reconciler reports a ContainerRuntimeReady=False node condition (key
// "node/runtime"), keeps retrying with back-off, and reconciles everything
// once it answers again.
//
// Container output is written in the CRI log format by a binary logger
// (agent/crilog, run by the shim as "outpost-agent logger"), to
// <LogDir>/<namespace>_<pod>_<uid>/<container>/<attempt>.log; LogPath finds
// a container's current or previous log for kubectl logs.
package pods
