package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"outpost.dev/agent/slots"
	"outpost.dev/test/wait"
)

// TestUpgradeTrialEndsWhenReady: the real agent, installed into a slot
// and switched to on trial, is started by the real launcher, connects,
// its Node turns Ready, and it ends its own trial; the launcher counted
// one launch.
func TestUpgradeTrialEndsWhenReady(t *testing.T) {
	needStack(t)
	ctx := ctxFor(t, 3*time.Minute)
	dir := t.TempDir()
	launcher, slotsDir := buildLauncher(t, ctx, dir)
	agentBin := filepath.Join(st.BinDir, "outpost-agent")

	// An upgrade to the same agent, as agent/upgrade would install it.
	sl, err := slots.Open(slotsDir)
	if err != nil {
		t.Fatal(err)
	}
	defer sl.Close()
	data, err := os.ReadFile(agentBin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	slot, err := sl.Install(bytes.NewReader(data), "v0.1.0-test", "sha256:"+hex.EncodeToString(sum[:]))
	if err != nil {
		t.Fatal(err)
	}
	if err := sl.Switch(slot, 5*time.Minute); err != nil {
		t.Fatal(err)
	}

	a, err := st.Join(ctx, relay, "upgrade-trial")
	if err != nil {
		t.Fatal(err)
	}
	a.Launcher = launcher
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	if err := st.WaitNodeReady(ctx, a.Name, true, time.Minute); err != nil {
		t.Fatal(err)
	}
	wait.For(t, time.Minute, "the agent to end its trial", func() bool {
		s, err := sl.State()
		return err == nil && !s.Trial
	})
	s, err := sl.State()
	if err != nil {
		t.Fatal(err)
	}
	if s.Current != slot || s.CurrentVersion != "v0.1.0-test" || s.Previous != slots.Packaged || s.RolledBack != "" || s.Reason != "" {
		t.Fatalf("after the trial: %+v", s)
	}
	// The launcher is still the agent's parent; a stop reaches the agent.
	if err := a.Stop(); err != nil {
		t.Fatalf("stopping the launcher and its agent: %v", err)
	}
}
