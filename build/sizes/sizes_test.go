package sizes

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
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

// TestReadResident builds a small program with its symbols, starts it
// and reads its resident pages: the runtime's code is on pages it ran,
// and every present byte belongs to one section and one package.
func TestReadResident(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "idle")
	if out, err := exec.Command("go", "build", "-o", exe, "./testdata/idle").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(exe)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer in.Close()
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if err := ClearRefs(pid); err != nil {
		t.Fatal(err)
	}
	r, err := ReadResident(pid, exe)
	if err != nil {
		t.Fatal(err)
	}
	var text, sum, secs int64
	for _, s := range r.Sections {
		if s.Name == ".text" {
			text = s.Resident
		}
		if s.Resident > s.Size+int64(2*r.PageSize) {
			t.Errorf("section %s: %d bytes resident of %d", s.Name, s.Resident, s.Size)
		}
		secs += s.Resident
	}
	for _, p := range r.Packages {
		sum += p.Resident
	}
	if text == 0 || sum != secs || sum != r.Total() {
		t.Fatalf(".text resident %d, packages %d, sections %d\n%s", text, sum, secs, r.Markdown(20))
	}
	if r.Of("runtime") < 64<<10 || r.Of("fmt") == 0 || r.Of(lineTable) == 0 {
		t.Errorf("runtime %d bytes, fmt %d, line table %d resident\n%s", r.Of("runtime"), r.Of("fmt"), r.Of(lineTable), r.Markdown(20))
	}
	if len(r.Mappings) < 3 {
		t.Errorf("mappings: %+v", r.Mappings)
	}
	t.Logf("\n%s", r.Markdown(15))
}

func TestParseSmaps(t *testing.T) {
	in := "00400000-00c3a000 r-xp 00000000 08:01 1234                       /usr/bin/outpost agent\n" +
		"Size:               8424 kB\nRss:                5000 kB\nReferenced:         1200 kB\nVmFlags: rd ex mr mw me\n" +
		"00c3a000-00c40000 rw-p 00000000 00:00 0 \nRss:  8 kB\n"
	m, err := parseSmaps([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 || m[0].start != 0x400000 || m[0].end != 0xc3a000 || m[0].inode != 1234 || m[0].path != "/usr/bin/outpost agent" ||
		m[0].kv["Rss"] != 5000 || m[0].kv["Referenced"] != 1200 || m[1].path != "" || m[1].kv["Rss"] != 8 {
		t.Fatalf("%+v", m)
	}
	for _, bad := range []string{"zz-1 r-xp 0 0 0\n", "1000-0 r-xp 0 08:01 1\n", "1000-2000 rw 0 08:01 1\n"} {
		if _, err := parseSmaps([]byte(bad)); err == nil {
			t.Errorf("parseSmaps(%q) accepted", bad)
		}
	}
}

func TestParseInitTrace(t *testing.T) {
	in := "init internal/bytealg @0.004 ms, 0 ms clock, 0 bytes, 0 allocs\n" +
		"some log line\n" +
		"init github.com/mochi-mqtt/server/v2/packets @3.1 ms, 0.60 ms clock, 368056 bytes, 587 allocs\n" +
		"init outpost.dev/wire @3.9 ms, 0.14 ms clock, 62016 bytes, 868 allocs\n"
	got, err := parseInitTrace([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Init{{"github.com/mochi-mqtt/server/v2/packets", 368056, 587, 0.60}, {"outpost.dev/wire", 62016, 868, 0.14}, {"internal/bytealg", 0, 0, 0}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("parseInitTrace = %v, want %v", got, want)
	}
	if _, err := parseInitTrace([]byte("init x @1 ms, zz ms clock, 1 bytes, 1 allocs\n")); err == nil {
		t.Error("a bad clock accepted")
	}
	if _, err := parseInitTrace([]byte("hello\n")); err == nil {
		t.Error("no init lines accepted")
	}
	md := InitMarkdown(got, 1)
	if !strings.Contains(md, "| github.com/mochi-mqtt/server/v2/packets | 368056 | 587 | 0.600 |") || !strings.Contains(md, "| all 3 inits | 430072 | 1455 | 0.74 |") {
		t.Errorf("rendered:\n%s", md)
	}
}
