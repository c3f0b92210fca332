package agent

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// goList runs go list from the module root (the parent of this directory).
func goList(t *testing.T, env []string, args ...string) []string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("go list %v: %v\n%s", args, err, msg)
	}
	return strings.Fields(string(out))
}

// The agent must never link Kubernetes libraries: they would multiply its
// size and memory. Checked for every package under agent/, on every
// architecture the agent ships for.
func TestAgentLinksNoKubernetes(t *testing.T) {
	for _, arch := range []string{"amd64", "arm64", "arm", "riscv64"} {
		deps := goList(t, []string{"GOOS=linux", "GOARCH=" + arch, "CGO_ENABLED=0"},
			"-deps", "-f", "{{.ImportPath}}", "./agent/...")
		if len(deps) < 10 {
			t.Fatalf("%s: go list returned only %d packages; the check would prove nothing", arch, len(deps))
		}
		for _, d := range deps {
			if strings.HasPrefix(d, "k8s.io/") || strings.HasPrefix(d, "sigs.k8s.io/") {
				t.Errorf("linux/%s: the agent links %s; only cloud/ and tests may import Kubernetes packages", arch, d)
			}
		}
	}
}

// deps.txt lists every non-standard package the agent binary links, so that
// a new dependency is a visible decision in review (make deps refreshes it).
func TestAgentDependencyListIsCurrent(t *testing.T) {
	want, err := os.ReadFile("deps.txt")
	if err != nil {
		t.Fatalf("%v: run make deps", err)
	}
	got := goList(t, []string{"GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0"},
		"-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./agent/cmd/outpost-agent")
	wantSet := map[string]bool{}
	for _, w := range strings.Fields(string(want)) {
		wantSet[w] = true
	}
	gotSet := map[string]bool{}
	for _, g := range got {
		gotSet[g] = true
		if !wantSet[g] {
			t.Errorf("new agent dependency %s is not in agent/deps.txt: if it is wanted, run make deps and commit the file", g)
		}
	}
	for w := range wantSet {
		if !gotSet[w] {
			t.Errorf("agent/deps.txt lists %s, which the agent no longer links: run make deps", w)
		}
	}
}
