// Package daemon is "outpost-agent run": from the config and the identity
// in the store it builds the agent's parts in the order they depend on
// each other (the store, the outbox and desired state, the pods and the
// device twins, the link and the outbox's sender on it, node status,
// metrics, the logs, tunnels and usage servers that answer on the link)
// and runs them until its context ends. Each part is built from parts
// that already exist; the link gets the handlers that reach them when it
// starts running.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"slices"
	"strings"
	"time"

	"outpost.dev/agent/cni"
	"outpost.dev/agent/config"
	"outpost.dev/agent/desired"
	"outpost.dev/agent/link"
	"outpost.dev/agent/logs"
	"outpost.dev/agent/metrics"
	"outpost.dev/agent/nodeinfo"
	"outpost.dev/agent/nodestatus"
	"outpost.dev/agent/outbox"
	"outpost.dev/agent/store"
	"outpost.dev/agent/tunnels"
	"outpost.dev/agent/twins"
	"outpost.dev/agent/upgrade"
	resusage "outpost.dev/agent/usage"
	"outpost.dev/boards"
	"outpost.dev/wire"
)

// Options are what Run needs beyond the config.
type Options struct {
	// Version goes into the hello and the start-up line.
	Version string
	Log     *slog.Logger
}

// gcPercent is the agent's GOGC unless the environment sets one.
const gcPercent = 25

