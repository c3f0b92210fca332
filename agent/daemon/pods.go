package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"

	"outpost.dev/agent/cni"
	"outpost.dev/agent/config"
	"outpost.dev/agent/desired"
	"outpost.dev/agent/outbox"
	"outpost.dev/agent/pods"
	"outpost.dev/agent/runtime/containerd"
	"outpost.dev/agent/store"
	"outpost.dev/wire"
)

// startPods runs the pod reconciler (which also finds log files for
// kubectl logs); the returned func waits for it to stop (containers keep
// running).
func startPods(ctx context.Context, cfg config.Config, node string, st *store.Store, applier *desired.Applier,
	ob *outbox.Outbox, readNode func() (wire.NodeInfo, error), podCIDR func() string, log *slog.Logger) (rec *pods.Reconciler, wait func()) {
	regs := map[string]containerd.Registry{}
	for host, r := range cfg.Containerd.Registries {
		regs[host] = containerd.Registry{PlainHTTP: r.PlainHTTP, Username: r.Username, Password: r.Password, CA: r.CA}
	}
	// The containers' logger with logging: process: outpost-logger next to
	// the agent if it is installed (0.7 MB PSS per container), else the
	// agent itself in its logger mode (1.8 MB); docs/containerd.md has the
	// measurements.
	self, err := os.Executable()
	if err != nil {
		log.Warn("pods: cannot find the agent binary for the container logger; logs are raw files", "err", err)
		self = ""
	} else if l := filepath.Join(filepath.Dir(self), "outpost-logger"); isExecutable(l) {
		self = l
	}
	// The pod network: a user's conflist in network.confDir, else the
	// agent's own bridge on the pod CIDR (podCIDRSource); none (loopback
	// only) with network.disabled.
	var network *cni.Network
	if cfg.Network.Disabled {
		log.Info("pods: network.disabled: pods get loopback only, no CNI plugin runs")
	} else {
		network = cni.New(cni.Config{ConfDir: cfg.Network.ConfDir, BinDirs: cfg.Network.BinDirs,
			StateDir: filepath.Join(cfg.StateDir, "cni"), PodCIDR: podCIDR, Bridge: cfg.Network.Bridge,
			Log: log.With("component", "cni")})
	}
	rec = pods.New(pods.Config{
		Network: network, ClusterDNS: cfg.Network.ClusterDNS, ClusterDomain: cfg.Network.ClusterDomain,
		ResolvConf: cfg.Network.ResolvConf,
		Source:     st, Changes: applier.Changes(), Outbox: ob,
		Runtime:  containerd.Config{Address: cfg.Containerd.Address, Namespace: cfg.Containerd.Namespace, Registries: regs},
		NodeName: node, NodeInfo: readNode, StateDir: cfg.StateDir, SeccompDir: cfg.SeccompProfileDir, LogBinary: self, PauseBinary: self,
		LogInAgent: cfg.Logging == config.LoggingAgent,
		MaxPods:    cfg.MaxPods, AllowedUnsafeSysctls: cfg.AllowedUnsafeSysctls, Log: log.With("component", "pods"),
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := rec.Run(ctx); err != nil {
			log.Error("pods: reconciler stopped", "err", err)
		}
	}()
	return rec, func() { <-done }
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// podCIDRSource is the node's pod CIDR: network.podCIDR from the config
// when set, else the Node's spec.podCIDRs as the relay last said (in its
// hello-ack, or in a node-config when the Node got them later), kept in
// the store so pods get their network back after a reboot without the
// link.
type podCIDRSource struct {
	fixed string
	st    *store.Store
	log   *slog.Logger
	cur   atomic.Pointer[string]
}

func newPodCIDR(cfg config.Config, st *store.Store, log *slog.Logger) (*podCIDRSource, error) {
	p := &podCIDRSource{fixed: cfg.Network.PodCIDR, st: st, log: log}
	saved, err := st.PodCIDR()
	if err != nil {
		return nil, fmt.Errorf("reading the pod CIDR from the store: %w", err)
	}
	p.cur.Store(&saved)
	return p, nil
}

func (p *podCIDRSource) get() string {
	if p.fixed != "" {
		return p.fixed
	}
	return *p.cur.Load()
}

// learn takes the relay's word for the Node's pod CIDRs (the first is
// used; none changes nothing: the cluster may not allocate them, or not
// yet, and then the relay sends them in a node-config once it does).
func (p *podCIDRSource) learn(cidrs []string) {
	if len(cidrs) == 0 {
		return
	}
	if cidrs[0] == *p.cur.Load() {
		return
	}
	c := cidrs[0]
	if err := p.st.SavePodCIDR(c); err != nil {
		p.log.Warn("pod CIDR from the relay not saved", "pod_cidr", c, "err", err)
		return
	}
	p.cur.Store(&c)
	if p.fixed != "" && p.fixed != c {
		p.log.Info("the Node's pod CIDR differs from network.podCIDR in the config, which wins", "node_pod_cidr", c, "config_pod_cidr", p.fixed)
		return
	}
	p.log.Info("pod CIDR from the cluster", "pod_cidr", c)
}
