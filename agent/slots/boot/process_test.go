package boot

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"outpost.dev/agent/slots"
)

// built holds the binaries of the process tests, built once per run.
type built struct {
	launcher, good, bad, hang string
	dir, packaged             string
}

var (
	buildOnce sync.Once
	builds    built
	buildErr  error
)

// buildAll builds outpost-boot (its slots directory and packaged agent
// set at link time to a temporary directory) and the fake agent three
// ways: good (marks itself healthy, exits 0), bad (exits 1 at once) and
// hang (waits for a signal).
func buildAll(t testing.TB) built {
	buildOnce.Do(func() {
		tmp, err := os.MkdirTemp("", "outpost-boot-test")
		if err != nil {
			buildErr = err
			return
		}
		b := built{dir: filepath.Join(tmp, "slots"), packaged: filepath.Join(tmp, "usr-bin-outpost-agent")}
		b.launcher, b.good, b.bad, b.hang = filepath.Join(tmp, "outpost-boot"), filepath.Join(tmp, "good"), filepath.Join(tmp, "bad"), filepath.Join(tmp, "hang")
		for _, c := range [][3]string{
			{b.launcher, "outpost.dev/agent/cmd/outpost-boot", "-X main.slotsDir=" + b.dir + " -X main.packaged=" + b.packaged},
			{b.good, "./testdata/fakeagent", "-X main.mode=good"},
			{b.bad, "./testdata/fakeagent", "-X main.mode=bad"},
			{b.hang, "./testdata/fakeagent", "-X main.mode=hang"},
		} {
			cmd := exec.Command("go", "build", "-o", c[0], "-ldflags", c[2], c[1])
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = errors.New("go build " + c[1] + ": " + err.Error() + "\n" + string(out))
				return
			}
		}
		builds = b
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builds
}

// gateway is one test's view of the built binaries: a fresh slots
// directory and the good agent as the packaged one.
type gateway struct {
	b   built
	log string
}

func newGateway(t *testing.T) *gateway {
	b := buildAll(t)
	if err := os.RemoveAll(b.dir); err != nil {
		t.Fatal(err)
	}
	copyFile(t, b.good, b.packaged)
	return &gateway{b: b, log: filepath.Join(t.TempDir(), "agent.log")}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

// launch runs the launcher as the service manager would and returns its
// exit code and the fake agent's runs in it ("SLOT MODE ARGS").
func (g *gateway) launch(t *testing.T) (int, []string) {
	t.Helper()
	before, _ := os.ReadFile(g.log)
	cmd := exec.Command(g.b.launcher, "run", "--state-dir", "/x")
	cmd.Env = append(os.Environ(), "FAKE_AGENT_LOG="+g.log)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(g.log)
	runs := strings.Split(strings.TrimSpace(string(after[len(before):])), "\n")
	t.Logf("launch: exit %d, runs %q, launcher said %q", code, runs, stderr.String())
	return code, runs
}

func (g *gateway) upgrade(t testing.TB, bin, version string, trial time.Duration) slots.Slot {
	t.Helper()
	s, err := slots.Open(g.b.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	slot, err := s.Install(bytes.NewReader(data), version, "sha256:"+hex.EncodeToString(sum[:]))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Switch(slot, trial); err != nil {
		t.Fatal(err)
	}
	return slot
}

func (g *gateway) state(t *testing.T) slots.State {
	t.Helper()
	s, err := slots.Open(g.b.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.State()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestLauncherProcesses runs the real launcher over real agent binaries:
// a gateway that never upgraded, an upgrade that exits at start and is
// rolled back after its third launch, one that becomes healthy, and one
// that hangs until the trial's deadline.
func TestLauncherProcesses(t *testing.T) {
	g := newGateway(t)
	const args = "run --state-dir /x"

	// Never upgraded: the packaged agent, with the launcher's arguments,
	// and no slots directory made.
	if code, runs := g.launch(t); code != 0 || len(runs) != 1 || runs[0] != "packaged good "+args {
		t.Fatalf("fresh gateway: exit %d, runs %q", code, runs)
	}
	if _, err := os.Stat(g.b.dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the launcher made %s on a gateway that never upgraded: %v", g.b.dir, err)
	}

	// An agent that exits at start: three launches, then the packaged agent.
	if slot := g.upgrade(t, g.b.bad, "v2-bad", time.Hour); slot != slots.A {
		t.Fatalf("installed into %s", slot)
	}
	for i := range slots.MaxBoots {
		if code, runs := g.launch(t); code != 1 || len(runs) != 1 || runs[0] != "a bad "+args {
			t.Fatalf("trial launch %d: exit %d, runs %q", i+1, code, runs)
		}
	}
	if code, runs := g.launch(t); code != 0 || len(runs) != 1 || runs[0] != "packaged good "+args {
		t.Fatalf("after three failed launches: exit %d, runs %q", code, runs)
	}
	st := g.state(t)
	if st.Current != slots.Packaged || st.Trial || st.RolledBack != slots.A || st.RolledBackVersion != "v2-bad" ||
		st.Reason != "exited 3 times at start: exit status 1" {
		t.Fatalf("after the rollback: %+v", st)
	}

	// An agent that works: it marks itself healthy on its first launch,
	// and is exec'd from then on.
	if slot := g.upgrade(t, g.b.good, "v3", time.Hour); slot != slots.A {
		t.Fatalf("installed into %s", slot)
	}
	for i := range 2 {
		if code, runs := g.launch(t); code != 0 || len(runs) != 1 || runs[0] != "a good "+args {
			t.Fatalf("healthy launch %d: exit %d, runs %q", i+1, code, runs)
		}
	}
	if st := g.state(t); st.Current != slots.A || st.CurrentVersion != "v3" || st.Trial {
		t.Fatalf("after the healthy upgrade: %+v", st)
	}

	// An agent that runs but never becomes healthy: stopped at the
	// deadline, and a (v3) runs again within the same launch.
	if slot := g.upgrade(t, g.b.hang, "v4-hang", time.Second); slot != slots.B {
		t.Fatalf("installed into %s", slot)
	}
	code, runs := g.launch(t)
	if code != 0 || len(runs) != 2 || runs[0] != "b hang "+args || runs[1] != "a good "+args {
		t.Fatalf("hanging upgrade: exit %d, runs %q", code, runs)
	}
	st = g.state(t)
	if st.Current != slots.A || st.Previous != slots.B || st.RolledBack != slots.B || st.Reason != "not Ready within 1s" {
		t.Fatalf("after the deadline: %+v", st)
	}
}

// TestMain removes what buildAll built.
func TestMain(m *testing.M) {
	code := m.Run()
	if builds.launcher != "" {
		os.RemoveAll(filepath.Dir(builds.launcher))
	}
	os.Exit(code)
}
