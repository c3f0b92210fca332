package boot

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"outpost.dev/agent/slots"
)

var t0 = time.Unix(1_800_000_000, 0)

// fixture is a slots directory with a packaged agent.
type fixture struct {
	dir string
	s   *slots.Slots
	now time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	root := t.TempDir()
	f := &fixture{dir: filepath.Join(root, "slots"), now: t0}
	s, err := slots.Open(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.Packaged = filepath.Join(root, "outpost-agent")
	if err := os.WriteFile(s.Packaged, []byte("packaged"), 0o755); err != nil {
		t.Fatal(err)
	}
	s.Now = func() time.Time { return f.now }
	f.s = s
	return f
}

func (f *fixture) install(t *testing.T, content, version string) slots.Slot {
	t.Helper()
	sum := sha256.Sum256([]byte(content))
	slot, err := f.s.Install(bytes.NewReader([]byte(content)), version, "sha256:"+hex.EncodeToString(sum[:]))
	if err != nil {
		t.Fatal(err)
	}
	return slot
}

func (f *fixture) must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// upgraded: a healthy in slot a, then b on a 5-minute trial from t0.
func upgraded(t *testing.T, f *fixture) {
	f.must(t, f.s.Switch(f.install(t, "v1", "v1"), time.Minute))
	f.must(t, f.s.MarkHealthy(slots.A))
	f.must(t, f.s.Switch(f.install(t, "v2", "v2"), 5*time.Minute))
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, f *fixture)
		at    time.Duration // after t0
		want  Plan
		// reason is the recorded rollback's reason; note a text the plan's note has.
		reason, note string
		boots        int
	}{
		{name: "never upgraded: packaged", setup: func(*testing.T, *fixture) {}, want: Plan{Slot: slots.Packaged}},
		{name: "healthy slot: exec it", setup: func(t *testing.T, f *fixture) {
			f.must(t, f.s.Switch(f.install(t, "v1", "v1"), time.Minute))
			f.must(t, f.s.MarkHealthy(slots.A))
		}, want: Plan{Slot: slots.A}},
		{name: "trial: launch counted", setup: upgraded, at: time.Minute,
			want: Plan{Slot: slots.B, Trial: true, Remaining: 4 * time.Minute}, boots: 1},
		{name: "trial: clock behind the switch (no RTC), the whole timeout", setup: upgraded, at: -365 * 24 * time.Hour,
			want: Plan{Slot: slots.B, Trial: true, Remaining: 5 * time.Minute}, boots: 1},
		{name: "trial: third exit rolls back", setup: func(t *testing.T, f *fixture) {
			upgraded(t, f)
			for range slots.MaxBoots {
				if _, err := Decide(f.s); err != nil {
					t.Fatal(err)
				}
				f.must(t, f.s.Update(func(p *slots.Pointer) error { p.LastExit = "exit status 1"; return nil }))
			}
		}, want: Plan{Slot: slots.A}, reason: "exited 3 times at start: exit status 1", note: "rolled back from slot b (v2) to a"},
		{name: "trial: past the deadline rolls back", setup: upgraded, at: 5*time.Minute + time.Second,
			want: Plan{Slot: slots.A}, reason: "not Ready within 5m0s", note: "rolled back from slot b (v2) to a: not Ready"},
		{name: "trial: damaged binary rolls back", setup: func(t *testing.T, f *fixture) {
			upgraded(t, f)
			f.must(t, os.WriteFile(filepath.Join(f.dir, "b", slots.Binary), []byte("v2 but not quite"), 0o755))
		}, want: Plan{Slot: slots.A}, reason: "slot b: binary does not match its digest (damaged)", note: "rolled back from slot b"},
		{name: "healthy slot gone: previous", setup: func(t *testing.T, f *fixture) {
			upgraded(t, f)
			f.must(t, f.s.MarkHealthy(slots.B))
			f.must(t, os.Remove(filepath.Join(f.dir, "b", slots.Binary)))
		}, want: Plan{Slot: slots.A}, reason: "no such file", note: "leaving slot b for a"},
		{name: "healthy slot and previous damaged: packaged", setup: func(t *testing.T, f *fixture) {
			upgraded(t, f)
			f.must(t, f.s.MarkHealthy(slots.B))
			f.must(t, os.Remove(filepath.Join(f.dir, "b", slots.Binary)))
			f.must(t, os.WriteFile(filepath.Join(f.dir, "a", slots.Binary), nil, 0o755))
		}, want: Plan{Slot: slots.Packaged}, reason: "no such file", note: "leaving slot b for packaged"},
		{name: "rollback to a damaged previous: packaged", setup: func(t *testing.T, f *fixture) {
			upgraded(t, f)
			f.must(t, os.WriteFile(filepath.Join(f.dir, "a", slots.Binary), nil, 0o755))
		}, at: time.Hour, want: Plan{Slot: slots.Packaged}, reason: "does not match its digest", note: "leaving slot a for the packaged agent"},
		{name: "damaged pointer during a trial: the known-good a", setup: func(t *testing.T, f *fixture) {
			upgraded(t, f)
			f.must(t, os.WriteFile(filepath.Join(f.dir, "pointer"), []byte("outpost-slots 1\ncurrent b\n"), 0o600))
		}, want: Plan{Slot: slots.A}, reason: "back to the last known-good slot a", note: "pointer file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			tt.setup(t, f)
			f.now = t0.Add(tt.at)
			got, err := Decide(f.s)
			if err != nil {
				t.Fatal(err)
			}
			note := got.Note
			got.Note = ""
			if got != tt.want {
				t.Fatalf("Decide = %+v, want %+v", got, tt.want)
			}
			if !strings.Contains(note, tt.note) || (tt.note == "") != (note == "") {
				t.Fatalf("note %q, want one with %q", note, tt.note)
			}
			st, err := f.s.State()
			if err != nil {
				t.Fatal(err)
			}
			if st.Current != tt.want.Slot || st.Trial != tt.want.Trial || st.Boots != tt.boots {
				t.Fatalf("State %+v after Decide %+v (boots want %d)", st, tt.want, tt.boots)
			}
			if !strings.Contains(st.Reason, tt.reason) || (tt.reason == "") != (st.Reason == "") {
				t.Fatalf("reason %q, want one with %q", st.Reason, tt.reason)
			}
		})
	}
}

