package cross

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := ModuleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// TestSizeBudget builds the agent for every gateway architecture exactly as
// make cross does and fails when one is over its budget in budget.json.
func TestSizeBudget(t *testing.T) {
	budget, err := LoadBudget()
	if err != nil {
		t.Fatal(err)
	}
	root, dir := moduleRoot(t), t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	sizes := map[string]int64{}
	for _, tg := range Targets {
		out := filepath.Join(dir, "outpost-agent-"+tg.Name())
		if err := Build(ctx, tg, out, Options{ModuleRoot: root, Version: "v0.0.0-size"}); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(out)
		if err != nil {
			t.Fatal(err)
		}
		sizes[tg.Name()] = fi.Size()
		t.Logf("%-14s %s (budget %s)", tg.Name(), MB(fi.Size()), MB(budget[tg.Name()]))
	}
	for _, line := range budget.Check(sizes) {
		t.Error(line)
	}
}

// TestReproducible links the arm64 agent twice, into different
// directories, and wants the same bytes. (Compilation comes from the build
// cache both times; -trimpath is what keeps the checkout's path out.)
func TestReproducible(t *testing.T) {
	root := moduleRoot(t)
	tg, err := Lookup("arm64")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var bins [2][]byte
	for i := range bins {
		out := filepath.Join(t.TempDir(), "sub", "outpost-agent")
		if err := Build(ctx, tg, out, Options{ModuleRoot: root, Version: "v1.2.3"}); err != nil {
			t.Fatal(err)
		}
		if bins[i], err = os.ReadFile(out); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(bins[0], bins[1]) {
		t.Fatalf("two builds of the same source differ (%d and %d bytes): something stamps time or paths into the binary", len(bins[0]), len(bins[1]))
	}
	if !bytes.Contains(bins[0], []byte("v1.2.3")) {
		t.Error("the version is not stamped into the binary")
	}
}

func TestBudgetCheck(t *testing.T) {
	b := Budget{"linux-arm64": 1000, "linux-amd64": 2000}
	if over := b.Check(map[string]int64{"linux-arm64": 1000, "linux-amd64": 10}); len(over) != 0 {
		t.Errorf("at or under budget reported: %q", over)
	}
	over := b.Check(map[string]int64{"linux-arm64": 1500})
	if len(over) != 1 || !strings.HasPrefix(over[0], "linux-arm64: outpost-agent is 0.00 MB, over its budget") {
		t.Errorf("over budget: %q", over)
	}
}

func TestLookup(t *testing.T) {
	for name, want := range map[string]string{"arm64": "linux-arm64", "armhf": "linux-arm-v7", "linux-arm-v6": "linux-arm-v6", "amd64": "linux-amd64"} {
		got, err := Lookup(name)
		if err != nil || got.Name() != want {
			t.Errorf("Lookup(%q) = %v, %v; want %s", name, got.Name(), err, want)
		}
	}
	if _, err := Lookup("arm"); err == nil || !strings.Contains(err.Error(), "known are linux-arm-v6, linux-arm-v7, linux-arm64") {
		t.Errorf("Lookup(arm) error = %v; want one listing the known targets", err)
	}
}
