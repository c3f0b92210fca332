// Package containerd runs the agent's containers in containerd, in a
// containerd namespace of their own ("outpost" by default): it pulls images
// from registries into containerd's content store and unpacks them into
// snapshots, creates containers from Outpost's small Spec type (never
// Kubernetes types), starts their tasks with output to a log file, reports
// their status, stops them gracefully and deletes them with their
// snapshots, and lists what the namespace holds so a reconciler can tell
// the containers it created (LabelManaged) from the rest.
//
// It talks to containerd's gRPC API without containerd's Go client and
// without google.golang.org/grpc: net/http's HTTP/2 client over the unix
// socket and protobuf messages encoded by hand with protowire. That keeps
// the agent within its memory budget; docs/containerd.md has the
// measurements and the commands to repeat them. It works with containerd
// 1.6 (Debian 12) and later: it uses only services 1.6 has (no transfer
// service), and pulls in the agent.
package containerd