// fakeChild is an agent in a synctest bubble: it ends on a signal, or
// when the test says.
type fakeChild struct {
	mu      sync.Mutex
	signals []os.Signal
	done    chan Exit
	exit    func(os.Signal) (Exit, bool)
}

func (c *fakeChild) Signal(s os.Signal) error {
	c.mu.Lock()
	c.signals = append(c.signals, s)
	c.mu.Unlock()
	if e, ok := c.exit(s); ok {
		c.done <- e
	}
	return nil
}
func (c *fakeChild) Done() <-chan Exit { return c.done }

// run runs Run in the bubble with f's slots; the trial's child is made by
// child; exec records what would replace the launcher.
func runBoot(f *fixture, sigs chan os.Signal, child *fakeChild, started func()) (code int, execd string, log string) {
	var buf bytes.Buffer
	c := Config{Dir: f.dir, Packaged: f.s.Packaged, Args: []string{"run"}, Log: &buf, Grace: 10 * time.Second,
		Now: time.Now, After: time.After, Signals: sigs,
		Start: func(path string, argv, env []string) (Child, error) {
			if started != nil {
				started()
			}
			return child, nil
		},
		Exec: func(path string, argv, env []string) error { execd = path; return syscall.ENOEXEC },
	}
	code = Run(c)
	return code, execd, buf.String()
}

// supervised is what a trial's supervision is expected to leave.
type supervised struct {
	took    time.Duration // on synctest's clock
	code    int
	exec    slots.Slot // "" for none
	signals []os.Signal
	current slots.Slot // the state's Current, out of its trial in every case
	rolled  slots.Slot // the state's RolledBack
	reason  string
	log     string // a text the log has ("" for any)
}

