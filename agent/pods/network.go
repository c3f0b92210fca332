package pods

import (
	"context"
	"errors"
	"path/filepath"
	"strings"

	"outpost.dev/agent/cni"
	"outpost.dev/wire"
)

// attach puts the pod's network namespace ns on the pod network (made: it
// was just made, whatever it had before is gone) and keeps its addresses.
// Without a network configured the pod keeps loopback only.
func (w *worker) attach(ctx context.Context, o *wire.Object, ns string, made bool) error {
	n := w.r.cfg.Network
	if n == nil {
		return nil
	}
	ips, err := n.Attach(ctx, o.UID, ns, portMappings(o.Pod), made)
	if errors.Is(err, cni.ErrNoNetwork) {
		w.r.noNetwork(err)
		w.ips = nil
		return nil
	}
	if err != nil {
		w.ips = nil
		return err
	}
	w.ips = ips
	return nil
}

// detach takes the pod off the pod network (CNI DEL), passing its
// namespace when it is still mounted.
func (w *worker) detach(ctx context.Context, ns string) error {
	n := w.r.cfg.Network
	if n == nil {
		return nil
	}
	if !isNetNS(ns) {
		ns = ""
	}
	w.ips = nil
	return n.Detach(ctx, w.uid, ns)
}

// portMappings are the pod's hostPorts, for the portmap plugin.
func portMappings(p *wire.Pod) []cni.PortMapping {
	var out []cni.PortMapping
	for _, cs := range [][]wire.Container{p.InitContainers, p.Containers} {
		for i := range cs {
			for _, port := range cs[i].Ports {
				proto := strings.ToLower(port.Protocol)
				if proto == "" {
					proto = "tcp"
				}
				out = append(out, cni.PortMapping{HostPort: port.HostPort, ContainerPort: port.ContainerPort, Protocol: proto, HostIP: port.HostIP})
			}
		}
	}
	return out
}

// noNetwork logs once that pods run with loopback only.
func (r *Reconciler) noNetwork(err error) {
	r.mu.Lock()
	logged := r.noNetLog
	r.noNetLog = true
	r.mu.Unlock()
	if !logged {
		r.log.Warn("pods: pods get loopback only", "err", err)
	}
}

// sweepNetwork removes, once after start, the network attachments of pods
// the agent no longer has (deleted while it was down, or left by a crash
// during a CNI ADD): their cached DEL, and host-local leases with no
// cached result. keep holds the UIDs that are desired or still have
// containers (their workers detach them when they go).
func (r *Reconciler) sweepNetwork(ctx context.Context, keep map[string]bool) {
	n := r.cfg.Network
	if n == nil || r.netSwept {
		return
	}
	r.netSwept = true
	err := n.Reconcile(ctx, func(id string) bool { return keep[id] }, func(id string) string {
		if wire.CheckUID("pod uid", id) != nil {
			return ""
		}
		ns := filepath.Join(r.cfg.StateDir, "pods", id, "netns")
		if isNetNS(ns) {
			return ns
		}
		return ""
	})
	if err != nil {
		r.log.Warn("pods: removing the network attachments of gone pods", "err", err)
	}
}
