package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/agent/slots"
	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

// TestAgentUpgradeAndRollback: a real agent under the real launcher,
// running a real pod, is upgraded by an AgentUpgrade to a second build
// of the agent (signed with outpost-relay upgrade sign, served over
// HTTP, delivered by the relay over the agent's link) and reports
// Healthy with the new version on its Node; an AgentUpgrade to a build
// that exits at start is rolled back by the launcher after three exits
// and reported RolledBack by the agent it went back to. The pod's
// container runs through both.
func TestAgentUpgradeAndRollback(t *testing.T) {
	needStack(t)
	harness.RequireContainerd(t)
	ctx := ctxFor(t, 4*time.Minute)
	rt := harness.StartTestRuntime(t, "oupg", harness.RegistryOptions{})
	dir := t.TempDir()
	const (
		name      = "upgrade-e2e"
		v2        = "v0.2.0-upgrade"
		vBroken   = "v0.3.0-broken"
		groupKey  = "outpost.test/upgrade"
		podName   = "upgrade-survivor"
		trialSecs = 120
	)
	// The launcher, with its slots in dir; the second agent build; a
	// build that exits 1 at start.
	launcher, slotsDir := buildLauncher(t, ctx, dir)
	agent2 := buildAgent(t, ctx, dir, v2)
	broken := filepath.Join(dir, "outpost-agent-broken")
	stack.BuildExitAtStart(t, ctx, runtime.GOARCH, broken)

	// Served over HTTP, signed with a key made by outpost-relay upgrade
	// keygen, whose public half is pinned in the agent's configuration.
	pub := newPublisher(t, ctx, dir)
	pub.serve(v2, agent2)
	pub.serve(vBroken, broken)

	// The agent, under the launcher, restarted when it exits as the
	// service manager does; its own containerd namespace; one pod.
	startUpgradable(t, ctx, rt, pub, name, launcher)
	if err := st.WaitNodeReady(ctx, name, true, time.Minute); err != nil {
		t.Fatal(err)
	}
	st.Kubectl(t, ctx, "label", "node", name, groupKey+"=yes")
	applyPod(t, ctx, rt, name, podName)
	before := waitPod(t, ctx, rt, name, podName)
	nodeVersion := func(want string) {
		t.Helper()
		wait.State(t, ctx, time.Minute, "node "+name+" Ready at "+want, func() (bool, string) {
			n, err := st.CP.Client().CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			ready := false
			for _, c := range n.Status.Conditions {
				ready = ready || c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue
			}
			return ready && n.Status.NodeInfo.KubeletVersion == want, fmt.Sprintf("ready %v, kubeletVersion %q", ready, n.Status.NodeInfo.KubeletVersion)
		})
		if out := st.Kubectl(t, ctx, "get", "node", name, "-o", "wide", "--no-headers"); !strings.Contains(out, " "+want+" ") {
			t.Fatalf("kubectl get node -o wide does not show %s: %s", want, out)
		}
	}
	sameContainer := func() {
		t.Helper()
		now, desc := podRunning(ctx, rt.Containerd, podNS, podName, ctrNamespace(name))
		if now != before || now.restarts != 0 {
			t.Fatalf("the pod's container changed: before %+v, now %+v (%s)", before, now, desc)
		}
	}
	nodeVersion("v0.1.0-test")

	// The upgrade to the second build.
	st.CreateUpgrade(t, ctx, "agent-v2", v2, groupKey, trialSecs, 1, pub.sign(t, ctx, v2, agent2))
	phase := st.WaitUpgradePhase(t, ctx, 2*time.Minute, "agent-v2", name, wire.UpgradeHealthy)
	nodeVersion(v2)
	sameContainer()
	up := slotState(t, slotsDir)
	if up.Current == slots.Packaged || up.CurrentVersion != v2 || up.Trial || up.Previous != slots.Packaged || up.RolledBack != "" {
		t.Fatalf("the slots after the upgrade: %+v", up)
	}
	t.Logf("upgraded: %+v", phase)

	// The upgrade to the build that exits at start: three exits, the
	// launcher goes back to the second build, which reports it.
	st.CreateUpgrade(t, ctx, "agent-broken", vBroken, groupKey, trialSecs, 1, pub.sign(t, ctx, vBroken, broken))
	phase = st.WaitUpgradePhase(t, ctx, 2*time.Minute, "agent-broken", name, wire.UpgradeRolledBack)
	if !strings.Contains(phase.Reason, "exited 3 times at start") || !strings.Contains(phase.Reason, "exit status 1") {
		t.Fatalf("RolledBack with reason %q, want the launcher's count of exits", phase.Reason)
	}
	nodeVersion(v2)
	sameContainer()
	if s := slotState(t, slotsDir); s.Current != up.Current || s.CurrentVersion != v2 || s.Trial ||
		s.RolledBack == "" || s.RolledBack == up.Current || s.RolledBackVersion != vBroken || s.Reason != phase.Reason {
		t.Fatalf("the slots after the rollback: %+v (after the upgrade: %+v)", s, up)
	}
	t.Logf("rolled back: %+v", phase)
}

