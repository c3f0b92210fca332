// Package cross builds the agent for the gateway architectures the way
// make cross does: static (CGO_ENABLED=0), stripped, with paths trimmed and
// no VCS stamp, so the same source gives the same bytes on any machine.
// The packaging and image builders take their binaries from here, and the
// size budget in budget.json is checked against these builds.
package cross

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
)

// Target is one architecture the agent ships for.
type Target struct {
	GOARCH string // amd64, arm64, arm, riscv64
	GOARM  string // 6 or 7 when GOARCH is arm
	// Deb is the Debian architecture name its package carries.
	Deb string
}

// Targets lists every gateway architecture, in the order make cross prints
// them. armel carries the ARMv6 build (Raspberry Pi Zero and 1 under
// Debian's armel); armhf the ARMv7 one.
var Targets = []Target{
	{GOARCH: "arm", GOARM: "6", Deb: "armel"},
	{GOARCH: "arm", GOARM: "7", Deb: "armhf"},
	{GOARCH: "arm64", Deb: "arm64"},
	{GOARCH: "riscv64", Deb: "riscv64"},
	{GOARCH: "amd64", Deb: "amd64"},
}

// Name is the target as make cross names its binary's suffix and the
// budget file its key: linux-arm64, linux-arm-v6.
func (t Target) Name() string {
	if t.GOARCH == "arm" {
		return "linux-arm-v" + t.GOARM
	}
	return "linux-" + t.GOARCH
}

// Lookup finds a target by its Name, its GOARCH (for every arch but arm)
// or its Debian architecture. An unknown name is an error listing the
// known ones.
func Lookup(name string) (Target, error) {
	var names []string
	for _, t := range Targets {
		if name == t.Name() || name == t.Deb || (name == t.GOARCH && t.GOARCH != "arm") {
			return t, nil
		}
		names = append(names, t.Name())
	}
	return Target{}, fmt.Errorf("unknown architecture %q: known are %s (or their Debian names)", name, strings.Join(names, ", "))
}

// Env is the environment go build runs in for this target.
func (t Target) Env() []string {
	env := []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=" + t.GOARCH, "GOARM=" + t.GOARM, "GOFLAGS="}
	return append(os.Environ(), env...)
}

// Options are what varies between builds of one target.
type Options struct {
	// ModuleRoot is the directory holding outpost.dev's go.mod.
	ModuleRoot string
	// Version is stamped as main.version; "dev" when empty.
	Version string
	// Package is the main package; ./agent/cmd/outpost-agent when empty.
	Package string
	// Symbols keeps the symbol table (no -s -w), for tools that attribute
	// the binary's bytes to packages; shipped builds are stripped.
	Symbols bool
}

// Build builds the agent for t into out (a file path).
func Build(ctx context.Context, t Target, out string, o Options) error {
	if o.Version == "" {
		o.Version = "dev"
	}
	if o.Package == "" {
		o.Package = "./agent/cmd/outpost-agent"
	}
	out, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	ldflags := "-s -w -X main.version=" + o.Version
	if o.Symbols {
		ldflags = "-X main.version=" + o.Version
	}
	cmd := exec.CommandContext(ctx, GoTool(), "build", "-trimpath", "-buildvcs=false",
		"-ldflags", ldflags, "-o", out, o.Package)
	cmd.Dir = o.ModuleRoot
	cmd.Env = t.Env()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build for %s: %v\n%s", t.Name(), err, stderr.String())
	}
	return nil
}

// GoTool is the go command of the toolchain running this program, so a
// test or go run uses the same Go as its caller.
func GoTool() string {
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return "go"
}

// ModuleRoot walks up from dir to the directory whose go.mod declares
// module outpost.dev.
func ModuleRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && bytes.HasPrefix(bytes.TrimSpace(b), []byte("module outpost.dev\n")) {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod for module outpost.dev above %s: run from the Outpost repository", dir)
		}
	}
}

//go:embed budget.json
var budgetJSON []byte

// Budget is the most bytes the stripped agent may take, per target Name.
type Budget map[string]int64

// Goal is the ceiling no budget may be raised past: the agent's stated
// size goal (linux/arm64 at most 15 MB, stripped).
const Goal = 15_000_000

// LoadBudget returns the checked-in budget (budget.json beside this file).
func LoadBudget() (Budget, error) {
	var f struct {
		MaxBytes Budget `json:"maxBytes"`
	}
	if err := json.Unmarshal(budgetJSON, &f); err != nil {
		return nil, fmt.Errorf("build/cross/budget.json: %w", err)
	}
	b := f.MaxBytes
	for _, t := range Targets {
		if b[t.Name()] <= 0 {
			return nil, fmt.Errorf("build/cross/budget.json has no budget for %s: add one", t.Name())
		}
	}
	for name, max := range b {
		if _, err := Lookup(name); err != nil {
			return nil, fmt.Errorf("build/cross/budget.json: %w", err)
		}
		if max > Goal {
			return nil, fmt.Errorf("build/cross/budget.json: %s allows %s, past the %s goal: shrink the agent instead", name, MB(max), MB(Goal))
		}
	}
	return b, nil
}

// Check returns one line per target over budget, sorted; none means all fit.
func (b Budget) Check(sizes map[string]int64) []string {
	var over []string
	for name, size := range sizes {
		if max := b[name]; size > max {
			over = append(over, fmt.Sprintf("%s: outpost-agent is %s, over its budget of %s (build/cross/budget.json) by %s: "+
				"see what grew with \"go tool nm -size -sort size\" on an unstripped build, or raise the budget in the same change that explains why",
				name, MB(size), MB(max), MB(size-max)))
		}
	}
	sort.Strings(over)
	return over
}

// MB formats a byte count as megabytes (10^6) with two decimals, as make
// cross prints sizes.
func MB(n int64) string { return fmt.Sprintf("%.2f MB", float64(n)/1e6) }
