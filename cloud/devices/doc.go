// Package devices is the relay's side of the Device API (outpost.dev/
// v1alpha1, kind Device): the custom resource definition, which the relay
// installs at start, the relay's one Device watch that gives each agent
// only the Devices bound to its node, and the status writer that turns the
// agent's twin reports into status.reported and conditions.
//
// Types are hand-written (no code generation): the relay reads Devices with
// the dynamic client and converts them with crd.FromUnstructured
// (cloud/crd, shared with the AgentUpgrade API).
//
// # Which Devices an agent gets
//
// The relay reads Devices as itself (not as a node: the Node authorizer
// knows nothing of them), so one watch of all Devices per relay (Hub),
// indexed by spec.nodeName, serves every connection: each subscribes to
// its node's (NodeDevices) and is woken only by changes of those. The
// binding is checked again on every object before it is sent or written
// for a node. A Device
// travels as wire.Object{Kind: KindDevice} whose Version is the Device's
// metadata.generation and its link id (linkids.go), which only spec changes
// move: the relay's own status writes never send the Device down again.
//
// # Status writes
//
// Reports are coalesced per Device (last wins) in one bounded queue per
// relay, and written by a few workers through a token bucket
// (--device-status-qps, --device-status-burst), so thousands of twins cost
// the API server at most that many writes per second; the rest coalesce.
// Each write is one JSON patch of the status subresource that first tests
// metadata.uid and spec.nodeName, so a Device deleted, replaced or re-bound
// meanwhile is never written on behalf of the wrong node, and the
// resourceVersion of the watch's copy the new status is merged into, so a
// copy behind the API server (another relay replica wrote since) is not
// written over: the write is made again from a newer copy. A reading older
// than the one in the status is left out. A report is
// acknowledged to the agent only after its write (or a newer one of the same
// Device) succeeded, or when it was dropped for good.
package devices
