// Package harness starts the real pieces Outpost runs against, on loopback,
// for end-to-end tests and for make demo.
//
// The centre is StartControlPlane: etcd, kube-apiserver,
// kube-controller-manager and kube-scheduler at the version pinned in
// build/controlplane, with a generated PKI, admin kubeconfig and client-go
// client. Nothing is faked: tests talk to a real API server, and the
// controllers (node lifecycle, service accounts, garbage collection…) really
// run.
//
// The package takes no *testing.T, so a plain main program can use it too;
// progress goes to the *slog.Logger passed in. The building blocks the
// control plane is made of (Binaries, GeneratePKI, FreePort, StartProcess)
// are exported so tests can start the relay, the agent and containerd the
// same way: each child in its own process group, with its own log file,
// killed if the test process dies.
//
// StartContainerd runs Debian's containerd (with runc) by hand with its own
// root, state and socket under a temporary directory, and StartRegistry an
// in-process OCI registry on loopback, into which BuildBusyboxImage pushes
// test images made from Debian's busybox-static. StartTestRuntime starts
// both, with the test images, for a test that runs containers.
//
// The package is Linux-only in practice: children are tied to the parent
// with PR_SET_PDEATHSIG.
package harness