// slotState reads the launcher's pointer, as the agent reports it.
func slotState(t *testing.T, dir string) slots.State {
	t.Helper()
	sl, err := slots.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer sl.Close()
	s, err := sl.State()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// buildLauncher builds outpost-boot into dir with its slots directory
// dir/slots (a link-time path, as on a gateway) and the packaged agent
// the stack's outpost-agent, and returns both paths.
func buildLauncher(t *testing.T, ctx context.Context, dir string) (launcher, slotsDir string) {
	t.Helper()
	launcher, slotsDir = filepath.Join(dir, "outpost-boot"), filepath.Join(dir, "slots")
	goBuild(t, ctx, launcher, launcherFlags(slotsDir), "outpost.dev/agent/cmd/outpost-boot")
	return launcher, slotsDir
}

// launcherFlags links slotsDir and the stack's outpost-agent into
// outpost-boot, for builds run side by side.
func launcherFlags(slotsDir string) string {
	return "-X main.slotsDir=" + slotsDir + " -X main.packaged=" + filepath.Join(st.BinDir, "outpost-agent")
}

// buildAgent builds outpost-agent into dir with version as its version
// string, and returns its path.
func buildAgent(t *testing.T, ctx context.Context, dir, version string) string {
	t.Helper()
	out := filepath.Join(dir, "outpost-agent-"+version)
	if err := buildAgentErr(ctx, out, version); err != nil {
		t.Fatal(err)
	}
	return out
}

// buildAgentErr is buildAgent into out, for builds run side by side.
func buildAgentErr(ctx context.Context, out, version string) error {
	return goBuildErr(ctx, out, "-X main.version="+version, "outpost.dev/agent/cmd/outpost-agent")
}

// goBuild builds pkg into out with ldflags.
func goBuild(t *testing.T, ctx context.Context, out, ldflags, pkg string) {
	t.Helper()
	if err := goBuildErr(ctx, out, ldflags, pkg); err != nil {
		t.Fatal(err)
	}
}

// goBuildErr is goBuild for builds run side by side.
func goBuildErr(ctx context.Context, out, ldflags, pkg string) error {
	args := []string{"build", "-o", out}
	if ldflags != "" {
		args = append(args, "-ldflags", ldflags)
	}
	cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// publisher is what publishes agent builds: a signing key made by
// outpost-relay upgrade keygen, whose public half the agents pin, and an
// HTTP server the relay fetches the builds from.
type publisher struct {
	key   *stack.UpgradeKey
	files *http.ServeMux
	srv   *httptest.Server
}

func newPublisher(t *testing.T, ctx context.Context, dir string) *publisher {
	t.Helper()
	p := &publisher{key: st.UpgradeKeygen(t, ctx, dir), files: http.NewServeMux()}
	p.srv = httptest.NewServer(p.files)
	t.Cleanup(p.srv.Close)
	return p
}

// serve serves bin at /version.
func (p *publisher) serve(version, bin string) {
	p.files.HandleFunc("GET /"+version, func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, bin) })
}

// sign returns the artifacts of an AgentUpgrade for bin as version, as
// outpost-relay upgrade sign prints them.
func (p *publisher) sign(t *testing.T, ctx context.Context, version, bin string) []any {
	t.Helper()
	return p.key.Sign(t, ctx, version, runtime.GOARCH, p.srv.URL+"/"+version, bin)
}

