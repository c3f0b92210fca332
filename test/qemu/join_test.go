//go:build qemu

package qemu

import (
	"context"
	"strings"
	"testing"
)

// TestJoinQEMU boots the qemu-arm64 image in qemu-system-aarch64 (or
// qemu-riscv64 with OUTPOST_QEMU_ARCH=riscv64); its agent joins a relay on
// the host with the token baked into the image and its node must show
// Ready, with the guest's arch, in kubectl get nodes of the test control
// plane. Then, on the same boot, a pod without hostNetwork must get the
// image's pod network (checkPodNetwork).
func TestJoinQEMU(t *testing.T) {
	arch := testArch(t)
	h := startPodNetHost(t)
	g := bootGateway(t, gatewayOptions{Arch: arch, Registries: []string{h.Reg.Host}, HostForwards: []string{h.hostFwd()}})
	ctx := context.Background()
	out, err := g.St.CP.Kubectl(ctx, "get", "nodes", "-o", "wide", "-L", "kubernetes.io/arch")
	if err != nil {
		t.Fatalf("kubectl get nodes: %v\n%s", err, out)
	}
	t.Logf("kubectl get nodes -o wide -L kubernetes.io/arch\n%s", out)
	rows := strings.Split(strings.TrimSpace(out), "\n")
	head := strings.Fields(rows[0])
	col := func(name string) int {
		for i, h := range head {
			if h == name {
				return i
			}
		}
		t.Fatalf("no %s column in %q", name, rows[0])
		return -1
	}
	status, archCol := col("STATUS"), col("ARCH")
	found := false
	for _, r := range rows[1:] {
		f := strings.Fields(r)
		if len(f) == 0 || f[0] != g.Node {
			continue
		}
		found = true
		// The arch label is the last column; OS-IMAGE has spaces in it.
		if f[status] != "Ready" || f[len(f)-1] != arch || archCol != len(head)-1 {
			t.Errorf("node %s: STATUS %q, ARCH %q; want Ready, %s", g.Node, f[status], f[len(f)-1], arch)
		}
	}
	if !found {
		t.Fatalf("node %s is not in kubectl get nodes", g.Node)
	}
	out, err = g.St.CP.Kubectl(ctx, "get", "node", g.Node, "-o", "jsonpath={.status.nodeInfo.architecture} {.status.nodeInfo.kernelVersion}")
	if err != nil || !strings.HasPrefix(out, arch+" ") || !strings.HasSuffix(out, "-"+arch) {
		t.Errorf("node %s: nodeInfo architecture and kernel %q (%v), want %s and the guest's (Debian's %s) kernel", g.Node, out, err, arch, arch)
	}
	t.Logf("boot to Ready: %.1fs (emulated; join at %.1fs); image built in %.1fs",
		g.Ready.Sub(g.Start).Seconds(), g.Joined.Sub(g.Start).Seconds(), g.ImageBuild.Seconds())
	if t.Failed() {
		return
	}
	checkPodNetwork(t, g, h)
}
