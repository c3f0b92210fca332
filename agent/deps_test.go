package agent

import (
	"cmp"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
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

var update = flag.Bool("update", false, "rewrite deps.txt from go list (make deps)")

// depsHeader opens deps.txt.
const depsHeader = `# Every package outpost-agent links (linux/arm64, default build tags) and
# why: the linked packages that import it, the agent's own first, at most
# %d named ("+" when there are more; no count, so that an ordinary new
# import does not touch the line). Standard-library packages are marked
# (std). A new line is a new dependency: a visible decision in review.
# make deps rewrites this file; agent/deps_test.go fails when it is out
# of date.
# What each package costs in bytes: docs/agent-size.md.
`

// maxWhy is how many importers a line names.
const maxWhy = 3

// dependencyReasons renders deps.txt from go list's view of the agent.
func dependencyReasons(t *testing.T) string {
	const main = "outpost.dev/agent/cmd/outpost-agent"
	rows := goList(t, []string{"GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0"}, "-deps", "-f",
		"{{.ImportPath}},{{.Standard}}{{range .Imports}},{{.}}{{end}}", "./"+strings.TrimPrefix(main, "outpost.dev/"))
	std := map[string]bool{}
	importers := map[string][]string{}
	var pkgs []string
	for _, r := range rows {
		f := strings.Split(r, ",")
		if len(f) < 2 {
			t.Fatalf("go list printed %q", r)
		}
		pkgs = append(pkgs, f[0])
		std[f[0]] = f[1] == "true"
		for _, imp := range f[2:] {
			importers[imp] = append(importers[imp], f[0])
		}
	}
	if len(pkgs) < 100 || !slices.Contains(pkgs, main) {
		t.Fatalf("go list returned %d packages without %s; the list would prove nothing", len(pkgs), main)
	}
	// The agent's own importers first, then other modules', then the
	// standard library's.
	rank := func(p string) int {
		switch {
		case strings.HasPrefix(p, "outpost.dev/"):
			return 0
		case !std[p]:
			return 1
		}
		return 2
	}
	slices.Sort(pkgs)
	var b strings.Builder
	fmt.Fprintf(&b, depsHeader, maxWhy)
	for _, p := range pkgs {
		name := p
		if std[p] {
			name += " (std)"
		}
		why := importers[p]
		slices.SortFunc(why, func(a, b string) int { return cmp.Or(cmp.Compare(rank(a), rank(b)), strings.Compare(a, b)) })
		switch {
		case p == main:
			fmt.Fprintf(&b, "%s: the agent\n", name)
		case len(why) > maxWhy:
			fmt.Fprintf(&b, "%s from %s +\n", name, strings.Join(why[:maxWhy], ", "))
		default:
			fmt.Fprintf(&b, "%s from %s\n", name, strings.Join(why, ", "))
		}
	}
	return b.String()
}

// TestAgentDependencyListIsCurrent: deps.txt lists every package the
// agent binary links and who imports it, so that a new dependency is a
// visible decision in review (make deps refreshes it).
func TestAgentDependencyListIsCurrent(t *testing.T) {
	got := dependencyReasons(t)
	if *update {
		if err := os.WriteFile("deps.txt", []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile("deps.txt")
	if err != nil {
		t.Fatalf("%v: run make deps", err)
	}
	wantPkgs, gotPkgs := depsPackages(string(want)), depsPackages(got)
	for p := range gotPkgs {
		if !wantPkgs[p] {
			t.Errorf("new agent dependency %s is not in agent/deps.txt: if it is wanted, run make deps and commit the file", p)
		}
	}
	for p := range wantPkgs {
		if !gotPkgs[p] {
			t.Errorf("agent/deps.txt lists %s, which the agent no longer links: run make deps", p)
		}
	}
	if !t.Failed() && got != string(want) {
		t.Errorf("agent/deps.txt names importers that changed: run make deps and commit the file")
	}
}

// depsPackages returns the packages deps.txt lists.
func depsPackages(s string) map[string]bool {
	m := map[string]bool{}
	for _, l := range strings.Split(s, "\n") {
		if f := strings.Fields(l); len(f) > 0 && !strings.HasPrefix(l, "#") {
			m[strings.TrimSuffix(f[0], ":")] = true
		}
	}
	return m
}
