//go:build qemu

package qemu

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/build/cross"
	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

// TestUpgradeQEMU boots the qemu-arm64 image (qemu-riscv64 with
// OUTPOST_QEMU_ARCH=riscv64) built with an upgrade key pinned
// (-upgrade-public-key), joins it and runs a pod on its pod network.
// Then, on the same boot, an AgentUpgrade to a second build of the agent
// for the guest's architecture (another version stamped the way make
// cross stamps it, signed with outpost-relay upgrade sign, fetched by the
// relay from an HTTP server on the host and delivered over the agent's
// link) must end Healthy with the new version in kubectl get nodes, and
// an AgentUpgrade to a build that exits at start must end RolledBack by
// the image's launcher, with its reason, before the trial's deadline,
// the node back on the second build. The pod's container runs through
// both: same container ID, same start, no restart.
func TestUpgradeQEMU(t *testing.T) {
	arch := testArch(t)
	ctx := context.Background()
	reg, err := harness.StartRegistry(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Stop() })
	// Room in the root file system for the two slots and the download.
	g := bootGateway(t, gatewayOptions{Arch: arch, Registries: []string{reg.Host}, UpgradeKey: true, RootFreeMiB: 128})
	st, node := g.St, g.Node
	const (
		v2       = "v0.2.0-qemu-upgrade"
		vBroken  = "v0.3.0-qemu-broken"
		groupKey = "outpost.test/upgrade"
		// The trial's deadline: long enough for the emulated guest to
		// start the second build, connect and be Ready.
		trialSecs = 600
	)

	// The version the image's agent reports.
	n, err := st.CP.Client().CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v1 := n.Status.NodeInfo.KubeletVersion
	if want := os.Getenv("OUTPOST_VERSION"); want != "" && v1 != want {
		t.Fatalf("node %s reports version %q, want the image's %q", node, v1, want)
	}
	if v1 == v2 || v1 == vBroken {
		t.Fatalf("the image's agent is already %s", v1)
	}

	// A pod without hostNetwork on the gateway.
	image := pushGuestImage(t, ctx, reg, arch, "test/busybox:upgrade", guestBusybox(t, arch))
	st.Kubectl(t, ctx, "label", "node", node, groupKey+"=yes")
	st.Apply(t, ctx, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: upgrade-survivor, namespace: default}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: %s
    command: [sh, -c, "exec sleep 36000"]