// ctrNamespace is the containerd namespace of node's agent.
func ctrNamespace(node string) string { return "outpost-" + node }

// startUpgradable joins node name and runs its agent under launcher,
// restarted when it exits as the service manager does, with pub's key
// pinned and rt's containerd in a namespace of its own.
func startUpgradable(t *testing.T, ctx context.Context, rt *harness.TestRuntime, pub *publisher, name, launcher string) *stack.Agent {
	t.Helper()
	a, err := st.Join(ctx, relay, name)
	if err != nil {
		t.Fatal(err)
	}
	a.Launcher = launcher
	a.NoPodNetwork = true
	a.ExtraConfig = "upgradePublicKey: " + pub.key.Public + "\ncontainerd:\n  address: " + rt.Containerd.Address +
		"\n  namespace: " + ctrNamespace(name) + "\n  registries:\n    \"" + rt.Registry.Host + "\": {plainHTTP: true}\n"
	respawn(t, a)
	return a
}

const podNS = "default"

// applyPod creates pod (one container "app", sleeping) on node; waitPod
// returns its run once it is Running.
func applyPod(t *testing.T, ctx context.Context, rt *harness.TestRuntime, node, pod string) {
	t.Helper()
	st.Apply(t, ctx, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s}
spec:
  nodeSelector: {kubernetes.io/hostname: %s}
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: %s
    command: [sh, -c, "exec sleep 3600"]
`, pod, podNS, node, rt.Images[0].Ref))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = st.CP.Kubectl(ctx, "delete", "pod", "-n", podNS, pod, "--wait=false")
	})
}

func waitPod(t *testing.T, ctx context.Context, rt *harness.TestRuntime, node, pod string) podRun {
	t.Helper()
	var r podRun
	wait.State(t, ctx, 2*time.Minute, "pod "+pod+" running", func() (bool, string) {
		var desc string
		r, desc = podRunning(ctx, rt.Containerd, podNS, pod, ctrNamespace(node))
		return r.pid != "", desc
	})
	return r
}

// respawn starts a and starts it again whenever it exits, as the service
// manager does for the launcher (Restart=on-failure), until t ends.
func respawn(t *testing.T, a *stack.Agent) {
	t.Helper()
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	var once sync.Once
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-a.Proc.Done():
			}
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Millisecond): // the service manager's RestartSec
			}
			if err := a.Start(); err != nil {
				t.Errorf("restarting the launcher: %v", err)
				return
			}
		}
	}()
	t.Cleanup(func() {
		once.Do(func() { close(stop) })
		<-done
		_ = a.Stop()
	})
}

// podRun is what tells one run of the pod's container from another.
type podRun struct {
	containerID string
	restarts    int32
	pid         string // containerd's task PID
}

// podRunning returns the run of the pod's container "app" when the pod
// is Running with it, as the API server and containerd (ctr, not the
// code under test) say.
func podRunning(ctx context.Context, c *harness.Containerd, ns, name, ctrNS string) (podRun, string) {
	p, err := st.CP.Client().CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return podRun{}, err.Error()
	}
	var r podRun
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == "app" && s.State.Running != nil {
			r.containerID, r.restarts = s.ContainerID, s.RestartCount
		}
	}
	if p.Status.Phase != corev1.PodRunning || r.containerID == "" {
		return podRun{}, fmt.Sprintf("phase %s, statuses %+v", p.Status.Phase, p.Status.ContainerStatuses)
	}
	id := strings.TrimPrefix(r.containerID, "containerd://")
	out, err := c.Ctr(ctx, "-n", ctrNS, "tasks", "ls")
	if err != nil {
		return podRun{}, err.Error()
	}
	for l := range strings.Lines(out) {
		if f := strings.Fields(l); len(f) == 3 && f[0] == id && f[2] == "RUNNING" {
			r.pid = f[1]
		}
	}
	if r.pid == "" {
		return podRun{}, fmt.Sprintf("container %s not RUNNING in containerd: %s", id, out)
	}
	return r, fmt.Sprintf("%+v", r)
}
