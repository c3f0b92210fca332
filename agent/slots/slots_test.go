package slots

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"outpost.dev/wire"
)

// binary is an install's content and digest.
type binary struct {
	data   []byte
	digest string
}

func newBinary(s string) binary {
	sum := sha256.Sum256([]byte(s))
	return binary{[]byte(s), "sha256:" + hex.EncodeToString(sum[:])}
}

var t0 = time.Unix(1_800_000_000, 0)

func openTest(t *testing.T, dir string) *Slots {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.Now = func() time.Time { return t0 }
	return s
}

// op is one step of a state machine test.
type op struct {
	name string
	do   func(s *Slots) error
	// wantErr, when set, is a text the error must contain.
	wantErr string
}

func install(b binary, version string) op {
	return op{name: "install " + version, do: func(s *Slots) error { _, err := s.Install(bytes.NewReader(b.data), version, b.digest); return err }}
}

func switchTo(slot Slot, d time.Duration) op {
	return op{name: "switch " + string(slot), do: func(s *Slots) error { return s.Switch(slot, d) }}
}

func healthy(slot Slot) op {
	return op{name: "healthy " + string(slot), do: func(s *Slots) error { return s.MarkHealthy(slot) }}
}

func rollback(why string) op {
	return op{name: "rollback", do: func(s *Slots) error { return s.Rollback(why) }}
}

func failing(o op, want string) op { o.wantErr = want; return o }

func TestStateMachine(t *testing.T) {
	v1, v2, v3 := newBinary("agent v1"), newBinary("agent v2"), newBinary("agent v3")
	tests := []struct {
		name string
		ops  []op
		want State
	}{
		{name: "fresh gateway runs the packaged agent",
			want: State{Current: Packaged, Previous: Packaged}},
		{name: "install writes the inactive slot and changes nothing else",
			ops:  []op{install(v1, "v1")},
			want: State{Current: Packaged, Previous: Packaged}},
		{name: "switch starts a trial with the packaged agent to return to",
			ops:  []op{install(v1, "v1"), switchTo(A, 5*time.Minute)},
			want: State{Current: A, Previous: Packaged, CurrentVersion: "v1", Trial: true, TrialDeadline: t0.Add(5 * time.Minute)}},
		{name: "healthy ends the trial",
			ops:  []op{install(v1, "v1"), switchTo(A, 5*time.Minute), healthy(A)},
			want: State{Current: A, Previous: Packaged, CurrentVersion: "v1"}},
		{name: "healthy from another slot does not end the trial",
			ops:  []op{install(v1, "v1"), switchTo(A, time.Minute), healthy(Packaged)},
			want: State{Current: A, Previous: Packaged, CurrentVersion: "v1", Trial: true, TrialDeadline: t0.Add(time.Minute)}},
		{name: "second upgrade goes into b, the healthy a is kept",
			ops:  []op{install(v1, "v1"), switchTo(A, time.Minute), healthy(A), install(v2, "v2"), switchTo(B, time.Minute)},
			want: State{Current: B, Previous: A, CurrentVersion: "v2", PreviousVersion: "v1", Trial: true, TrialDeadline: t0.Add(time.Minute)}},
		{name: "rollback returns to the previous slot and says why",
			ops: []op{install(v1, "v1"), switchTo(A, time.Minute), healthy(A), install(v2, "v2"), switchTo(B, time.Minute),
				rollback("exited 3 times at start: exit status 1")},
			want: State{Current: A, Previous: B, CurrentVersion: "v1", PreviousVersion: "v2",
				RolledBack: B, RolledBackVersion: "v2", RolledBackAt: t0, Reason: "exited 3 times at start: exit status 1"}},
		{name: "after a rollback the failed slot is written again",
			ops: []op{install(v1, "v1"), switchTo(A, time.Minute), healthy(A), install(v2, "v2"), switchTo(B, time.Minute),
				rollback("not Ready within 1m0s"), install(v3, "v3"), switchTo(B, time.Minute), healthy(B)},
			want: State{Current: B, Previous: A, CurrentVersion: "v3", PreviousVersion: "v1",
				RolledBack: B, RolledBackVersion: "v2", RolledBackAt: t0, Reason: "not Ready within 1m0s"}},
		{name: "no install or switch during a trial",
			ops: []op{install(v1, "v1"), switchTo(A, time.Minute),
				failing(install(v2, "v2"), "on trial"), failing(switchTo(B, time.Minute), "on trial")},
			want: State{Current: A, Previous: Packaged, CurrentVersion: "v1", Trial: true, TrialDeadline: t0.Add(time.Minute)}},
		{name: "switch to an empty slot, the current one, or packaged is refused",
			ops: []op{failing(switchTo(A, time.Minute), "nothing installed"), install(v1, "v1"), switchTo(A, time.Minute), healthy(A),
				failing(switchTo(A, time.Minute), "already current"), failing(switchTo(Packaged, time.Minute), "only a or b")},
			want: State{Current: A, Previous: Packaged, CurrentVersion: "v1"}},
		{name: "a wrong digest, a bad version or too big a binary is refused",
			ops: []op{failing(op{name: "wrong digest", do: func(s *Slots) error {
				_, err := s.Install(bytes.NewReader(v1.data), "v1", v2.digest)
				return err
			}}, "want "+v2.digest), failing(install(v1, "v1/../../x"), "only letters"), failing(op{name: "too big", do: func(s *Slots) error {
				s.MaxSize = 4
				_, err := s.Install(bytes.NewReader(v1.data), "v1", v1.digest)
				return err
			}}, "larger than 4 bytes")},
			want: State{Current: Packaged, Previous: Packaged}},
		{name: "rollback without a trial does nothing",
			ops:  []op{install(v1, "v1"), switchTo(A, time.Minute), healthy(A), rollback("late")},
			want: State{Current: A, Previous: Packaged, CurrentVersion: "v1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTest(t, dir)
			for _, o := range tt.ops {
				err := o.do(s)
				if o.wantErr == "" && err != nil {
					t.Fatalf("%s: %v", o.name, err)
				}
				if o.wantErr != "" && (err == nil || !strings.Contains(err.Error(), o.wantErr)) {
					t.Fatalf("%s: error %v, want one saying %q", o.name, err, o.wantErr)
				}
			}
			// From a new Slots: all of it is on disk.
			got, err := openTest(t, dir).State()
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("State =\n%+v\nwant\n%+v", got, tt.want)
			}
			// No temporary file is left behind.
			filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
				if strings.HasSuffix(path, ".tmp") {
					t.Errorf("left behind: %s", path)
				}
				return nil
			})
		})
	}
}