// TestSupervise runs the trial's supervision on synctest's clock.
func TestSupervise(t *testing.T) {
	var (
		onKill = func(s os.Signal) (Exit, bool) { return Exit{Desc: "signal: killed", Code: 137}, s == syscall.SIGKILL }
		onTerm = func(s os.Signal) (Exit, bool) {
			return Exit{Desc: "signal: terminated", Code: 143}, s == syscall.SIGTERM
		}
	)
	tests := []struct {
		name string
		// exit says whether the child ends on a signal, and how.
		exit func(os.Signal) (Exit, bool)
		// events runs beside the launcher, sending the service manager's
		// signals on sigs.
		events func(t *testing.T, f *fixture, sigs chan<- os.Signal)
		want   supervised
	}{
		{
			// An agent that ignores SIGTERM: SIGKILL after the grace.
			name: "deadline passes: agent stopped, rolled back, previous exec'd", exit: onKill,
			want: supervised{took: 5*time.Minute + 10*time.Second, code: 1, exec: slots.A,
				signals: []os.Signal{syscall.SIGTERM, syscall.SIGKILL},
				current: slots.A, rolled: slots.B, reason: "not Ready within 5m0s", log: "not healthy by its deadline"},
		},
		{
			name: "healthy before the deadline: kept, signals forwarded", exit: onTerm,
			events: func(t *testing.T, f *fixture, sigs chan<- os.Signal) {
				time.Sleep(time.Minute)
				if err := f.s.MarkHealthy(slots.B); err != nil {
					t.Error(err)
				}
				time.Sleep(time.Hour) // well past the deadline
				sigs <- syscall.SIGHUP
				sigs <- syscall.SIGTERM
			},
			want: supervised{took: time.Hour + time.Minute, code: 143,
				signals: []os.Signal{syscall.SIGHUP, syscall.SIGTERM}, current: slots.B},
		},
		{
			// The rollback is written all the same; the child's 137 and no
			// exec while stopping.
			name: "stopped by the service manager during a rollback: no exec", exit: onKill,
			events: func(t *testing.T, f *fixture, sigs chan<- os.Signal) {
				time.Sleep(5*time.Minute + time.Second) // in the grace after SIGTERM
				sigs <- syscall.SIGTERM
			},
			want: supervised{took: 5*time.Minute + 10*time.Second, code: 137,
				signals: []os.Signal{syscall.SIGTERM, syscall.SIGTERM, syscall.SIGKILL},
				current: slots.A, rolled: slots.B, reason: "not Ready within 5m0s", log: "not healthy by its deadline"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFixture(t)
				f.s.Now = time.Now
				upgraded(t, f)
				child := &fakeChild{done: make(chan Exit, 1), exit: tt.exit}
				sigs := make(chan os.Signal)
				if tt.events != nil {
					go tt.events(t, f, sigs)
				}
				start := time.Now()
				code, execd, log := runBoot(f, sigs, child, nil)
				if took := time.Since(start); took != tt.want.took {
					t.Errorf("Run took %s, want %s", took, tt.want.took)
				}
				wantExec := ""
				if tt.want.exec != "" {
					wantExec = filepath.Join(f.dir, string(tt.want.exec), slots.Binary)
				}
				if code != tt.want.code || execd != wantExec {
					t.Fatalf("code %d, exec'd %q; want %d, %q", code, execd, tt.want.code, wantExec)
				}
				if !slices.Equal(child.signals, tt.want.signals) {
					t.Fatalf("child got %v, want %v", child.signals, tt.want.signals)
				}
				st, err := f.s.State()
				if err != nil {
					t.Fatal(err)
				}
				if st.Current != tt.want.current || st.Trial || st.RolledBack != tt.want.rolled || st.Reason != tt.want.reason {
					t.Fatalf("State %+v, want current %s out of its trial, rolled back %q, reason %q", st, tt.want.current, tt.want.rolled, tt.want.reason)
				}
				if !strings.Contains(log, tt.want.log) {
					t.Fatalf("log %q, want one with %q", log, tt.want.log)
				}
			})
		})
	}
	t.Run("exit during the trial: recorded, non-zero for a restart", func(t *testing.T) {
		for _, tc := range []struct {
			exit Exit
			want int
		}{{Exit{"exit status 1", 1}, 1}, {Exit{"exit status 2", 2}, 1}, {Exit{"exit status 0", 0}, 1}, {Exit{"signal: segmentation fault", 139}, 139}} {
			synctest.Test(t, func(t *testing.T) {
				f := newFixture(t)
				f.s.Now = time.Now
				upgraded(t, f)
				child := &fakeChild{done: make(chan Exit, 1)}
				code, _, _ := runBoot(f, make(chan os.Signal), child, func() { child.done <- tc.exit })
				p, _, _ := f.s.Load()
				if code != tc.want || !p.Trial || p.Boots != 1 || p.LastExit != tc.exit.Desc {
					t.Fatalf("%s: code %d, pointer %+v", tc.exit.Desc, code, p)
				}
			})
		}
	})
}
