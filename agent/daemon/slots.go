package daemon

import (
	"log/slog"
	"sync"

	"outpost.dev/agent/slots"
)

// openSlots returns the slots the launcher (outpost-boot) named in the
// environment and the slot this agent runs from; nil when the agent was
// not started by the launcher, and then nothing is marked healthy and no
// upgrade can be switched to.
func openSlots(log *slog.Logger) (*slots.Slots, slots.Slot) {
	sl, running, ok, err := slots.FromEnv()
	if err != nil {
		log.Warn("slots named by the launcher cannot be opened; this agent cannot end an upgrade's trial", "err", err)
		return nil, ""
	}
	if !ok {
		return nil, ""
	}
	if st, err := sl.State(); err != nil {
		log.Warn("slots", "err", err)
	} else if running != slots.Packaged || st.Trial || st.Reason != "" {
		log.Info("slots", "running", running, "version", st.CurrentVersion, "trial", st.Trial, "previous", st.Previous,
			"rolled_back", st.RolledBack, "reason", st.Reason)
	}
	return sl, running
}

// healthGate marks the running slot healthy (ending an upgrade's trial)
// once the agent is connected and its Node reported Ready: the relay has
// acked the node status report queued after a connect, which it acks only
// once the Node's status, with Ready=True, is written.
type healthGate struct {
	sl      *slots.Slots
	running slots.Slot
	log     *slog.Logger

	// healthy, if set, is called once the trial (if any) has ended.
	healthy func()

	mu   sync.Mutex
	want uint64 // the last after-connect node status report's sequence number
	busy bool
	done bool
}

// queued is nodestatus's Config.Queued.
func (g *healthGate) queued(seq uint64, afterConnect bool) {
	if !afterConnect {
		return
	}
	g.mu.Lock()
	g.want = seq
	g.mu.Unlock()
}

// acked is told every ack from the relay.
func (g *healthGate) acked(seq uint64) {
	if g.sl == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done || g.busy || g.want == 0 || seq < g.want {
		return
	}
	g.busy = true
	go g.mark() // a file write with fsyncs: not on the link's reader
}

func (g *healthGate) mark() {
	err := g.sl.MarkHealthy(g.running)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.busy = false
	if err != nil {
		g.log.Error("upgrade trial not ended; the next ack tries again", "slot", g.running, "err", err)
		return
	}
	g.done = true
	g.log.Info("connected and Ready: this slot is healthy", "slot", g.running)
	if g.healthy != nil {
		go g.healthy()
	}
}

// isDone reports whether the running slot has been marked healthy.
func (g *healthGate) isDone() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.done
}