// Run runs the agent until ctx ends. It returns an error at once when
// the agent cannot start (not joined, an unknown board, a machine it
// cannot describe, a store in use).
func Run(ctx context.Context, cfg config.Config, o Options) error {
	log := o.Log
	// GOMEMLIMIT in the environment wins, as the Go runtime documents.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(cfg.MemoryLimit)
	}
	// The agent's live heap is well under a megabyte when idle; Go's
	// default (GOGC=100, a 4 MB minimum goal) would let garbage from
	// periodic work pile up to several times that before collecting. A
	// collection of so small a heap costs well under a millisecond.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	brd, err := board(&cfg, log)
	if err != nil {
		return err
	}

	st, err := store.Open(cfg.StateDir)
	if err != nil {
		return err
	}
	defer st.Close()
	if found, now := st.Schema(); found != 0 && found != now {
		log.Info("store schema changed", "from", found, "to", now)
	}
	id, err := st.LoadIdentity()
	if errors.Is(err, store.ErrNotJoined) {
		return fmt.Errorf(`not joined: run "outpost-agent join --server URL --token TOKEN" first (state dir %s)`, cfg.StateDir)
	}
	if err != nil {
		return err
	}
	server := cfg.Server
	if server == "" {
		server = id.Server
	}
	if server == "" {
		return fmt.Errorf("no relay URL: set server in %s or pass --server", cfg.Path)
	}

	readNode := func() (wire.NodeInfo, error) {
		return nodeinfo.Read(nodeinfo.Options{
			Board: cfg.Board, StateDir: cfg.StateDir, MaxPods: cfg.MaxPods,
			ReservedCPUMillis: cfg.ReservedCPUMillis, ReservedMemory: cfg.ReservedMemory,
		})
	}
	// Read once now: a machine the agent cannot describe fails at start,
	// not quietly on every connect.
	if _, err := readNode(); err != nil {
		return err
	}

	sl, running := openSlots(log)
	if sl != nil {
		defer sl.Close()
	}
	health := &healthGate{sl: sl, running: running, log: log}
	ctx, restart := context.WithCancelCause(ctx)
	defer restart(nil)

	log.Info("starting", "version", o.Version, "node", id.NodeName, "board", cfg.Board,
		"server", server, "state_dir", cfg.StateDir, "memory_limit", debug.SetMemoryLimit(-1))
	ob, err := outbox.Open(st.Bolt(), outbox.Limits{MaxBytes: int(cfg.OutboxMaxBytes)})
	if err != nil {
		return err
	}
	applier := desired.New(st, log)
	podCIDR, err := newPodCIDR(cfg, st, log)
	if err != nil {
		return err
	}
	stopTwins, err := startTwins(ctx, cfg, id.NodeName, brd, st, applier, ob, log)
	if err != nil {
		return err
	}
	defer stopTwins()
	podRec, waitPods := startPods(ctx, cfg, id.NodeName, st, applier, ob, readNode, podCIDR.get, log)
	defer waitPods()

	takeUpgrades := upgradesOn(cfg, sl, log)
	lk := link.New(link.Config{
		Server: server, NodeName: id.NodeName,
		CertPEM: id.CertPEM, KeyPEM: id.KeyPEM, CAPEM: id.CAPEM,
		NextCertPEM: id.NextCertPEM, NextKeyPEM: id.NextKeyPEM,
		Rotation:     &link.Rotation{At: cfg.CertRotateAt, Save: st.SaveNext, Connected: st.PromoteNext},
		AgentVersion: o.Version, NodeInfo: readNode, Log: log,
		Objects: st.ObjectVersions, Upgrades: takeUpgrades,
	})
	var upg *upgrade.Manager
	if takeUpgrades {
		if upg, err = newUpgrades(cfg, sl, running, health, o.Version, lk, ob, func() { restart(Restart) }, log); err != nil {
			return err
		}
		health.healthy = upg.Connected // reports Healthy once the trial has ended
		go upg.Run(ctx)
	}
	// Twin reports leave the outbox by name and travel by link id.
	compactor := twins.NewCompactor(lk, st, applier.Changes(), log.With("component", "twins"))
	applier.OnResync(compactor.Synced)
	sender := outbox.NewSender(ob, compactor, log)
	go sender.Run(ctx)
	connected := make(chan struct{}, 1) // wakes the node status reporter on each connect
	linkStats := func() *wire.LinkStats {
		s := ob.Stats()
		ls := &wire.LinkStats{At: time.Now().Unix(), OutboxReports: uint64(s.Entries), OutboxBytes: uint64(s.Bytes),
			OutboxMaxBytes: uint64(cfg.OutboxMaxBytes), OutboxDropped: s.Dropped}
		if t := lk.LastContact(); !t.IsZero() {
			ls.LastSync = t.Unix()
		}
		return ls
	}
	go nodestatus.Run(ctx, nodestatus.Config{Outbox: ob, Read: readNode, Stats: linkStats, Connected: connected, Queued: health.queued, Log: log})
	msrc := metricsSource(cfg, lk, ob, podRec.Running)
	if cfg.MetricsListen != "" {
		serveMetrics(ctx, cfg.MetricsListen, msrc, log)
	}
	logsrv := logs.New(logs.Config{Paths: podRec, SendWait: lk.SendWait, Log: log.With("component", "logs")})
	defer logsrv.Wait()
	defer logsrv.Disconnected()
	tunsrv := tunnels.New(tunnels.Config{Pods: podRec, Send: lk.Send, SendWait: lk.SendWait, Log: log.With("component", "tunnels")})
	defer tunsrv.Wait()
	defer tunsrv.Disconnected()
	statsrv := resusage.New(resusage.Config{Reader: &resusage.Reader{Root: "/sys/fs/cgroup", Proc: "/proc"},
		Containers: podRec.StatsContainers, NodeFs: cfg.StateDir, Interface: cni.IfName,
		Metrics: func() []byte { return metrics.Render(msrc) }, Send: lk.Send, Log: log.With("component", "usage")})
	defer statsrv.Wait()

	err = lk.Run(ctx, link.Handlers{
		OnConnect: func(ack wire.HelloAck) {
			podCIDR.learn(ack.PodCIDRs)
			sender.Connected()
			podRec.Resend() // Ready set False by the cloud while offline
			if upg != nil {
				upg.Connected()
			}
			select {
			case connected <- struct{}{}:
			default:
			}
		},
		OnDisconnect: func(error) {
			compactor.Disconnected()
			logsrv.Disconnected()
			tunsrv.Disconnected()
			if upg != nil {
				upg.Disconnected()
			}
		},
		Frame: func(f wire.Frame) {
			switch {
			case f.Type == wire.TypeAck:
				sender.Acked(f.Ack)
				health.acked(f.Ack)
			case f.Type == wire.TypeNodeConfig:
				var nc wire.NodeConfig
				if err := f.DecodeBody(&nc); err != nil {
					log.Warn("node-config from relay refused", "err", err)
					return
				}
				podCIDR.learn(nc.PodCIDRs)
			case logsrv.Handle(f):
			case tunsrv.Handle(f):
			case statsrv.Handle(f):
			case upgradeFrame(upg, f):
			case applier.Handle(f):
			default:
				log.Debug("frame from relay ignored", "type", f.Type)
			}
		},
	})
	if err != nil {
		return err
	}
	if context.Cause(ctx) == Restart {
		log.Info("stopped for the upgrade's restart", "node", id.NodeName)
		return Restart
	}
	log.Info("stopped", "node", id.NodeName)
	return nil
}