`, node, image))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = st.CP.Kubectl(ctx, "delete", "pod", "upgrade-survivor", "--wait=false")
	})

	// While the guest pulls and starts it: the second build, stamped as
	// make cross stamps the agent, and a build that exits at start, both
	// for the guest; served over HTTP on the host's loopback, where the
	// relay fetches them (the gateway gets them over its link).
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	target, err := cross.Lookup(g.Machine.GOARCH)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	agent2 := filepath.Join(dir, "outpost-agent-"+v2)
	b0 := time.Now()
	if err := cross.Build(ctx, target, agent2, cross.Options{ModuleRoot: root, Version: v2}); err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(dir, "outpost-agent-broken")
	stack.BuildExitAtStart(t, ctx, g.Machine.GOARCH, broken)
	t.Logf("second agent build %s and the broken build for %s in %.1fs", v2, target.Name(), time.Since(b0).Seconds())
	files := http.NewServeMux()
	files.HandleFunc("GET /"+v2, func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, agent2) })
	files.HandleFunc("GET /"+vBroken, func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, broken) })
	srv := httptest.NewServer(files)
	defer srv.Close()
	sign := func(version, bin string) []any {
		return g.UpgradeKey.Sign(t, ctx, version, g.Machine.GOARCH, srv.URL+"/"+version, bin)
	}

	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s\nlast console lines:\n%s", fmt.Sprintf(format, args...), g.Con.Tail(40))
	}
	pods := st.CP.Client().CoreV1().Pods("default")
	run := func() (survivor, string) {
		p, err := pods.Get(ctx, "upgrade-survivor", metav1.GetOptions{})
		if err != nil {
			return survivor{}, err.Error()
		}
		var r survivor
		for _, s := range p.Status.ContainerStatuses {
			if s.Name == "app" && s.State.Running != nil {
				r = survivor{containerID: s.ContainerID, started: s.State.Running.StartedAt.Time, restarts: s.RestartCount}
			}
		}
		if p.Status.Phase != corev1.PodRunning || r.containerID == "" || p.Status.PodIP == "" {
			return survivor{}, fmt.Sprintf("phase %s, podIP %q, statuses %+v", p.Status.Phase, p.Status.PodIP, p.Status.ContainerStatuses)
		}
		return r, r.String()
	}
	var before survivor
	if err := wait.Until(ctx, 8*time.Minute, func() (bool, string) {
		var desc string
		before, desc = run()
		return before.containerID != "", desc
	}); err != nil {
		fail("the pod did not run: %v", err)
	}
	t.Logf("pod running: %s", before)
	samePod := func(after string) {
		t.Helper()
		now, desc := run()
		if now.containerID != before.containerID || !now.started.Equal(before.started) || now.restarts != 0 {
			fail("after %s the pod's container is not the one that ran before: before %s, now %s", after, before, desc)
		}
		t.Logf("after %s the pod still runs: %s", after, desc)
	}
	nodeVersion := func(want string) {
		t.Helper()
		if err := wait.Until(ctx, 5*time.Minute, func() (bool, string) {
			n, err := st.CP.Client().CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			ready := false
			for _, c := range n.Status.Conditions {
				ready = ready || c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue
			}
			return ready && n.Status.NodeInfo.KubeletVersion == want, fmt.Sprintf("ready %v, version %q", ready, n.Status.NodeInfo.KubeletVersion)
		}); err != nil {
			fail("node %s not Ready at %s: %v", node, want, err)
		}
		out := st.Kubectl(t, ctx, "get", "node", node, "-o", "wide", "--no-headers")
		if !strings.Contains(out, " "+want+" ") {
			fail("kubectl get node -o wide does not show %s: %s", want, out)
		}
		t.Logf("kubectl get node %s -o wide: %s", node, strings.TrimSpace(out))
	}
	nodeVersion(v1)

	// The upgrade to the second build.
	t0 := time.Now()
	st.CreateUpgrade(t, ctx, "agent-v2", v2, groupKey, trialSecs, 1, sign(v2, agent2))
	phase := st.WaitUpgradePhase(t, ctx, (trialSecs+120)*time.Second, "agent-v2", node, wire.UpgradeHealthy)
	t.Logf("%.1fs after the AgentUpgrade: %s %s", time.Since(t0).Seconds(), phase.Phase, phase.Reason)
	nodeVersion(v2)
	samePod("the upgrade to " + v2)

	// The upgrade to the build that exits at start: the launcher counts
	// three exits and goes back to the second build, which reports it,
	// long before the trial's deadline.
	t0 = time.Now()
	st.CreateUpgrade(t, ctx, "agent-broken", vBroken, groupKey, trialSecs, 1, sign(vBroken, broken))
	phase = st.WaitUpgradePhase(t, ctx, trialSecs*time.Second, "agent-broken", node, wire.UpgradeRolledBack)
	if !strings.Contains(phase.Reason, "exited 3 times at start") || !strings.Contains(phase.Reason, "exit status 1") {
		fail("RolledBack with reason %q, want the launcher's count of exits", phase.Reason)
	}
	t.Logf("%.1fs after the AgentUpgrade: %s: %s", time.Since(t0).Seconds(), phase.Phase, phase.Reason)
	nodeVersion(v2)
	samePod("the rollback from " + vBroken)
}

// survivor is what tells one run of the pod's container from another,
// as the API server reports it.
type survivor struct {
	containerID string
	started     time.Time
	restarts    int32
}

func (s survivor) String() string {
	return fmt.Sprintf("container %s started %s, %d restarts", s.containerID, s.started.UTC().Format(time.RFC3339), s.restarts)
}
