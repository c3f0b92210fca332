// Package seccomp owns the seccomp filters of the agent's containers: the
// RuntimeDefault profile, a compact table that builds exactly the profile
// containerd's CRI plugin gives a container (containerd's contrib/seccomp
// DefaultProfile, with its capability-, architecture- and kernel-dependent
// rules; profile_test.go proves it against containerd's own code for every
// architecture the agent ships), and Localhost profiles, read from the
// gateway's profile directory without letting a name from the cloud lead
// out of it.
//
// The table is carried instead of importing containerd: its Go packages
// would add megabytes to the agent (docs/containerd.md).
package seccomp