// board is the config's board, else the one the device tree names, else
// sim; cfg.Board is set to its name.
func board(cfg *config.Config, log *slog.Logger) (*boards.Board, error) {
	if cfg.Board == "" {
		cfg.Board = "sim"
		if b, err := boards.Detect(os.DirFS("/")); err == nil {
			cfg.Board = b.Name
		} else if !errors.Is(err, boards.ErrNoDeviceTree) {
			log.Warn("board not recognised; devices run on the simulator until board is set in the config", "err", err)
		}
	}
	brd, err := boards.Lookup(cfg.Board)
	if err != nil {
		return nil, fmt.Errorf("board: %w: set board in the config or pass --board", err)
	}
	return brd, nil
}

// metricsSource is what the agent's own metrics read: served on
// metrics.listen, and as the node's /metrics through the relay.
func metricsSource(cfg config.Config, lk *link.Link, ob *outbox.Outbox, podsRunning func() int) metrics.Source {
	return metrics.Source{
		Connected: lk.Connected, LastContact: lk.LastContact, PodsRunning: podsRunning,
		Outbox: func() (int, int, uint64) {
			s := ob.Stats()
			return s.Entries, s.Bytes, s.Dropped
		},
		OutboxMaxBytes: cfg.OutboxMaxBytes,
		Goroutines:     runtime.NumGoroutine,
		Allocs:         heapAllocs,
		Memory:         memoryClasses(),
	}
}

// memoryClasses returns a reader of the Go runtime's memory classes
// (/memory/classes/...:bytes, which add up to the memory the runtime
// mapped), each named as the Prometheus Go collector names it.
func memoryClasses() func() []metrics.Gauge {
	var samples []rtmetrics.Sample
	var gauges []metrics.Gauge
	for _, d := range rtmetrics.All() {
		name, ok := strings.CutPrefix(d.Name, "/memory/classes/")
		if !ok || d.Kind != rtmetrics.KindUint64 || !strings.HasSuffix(name, ":bytes") {
			continue
		}
		samples = append(samples, rtmetrics.Sample{Name: d.Name})
		gauges = append(gauges, metrics.Gauge{
			Name: "go_memory_classes_" + strings.NewReplacer("/", "_", "-", "_", ":", "_").Replace(name),
			Help: d.Description,
		})
	}
	return func() []metrics.Gauge {
		rtmetrics.Read(samples)
		out := slices.Clone(gauges)
		for i, s := range samples {
			out[i].Value = float64(s.Value.Uint64())
		}
		return out
	}
}

// serveMetrics serves the agent's Prometheus endpoint on listen until ctx
// ends; a listen failure is logged and the agent runs without it.
func serveMetrics(ctx context.Context, listen string, src metrics.Source, log *slog.Logger) {
	if addr, err := metrics.Serve(ctx, listen, metrics.Handler(src), log); err != nil {
		// Metrics are not worth a gateway that does not run.
		log.Error("metrics endpoint off for this run; set metrics.listen to a free HOST:PORT, or \"\" to turn it off", "err", err)
	} else {
		log.Info("metrics endpoint", "url", "http://"+addr.String()+"/metrics")
	}
}

// heapAllocs reads the heap bytes and objects allocated since start.
func heapAllocs() (bytes, objects uint64) {
	s := []rtmetrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/heap/allocs:objects"}}
	rtmetrics.Read(s)
	if s[0].Value.Kind() == rtmetrics.KindUint64 {
		bytes = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == rtmetrics.KindUint64 {
		objects = s[1].Value.Uint64()
	}
	return bytes, objects
}
