package stack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"outpost.dev/cloud/crd"
	"outpost.dev/cloud/upgrade"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

// What the agent-upgrade tests share (test/e2e on the host, test/qemu in
// the gateway image): a signing key made and used with outpost-relay
// upgrade keygen and sign, as an administrator does; a build that exits
// at start; an AgentUpgrade created (with its maxUnavailable) and its
// nodes' phases awaited.

// RelayCmd runs outpost-relay with args and returns its standard output,
// failing t on error.
func (s *Stack) RelayCmd(t testing.TB, ctx context.Context, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, filepath.Join(s.BinDir, "outpost-relay"), args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("outpost-relay %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// UpgradeKey is an upgrade signing key made by outpost-relay upgrade
// keygen: File holds the private key, Public is the upgradePublicKey
// line's value an agent pins.
type UpgradeKey struct {
	File, Public string
	s            *Stack
}

// UpgradeKeygen makes a signing key in dir/upgrade.key.
func (s *Stack) UpgradeKeygen(t testing.TB, ctx context.Context, dir string) *UpgradeKey {
	t.Helper()
	k := &UpgradeKey{File: filepath.Join(dir, "upgrade.key"), s: s}
	for l := range strings.Lines(s.RelayCmd(t, ctx, "upgrade", "keygen", "--key", k.File)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "upgradePublicKey: "); ok {
			k.Public = v
		}
	}
	if k.Public == "" {
		t.Fatal("outpost-relay upgrade keygen printed no upgradePublicKey")
	}
	return k
}

// Sign signs bin as version for arch, served at url, and returns the
// artifacts list outpost-relay upgrade sign printed.
func (k *UpgradeKey) Sign(t testing.TB, ctx context.Context, version, arch, url, bin string) []any {
	t.Helper()
	out := k.s.RelayCmd(t, ctx, "upgrade", "sign", "--key", k.File, "--version", version, "--arch", arch, "--url", url, bin)
	var arts []any
	if err := yaml.Unmarshal([]byte(out), &arts); err != nil || len(arts) != 1 {
		t.Fatalf("outpost-relay upgrade sign printed %q: %v", out, err)
	}
	return arts
}

// BuildExitAtStart builds, for goarch, a program that exits with status
// 1 as soon as it starts: an agent build that never comes up.
func BuildExitAtStart(t testing.TB, ctx context.Context, goarch, out string) {
	t.Helper()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte("package main\n\nimport \"os\"\n\nfunc main() { os.Exit(1) }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module broken\n\ngo 1.21\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build (exits at start, %s): %v\n%s", goarch, err, b)
	}
}

// CreateUpgrade creates AgentUpgrade name of version for the nodes
// labelled selector=yes, at most maxUnavailable of them at a time, and
// deletes it when t ends.
func (s *Stack) CreateUpgrade(t testing.TB, ctx context.Context, name, version, selector string, trialSecs, maxUnavailable int64, artifacts []any) {
	t.Helper()
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": crd.APIVersion, "kind": upgrade.Kind,
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{"version": version, "artifacts": artifacts, "trialSeconds": trialSecs, "maxUnavailable": maxUnavailable,
			"nodeSelector": map[string]any{"matchLabels": map[string]any{selector: "yes"}}}}}
	dyn := s.Dynamic(t)
	if _, err := dyn.Resource(upgrade.GVR).Create(ctx, u, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = dyn.Resource(upgrade.GVR).Delete(ctx, name, metav1.DeleteOptions{})
	})
}

// WaitUpgradePhase waits until AgentUpgrade name records node in phase
// want and returns its status there, failing at once if the node ends
// in another phase.
func (s *Stack) WaitUpgradePhase(t testing.TB, ctx context.Context, timeout time.Duration, name, node string, want wire.UpgradePhase) upgrade.NodeStatus {
	t.Helper()
	var got upgrade.NodeStatus
	dyn := s.Dynamic(t)
	wait.State(t, ctx, timeout, name+": "+node+" "+string(want), func() (bool, string) {
		u, err := dyn.Resource(upgrade.GVR).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		a, err := upgrade.FromUnstructured(u)
		if err != nil {
			return false, err.Error()
		}
		for _, n := range a.Status.Nodes {
			if n.Name == node {
				got = n
				if n.Phase != want && n.Phase.Terminal() {
					t.Fatalf("%s: node %s ended %s (%s), want %s", name, node, n.Phase, n.Reason, want)
				}
				return n.Phase == want, fmt.Sprintf("%+v", n)
			}
		}
		return false, fmt.Sprintf("%+v", a.Status)
	})
	return got
}

// Dynamic is a dynamic client of the stack's API server, for custom
// resources such as AgentUpgrades.
func (s *Stack) Dynamic(t testing.TB) dynamic.Interface {
	t.Helper()
	dyn, err := dynamic.NewForConfig(s.CP.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	return dyn
}
