package daemon

import (
	"encoding/hex"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"outpost.dev/agent/config"
	"outpost.dev/agent/outbox"
	"outpost.dev/agent/slots"
	"outpost.dev/agent/upgrade"
	"outpost.dev/wire"
)

// Restart is what Run returns after an upgrade switched slots: the agent
// exits with slots.ExitRestart and the launcher starts the new slot on
// trial. Containers keep running through it, as through any agent restart.
var Restart error = restartError{}

type restartError struct{}

func (restartError) Error() string {
	return "restarting into the upgraded agent (the launcher starts it on trial)"
}

// ExitCode is the exit status the launcher takes as "start the current slot".
func (restartError) ExitCode() int { return slots.ExitRestart }

// upgradesOn says whether this agent takes upgrades: a key is pinned in
// its configuration and it was started by the launcher (without slots
// there is nowhere safe to switch to).
func upgradesOn(cfg config.Config, sl *slots.Slots, log *slog.Logger) bool {
	switch {
	case len(cfg.UpgradePublicKey) == 0:
		return false
	case sl == nil:
		log.Warn("upgradePublicKey is set but the agent was not started by outpost-boot: upgrades are refused")
		return false
	}
	return true
}

// newUpgrades returns the upgrade manager over the launcher's slots.
func newUpgrades(cfg config.Config, sl *slots.Slots, running slots.Slot, gate *healthGate, version string,
	lk upgrade.Link, ob *outbox.Outbox, restart func(), log *slog.Logger) (*upgrade.Manager, error) {
	return upgrade.New(upgrade.Config{
		Dir: filepath.Join(cfg.StateDir, "upgrade"), PublicKey: cfg.UpgradePublicKey,
		Installer: &slotInstaller{sl: sl, running: running, gate: gate, version: version, restart: restart},
		Link:      lk, Outbox: ob, Log: log.With("component", "upgrade"),
	})
}

// slotInstaller is agent/upgrade's Installer over the launcher's slots. A
// trial ends through the health gate (connected and the Node written
// Ready), not at the first connect.
type slotInstaller struct {
	sl      *slots.Slots
	running slots.Slot
	gate    *healthGate
	version string // this agent's own: the packaged slot records none
	restart func()
}

func (i *slotInstaller) Install(r io.Reader, version string, digest [32]byte) (string, error) {
	s, err := i.sl.Install(r, version, "sha256:"+hex.EncodeToString(digest[:]))
	return string(s), err
}

// Switch puts slot on trial and has the agent exit so the launcher starts it.
func (i *slotInstaller) Switch(slot string, d time.Duration) error {
	if err := i.sl.Switch(slots.Slot(slot), d); err != nil {
		return err
	}
	i.restart()
	return nil
}

func (i *slotInstaller) MarkHealthy() error {
	if !i.gate.isDone() {
		return upgrade.ErrNotReady
	}
	return nil
}

func (i *slotInstaller) State() upgrade.State {
	st, err := i.sl.State()
	if err != nil {
		return upgrade.State{Version: i.version}
	}
	v := i.version
	if st.Current == i.running && st.CurrentVersion != "" {
		v = st.CurrentVersion
	}
	return upgrade.State{Version: v, Trial: st.Trial && st.Current == i.running, RolledBack: st.RolledBackVersion, Reason: st.Reason}
}

// upgradeFrame hands m the upgrade frames; false for others (or no m).
func upgradeFrame(m *upgrade.Manager, f wire.Frame) bool { return m != nil && m.Frame(f) }
