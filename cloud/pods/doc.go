// Package pods keeps each connected agent in step with the pods bound to
// its node, translated into the agent's own small types (wire.Pod,
// wire.ConfigMap, wire.Secret).
//
// Per connection, a Session watches the pods with the field selector
// spec.nodeName=<node>, exactly as a kubelet does, so the relay never
// holds another node's pods, plus one watch per ConfigMap and Secret those
// pods reference (by name, as the kubelet's watch-based managers do). A
// reference is watched while some pod of the node uses it and dropped when
// none does; the agent is never sent an object no pod of its node
// references. Each watch is a cloud/watchcache.Cache (no informer, and no
// goroutine while it watches over cloud/watchmux streams), made as the
// node: the Node authorizer allows a node only its own pods' field
// selector and its own pods' references, so no watch can be shared
// between nodes without the relay reading as itself what no node may.
//
// A Session has no goroutine of its own. Its watches' changes, its Extra
// source's, NodeChanged (the relay's edge-Node cache saw its Node), and
// a timer while a step is due (the next poll while the initial sync
// waits, a retried status write, a token refresh, a claim read again, the
// next look for a Node that is not an edge node yet) queue it in a
// Syncer, whose bounded pool of workers (Serve of the Queue in
// cloud/coalesce) runs one step of one session at a time and exists only
// while some step is due. The Syncer also ends the sessions of a context
// that ended (one context.AfterFunc per context, not per session) and
// wakes a session idle for an hour; a session makes a context of its own
// only for its first request outside its watches.
// A step that waits on the API server holds one worker, never the
// others; a step that panics ends its own session.
//
// The sync is level-based. After the hello, whose object versions seed
// what the agent holds, the session sends the objects that differ and
// explicit deletes for the ones that are gone, in TypeSync frames marked
// Initial (the last also Complete), then deltas as the watches report
// changes. Every pass recomputes the whole wanted set from the watch caches
// and diffs it against what was sent, so a coalesced or missed event is
// repaired by the next one. Nothing survives the connection: a new one,
// on any replica, starts from the hello again.
//
// A pod using a field the agent cannot honour (Translate names it by its
// path) is never sent: its Ready condition says why (reason
// UnsupportedField, or ObjectTooLarge when it or a referenced object
// cannot fit in a frame) and an event is recorded, once per change of the
// pod, judged from the pod's own condition so relay restarts do not write
// again. Such a pod being deleted, which the agent does not hold, is
// deleted with grace 0 at once: none of its containers ever ran, as for a
// pod a kubelet never started.
//
// Pods with serviceAccountToken projected sources (every pod the API
// server gives a kube-api-access volume) get bound tokens from the
// TokenRequest API as a kubelet does, sent as one KindToken object per pod
// and refreshed at 80 % of their lifetime or after 24 hours while the
// agent is connected (tokens.go). Only pods read bound to the node, with
// the same UID, just before each request get a token.
//
// A pod's persistentVolumeClaim and ephemeral volumes are resolved before
// it is translated (claims.go): the claim, then the PersistentVolume it is
// bound to, each read by name as the node (a kubelet's reads), once per
// pod and connection. A local or hostPath PersistentVolume travels as a
// hostPath volume; any other is refused naming the volume. A claim that is
// missing or not bound keeps the pod from the agent, waiting with Ready
// reason VolumeClaimPending, and is read again every few seconds; a pod
// the agent already holds is kept as it is meanwhile.
//
// A pod that finished (Succeeded or Failed) stays with an agent that holds
// it, sent with Finished set and without tokens or references, so that its
// logs stay readable until it is deleted, as on a kubelet; a finished pod
// the agent does not hold is not sent.
//
// Pods with a deletion timestamp are sent with Deleting set; the pod
// disappears (and the agent gets a delete) once something deletes it with
// grace 0. Like a kubelet, that is the agent's status path's job once its
// containers have stopped; this package does not do it.
package pods