func TestInstalledBinary(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	v1 := newBinary("agent v1")
	slot, err := s.Install(bytes.NewReader(v1.data), "v1", v1.digest)
	if err != nil || slot != A {
		t.Fatalf("Install = %s, %v; want a", slot, err)
	}
	fi, err := os.Lstat(filepath.Join(dir, "a", Binary))
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o755 {
		t.Fatalf("installed binary mode %v, want a regular file 0755", fi.Mode())
	}
	if s.Path(A) != filepath.Join(dir, "a", Binary) || s.Path(Packaged) != PackagedPath {
		t.Fatalf("paths %s, %s", s.Path(A), s.Path(Packaged))
	}
	p, _, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CheckBinary(p, A); err != nil {
		t.Fatalf("CheckBinary after install: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a", Binary), []byte("agent v1 damaged"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckBinary(p, A); err == nil || !strings.Contains(err.Error(), "does not match its digest") {
		t.Fatalf("CheckBinary of a damaged binary: %v", err)
	}
}

// TestSymlinksRefused: a slot directory or binary replaced by a symlink,
// inside or out of the slots directory, is neither written through nor run.
func TestSymlinksRefused(t *testing.T) {
	v1 := newBinary("agent v1")
	outside := t.TempDir()
	for _, target := range []string{outside, "b"} {
		t.Run(target, func(t *testing.T) {
			dir := t.TempDir()
			s := openTest(t, dir)
			if err := os.Mkdir(filepath.Join(dir, "b"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, filepath.Join(dir, "a")); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Install(bytes.NewReader(v1.data), "v1", v1.digest); err == nil {
				t.Fatal("Install wrote through a symlinked slot directory")
			}
			for _, d := range []string{outside, filepath.Join(dir, "b")} {
				if ents, _ := os.ReadDir(d); len(ents) != 0 {
					t.Fatalf("Install wrote into %s: %v", d, ents)
				}
			}
			p := Pointer{Current: A, Previous: Packaged, Versions: [2]string{"v1", ""}, Digests: [2]string{v1.digest, ""}}
			if err := s.CheckBinary(p, A); err == nil || !strings.Contains(err.Error(), "symlink") {
				t.Fatalf("CheckBinary through a symlink: %v", err)
			}
		})
	}
}

// TestDamagedPointer: a pointer file that does not decode is replaced by
// the last known-good copy, else by the packaged agent, with the reason.
func TestDamagedPointer(t *testing.T) {
	v1, v2 := newBinary("agent v1"), newBinary("agent v2")
	tests := []struct {
		name    string
		ops     []op
		damage  func(dir string) error
		current Slot
	}{
		{name: "garbage, known-good a", ops: []op{install(v1, "v1"), switchTo(A, time.Minute), healthy(A)},
			damage: func(dir string) error {
				return os.WriteFile(filepath.Join(dir, pointerName), []byte("\x00\x00\x00"), 0o600)
			}, current: A},
		{name: "bit flip during a trial: back to the good a, not the trial b",
			ops: []op{install(v1, "v1"), switchTo(A, time.Minute), healthy(A), install(v2, "v2"), switchTo(B, time.Minute)},
			damage: func(dir string) error {
				b, err := os.ReadFile(filepath.Join(dir, pointerName))
				if err != nil {
					return err
				}
				b[20] ^= 1
				return os.WriteFile(filepath.Join(dir, pointerName), b, 0o600)
			}, current: A},
		{name: "both copies damaged: packaged", ops: []op{install(v1, "v1"), switchTo(A, time.Minute), healthy(A)},
			damage: func(dir string) error {
				for _, n := range []string{pointerName, goodName} {
					if err := os.WriteFile(filepath.Join(dir, n), []byte("outpost-slots 1\n"), 0o600); err != nil {
						return err
					}
				}
				return nil
			}, current: Packaged},
		{name: "pointer replaced by a symlink", ops: []op{install(v1, "v1"), switchTo(A, time.Minute), healthy(A)},
			damage: func(dir string) error {
				if err := os.Remove(filepath.Join(dir, pointerName)); err != nil {
					return err
				}
				return os.Symlink(goodName, filepath.Join(dir, pointerName))
			}, current: A},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTest(t, dir)
			for _, o := range tt.ops {
				if err := o.do(s); err != nil {
					t.Fatalf("%s: %v", o.name, err)
				}
			}
			if err := tt.damage(dir); err != nil {
				t.Fatal(err)
			}
			st, err := s.State()
			if err != nil {
				t.Fatal(err)
			}
			if st.Current != tt.current || st.Trial || !strings.Contains(st.Reason, "pointer file") {
				t.Fatalf("State = %+v, want current %s, no trial, a reason naming the pointer file", st, tt.current)
			}
			// The next write repairs the file.
			if err := s.MarkHealthy(A); err != nil {
				t.Fatal(err)
			}
			p, damaged, err := s.Load()
			if err != nil || damaged != nil || p.Current != tt.current {
				t.Fatalf("after repair: %+v, %v, %v", p, damaged, err)
			}
		})
	}
}

var errCrash = errors.New("power cut")

// TestPowerLoss stops each write after each of its steps, as a power cut
// would, and checks that the pointer read afterwards is the state before
// the operation or the one after it, and the slots stay usable.
func TestPowerLoss(t *testing.T) {
	v1, v2 := newBinary("agent v1"), newBinary("agent v2")
	setup := []op{install(v1, "v1"), switchTo(A, time.Minute), healthy(A)}
	steps := []string{"write binary", "fsync binary", "rename binary",
		"write pointer", "fsync pointer", "rename pointer", "write pointer.good", "fsync pointer.good", "rename pointer.good"}
	ops := []op{install(v2, "v2"), switchTo(B, time.Minute), healthy(B), rollback("not Ready within 1m0s")}
	for _, step := range steps {
		for i := range ops {
			t.Run(fmt.Sprintf("%s/after %s", ops[i].name, step), func(t *testing.T) {
				dir := t.TempDir()
				s := openTest(t, dir)
				// Run the ops before ops[i] whole, then ops[i] up to the step.
				for _, o := range append(append([]op{}, setup...), ops[:i]...) {
					if err := o.do(s); err != nil {
						t.Fatalf("%s: %v", o.name, err)
					}
				}
				before, err := s.State()
				if err != nil {
					t.Fatal(err)
				}
				crashed := false
				s.crash = func(name string) error {
					if name == step {
						crashed = true
						return errCrash
					}
					return nil
				}
				err = ops[i].do(s)
				if crashed != (err != nil) {
					t.Fatalf("%s: crashed %v, err %v", ops[i].name, crashed, err)
				}
				s2 := openTest(t, dir)
				after, err := s2.State()
				if err != nil {
					t.Fatal(err)
				}
				if after.Reason != before.Reason && strings.Contains(after.Reason, "pointer file") {
					t.Fatalf("pointer damaged by a power cut after %s: %s", step, after.Reason)
				}
				// Run the op again whole: it must now succeed (or already
				// have happened) and leave the state it does without a cut.
				if err := ops[i].do(s2); err != nil && !strings.Contains(err.Error(), "on trial") {
					t.Fatalf("%s again after the cut: %v", ops[i].name, err)
				}
				ref := openTest(t, t.TempDir())
				for _, o := range append(append([]op{}, setup...), ops[:i+1]...) {
					if err := o.do(ref); err != nil {
						t.Fatal(err)
					}
				}
				got, _ := s2.State()
				want, _ := ref.State()
				if got != want {
					t.Fatalf("after the cut and a retry:\n%+v\nwithout a cut:\n%+v", got, want)
				}
				if i == 0 || i == 1 {
					p, _, _ := s2.Load()
					if err := s2.CheckBinary(p, B); err != nil {
						t.Fatalf("slot b after the retry: %v", err)
					}
				}
			})
		}
	}
}

// TestMaxBinarySizeIsTheWireBound: a slot takes any artifact the relay
// and the agent's download let through, and nothing larger.
func TestMaxBinarySizeIsTheWireBound(t *testing.T) {
	if MaxBinarySize != wire.MaxUpgradeSize {
		t.Fatalf("slots.MaxBinarySize %d, wire.MaxUpgradeSize %d: make them one bound", MaxBinarySize, wire.MaxUpgradeSize)
	}
}
