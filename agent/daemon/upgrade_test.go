package daemon

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"log/slog"
	"testing"
	"time"

	"outpost.dev/agent/config"
	"outpost.dev/agent/slots"
	"outpost.dev/agent/upgrade"
	"outpost.dev/test/wait"
)

// TestSlotInstaller: agent/upgrade's installer over real slots. An install
// and switch put the new slot on trial and ask for the restart; the new
// agent cannot declare itself healthy before the health gate (connected,
// Node Ready) has ended the trial; the state it reports follows the
// pointer, and a rollback names the version left and why.
func TestSlotInstaller(t *testing.T) {
	sl, err := slots.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer sl.Close()
	log := slog.New(slog.DiscardHandler)

	// The packaged agent (v1) installs v2 and switches to it.
	restarts := 0
	old := &slotInstaller{sl: sl, running: slots.Packaged, gate: &healthGate{log: log}, version: "v1", restart: func() { restarts++ }}
	if st := old.State(); st.Version != "v1" || st.Trial || st.RolledBack != "" {
		t.Fatalf("state before any upgrade = %+v", st)
	}
	bin := []byte("agent v2")
	slot, err := old.Install(bytes.NewReader(bin), "v2", sha256.Sum256(bin))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Install(bytes.NewReader(bin), "v2", sha256.Sum256([]byte("other"))); err == nil {
		t.Fatal("an artifact that does not match its digest was installed")
	}
	if err := old.Switch(slot, time.Hour); err != nil {
		t.Fatal(err)
	}
	if restarts != 1 {
		t.Fatalf("restart asked %d times after a switch, want 1", restarts)
	}

	// v2 runs from its slot, on trial.
	gate := &healthGate{sl: sl, running: slots.Slot(slot), log: log}
	healthy := make(chan struct{}, 1)
	gate.healthy = func() { healthy <- struct{}{} }
	v2 := &slotInstaller{sl: sl, running: slots.Slot(slot), gate: gate, version: "v2", restart: func() { t.Error("restart without a switch") }}
	if st := v2.State(); st.Version != "v2" || !st.Trial {
		t.Fatalf("state on trial = %+v", st)
	}
	if err := v2.MarkHealthy(); !errors.Is(err, upgrade.ErrNotReady) {
		t.Fatalf("MarkHealthy before the Node is Ready = %v, want ErrNotReady", err)
	}
	gate.queued(3, true)
	gate.acked(3)
	select {
	case <-healthy:
	case <-time.After(10 * time.Second):
		t.Fatal("the gate did not say the trial ended")
	}
	if err := v2.MarkHealthy(); err != nil {
		t.Fatalf("MarkHealthy after the gate: %v", err)
	}
	if st := v2.State(); st.Version != "v2" || st.Trial {
		t.Fatalf("state after the trial = %+v", st)
	}

	// v3 is installed and switched to, then rolled back by the launcher:
	// v2, running again, reports it.
	bin3 := []byte("agent v3")
	slot3, err := v2.Install(bytes.NewReader(bin3), "v3", sha256.Sum256(bin3))
	if err != nil {
		t.Fatal(err)
	}
	v2.restart = func() {}
	if err := v2.Switch(slot3, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := sl.Rollback("exited 3 times at start: exit status 1"); err != nil {
		t.Fatal(err)
	}
	back := &slotInstaller{sl: sl, running: slots.Slot(slot), gate: &healthGate{log: log}, version: "v2", restart: func() {}}
	wait.For(t, time.Second, "the rollback in the state", func() bool {
		st := back.State()
		return st.Version == "v2" && !st.Trial && st.RolledBack == "v3" && st.Reason == "exited 3 times at start: exit status 1"
	})
}

// TestUpgradesOn: upgrades need a pinned key and the launcher's slots.
func TestUpgradesOn(t *testing.T) {
	sl, err := slots.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer sl.Close()
	key := make([]byte, 32)
	log := slog.New(slog.DiscardHandler)
	for _, c := range []struct {
		name string
		cfg  config.Config
		sl   *slots.Slots
		want bool
	}{
		{"no key", config.Config{}, sl, false},
		{"no launcher", config.Config{UpgradePublicKey: key}, nil, false},
		{"both", config.Config{UpgradePublicKey: key}, sl, true},
	} {
		if got := upgradesOn(c.cfg, c.sl, log); got != c.want {
			t.Errorf("%s: upgradesOn = %v, want %v", c.name, got, c.want)
		}
	}
	var coded interface{ ExitCode() int }
	if !errors.As(Restart, &coded) || coded.ExitCode() != slots.ExitRestart {
		t.Fatalf("Restart's exit status is not slots.ExitRestart")
	}
}
