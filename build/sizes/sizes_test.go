package sizes

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"outpost.dev/build/cross"
)

var update = flag.Bool("update", false, "rewrite docs/agent-size.md from a fresh build (make size-report)")

// TestSizeReport builds the arm64 agent and fails when docs/agent-size.md
// no longer describes it within the tolerances; with -update it rewrites
// the file instead.
func TestSizeReport(t *testing.T) {
	root, err := cross.ModuleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	tg, err := cross.Lookup("arm64")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r, err := Build(ctx, root, tg, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Packages) < 50 {
		t.Fatalf("only %d packages attributed: the symbol reading is broken", len(r.Packages))
	}
	doc := filepath.Join(root, "docs", "agent-size.md")
	if *update {
		if err := os.WriteFile(doc, r.Markdown(), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", doc)
		return
	}
	old, err := os.ReadFile(doc)
	if err != nil {
		t.Fatalf("%v: run make size-report", err)
	}
	for _, line := range Stale(old, r) {
		t.Errorf("docs/agent-size.md is stale: %s: run make size-report and commit it", line)
	}
}

func TestPackageOf(t *testing.T) {
	for sym, want := range map[string]string{
		"github.com/mochi-mqtt/server/v2/packets.init":                       "github.com/mochi-mqtt/server/v2/packets",
		"github.com/eclipse/paho%2emqtt%2egolang.(*ClientOptions).AddBroker": "github.com/eclipse/paho.mqtt.golang",
		"runtime.mallocgc":                           "runtime",
		"type:*outpost.dev/wire.Pod":                 "outpost.dev/wire",
		"type:.eq.outpost.dev/wire.Hello":            "outpost.dev/wire",
		"go:itab.*os.File,io.Reader":                 "os",
		"slices.SortFunc[go.shape.struct { A int }]": "slices",
		"go:func.*":             linker,
		"type:[]uint8":          linker,
		"type:map[string]int":   linker,
		"$f64.3ff0000000000000": linker,
		"crypto/internal/fips140/nistec.p256PrecomputedEmbed": "crypto/internal/fips140/nistec",
	} {
		if got := PackageOf(sym); got != want {
			t.Errorf("PackageOf(%q) = %q, want %q", sym, got, want)
		}
	}
}

func TestStale(t *testing.T) {
	r := Report{Target: "linux-arm64", FileSize: 1 << 20, Packages: []Package{
		{Path: "runtime", Code: 300 << 10, Data: 100 << 10},
		{Path: "outpost.dev/wire", Code: 60 << 10},
		{Path: "tiny", Code: 1 << 10},
	}}
	doc := r.Markdown()
	if !strings.Contains(string(doc), "| runtime | 400 |") || !strings.Contains(string(doc), "| 1 smaller packages | 1 |") {
		t.Fatalf("rendered:\n%s", doc)
	}
	if s := Stale(doc, r); len(s) != 0 {
		t.Errorf("a report is stale against itself: %q", s)
	}
	grown := r
	grown.Packages = []Package{{Path: "runtime", Code: 330 << 10, Data: 100 << 10}, {Path: "outpost.dev/wire", Code: 60 << 10}}
	if s := Stale(doc, grown); len(s) != 0 {
		t.Errorf("30 KiB of drift reported: %q", s)
	}
	grown.Packages = []Package{{Path: "runtime", Code: 500 << 10, Data: 100 << 10}, {Path: "big/new", Code: 40 << 10}}
	s := Stale(doc, grown)
	want := []string{"big/new: 0 KiB in the report, 40 KiB now", "outpost.dev/wire: 60 KiB in the report, 0 KiB now", "runtime: 400 KiB in the report, 600 KiB now"}
	if strings.Join(s, "\n") != strings.Join(want, "\n") {
		t.Errorf("Stale = %q, want %q", s, want)
	}
}
