package cni

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
)

// A pod's attachments have one of two CNI container IDs: its UID, and
// its UID with slotSuffix. After a reboot the pod's namespace is new and
// the attachment made before it is stale; the new one is made under the
// other ID, so the pod is back on the network without waiting for the
// stale attachment's DEL, which runs after it (reap). The plugins key
// what they make by container ID (host-local's lease, portmap's chains,
// libcni's cached result), so the two never touch each other's state.
// A pod UID holds no '_' (wire.CheckUID), so no pod's UID is another's
// second ID.
const slotSuffix = "_1"

// AttachmentIDs are the CNI container IDs pod uid's attachments may
// have, the UID first.
func AttachmentIDs(uid string) []string { return []string{uid, uid + slotSuffix} }

// podOf is the pod UID of a CNI container ID.
func podOf(id string) string { return strings.TrimSuffix(id, slotSuffix) }

// reapTimeout bounds the DEL of one stale attachment.
const reapTimeout = time.Minute

// maxBackoff bounds the wait before a failed stale DEL is tried again.
const maxBackoff = 5 * time.Minute

// Attach makes sure pod uid's network namespace netns is on the network
// and returns its IPs. fresh says netns was just made: an attachment
// recorded for the pod is then stale (the node rebooted). An attachment
// in place (this process or a cached result) is kept; one half made (the
// agent was killed during an ADD) is removed and made again.
//
// A stale attachment is recorded as such (<StateDir>/stale/<id>) before
// the new ADD, and DELed after it, in the background (reap), so the pods
// of a rebooted node do not wait for twice the plugin runs. Not so for a
// pod with hostPorts: portmap appends the new attachment's DNAT rules
// after the stale one's, which would take the traffic to the old
// address until the DEL, so its stale attachment is DELed first.
func (n *Network) Attach(ctx context.Context, uid, netns string, ports []PortMapping, fresh bool) ([]string, error) {
	n.mu.Lock()
	ips, ok := n.ips[uid]
	n.mu.Unlock()
	if ok && !fresh {
		return ips, nil
	}
	defer n.lockPod(uid)()
	began := time.Now()
	l, err := n.list()
	if err != nil {
		return nil, err
	}
	if len(ports) == 0 {
		// portmap would be run for nothing, at every ADD and DEL.
		if l, err = withoutPortmap(l); err != nil {
			return nil, err
		}
	}
	var stale, free []string
	for _, id := range AttachmentIDs(uid) {
		if n.recorded(staleDir, id) {
			stale = append(stale, id)
			continue
		}
		atts, err := n.cni.GetCachedAttachments(id)
		if err == nil && len(atts) == 0 && !n.recorded(addingDir, id) {
			free = append(free, id)
			continue
		}
		if fresh {
			// Made for the namespace that is gone.
			if err := n.record(staleDir, id); err != nil {
				return nil, err
			}
			stale = append(stale, id)
			continue
		}
		if res, err := n.cni.GetNetworkListCachedResult(l, rtConf(id, netns, ports)); err == nil && res != nil {
			if ips, err := resultIPs(res); err == nil && len(ips) > 0 {
				n.unrecord(addingDir, id) // killed after the result was cached
				n.remember(uid, ips)
				n.reapLater(stale...)
				return ips, nil
			}
		}
		// Half made, in this namespace: plugins refuse an ADD over an
		// existing eth0, so it goes first.
		if err := n.detachID(ctx, id, netns); err != nil {
			n.log.Warn("cni: removing an earlier attachment before ADD", "id", id, "err", err)
		} else {
			free = append(free, id)
		}
	}
	if len(ports) > 0 {
		for _, id := range stale {
			if err := n.detachID(ctx, id, ""); err != nil {
				n.log.Warn("cni: removing a stale attachment before ADD", "id", id, "err", err)
			} else {
				free = append(free, id)
			}
		}
	}
	if len(free) == 0 {
		// Both IDs hold stale attachments (a DEL that failed or was cut
		// short): one is removed now, so a pod never has more than two.
		if err := n.detachID(ctx, stale[0], ""); err != nil {
			return nil, fmt.Errorf("CNI: removing a stale attachment before ADD: %w", err)
		}
		free = append(free, stale[0])
	}
	id := slices.Min(free) // the UID when it is free: as before a reboot
	stale = slices.DeleteFunc(stale, func(s string) bool { return slices.Contains(free, s) })
	if err := n.record(addingDir, id); err != nil {
		return nil, err
	}
	rt := rtConf(id, netns, ports)
	added := time.Now()
	res, err := n.cni.AddNetworkList(ctx, l, rt)
	if err != nil {
		// Undo the part that was made, so a retry starts clean.
		if n.cni.DelNetworkList(context.WithoutCancel(ctx), l, rt) == nil {
			n.unrecord(addingDir, id)
		}
		n.reapLater(stale...)
		if strings.Contains(err.Error(), "failed to find plugin") {
			return nil, fmt.Errorf("CNI ADD (network %s): %w: install Debian's containernetworking-plugins, or put the plugins in network.binDirs", l.Name, err)
		}
		return nil, fmt.Errorf("CNI ADD (network %s): %w", l.Name, err)
	}
	n.unrecord(addingDir, id) // libcni cached the result: a DEL finds it there
	n.log.Debug("cni: attached", "id", id, "stale", stale, "took", time.Since(began), "add", time.Since(added))
	n.reapLater(stale...)
	ips, err = resultIPs(res)
	if err != nil {
		return nil, err
	}
	n.remember(uid, ips)
	return ips, nil
}

// Detach removes pod uid from the network: a DEL of each of its
// attachments with the configuration it was made with (libcni's cache),
// or with the current one (and delPorts) when nothing is cached. DEL is
// idempotent; netns (the pod's namespace, passed to all but stale
// attachments, whose namespace is gone) may be gone too.
func (n *Network) Detach(ctx context.Context, uid, netns string) error {
	n.mu.Lock()
	delete(n.ips, uid)
	n.mu.Unlock()
	defer n.lockPod(uid)()
	var errs []error
	for _, id := range AttachmentIDs(uid) {
		if err := n.detachID(ctx, id, netns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// detachID DELs the attachment with CNI container ID id; the caller
// holds its pod's lock. The pod's first ID is always DELed (a lease may
// be held without a cached result); its second only when something
// names it.
func (n *Network) detachID(ctx context.Context, id, netns string) error {
	stale := n.recorded(staleDir, id)
	if stale {
		netns = "" // the stale attachment's namespace is gone; this one is the new one's
	}
	done := func() {
		n.unrecord(addingDir, id)
		n.unrecord(staleDir, id)
	}
	atts, err := n.cni.GetCachedAttachments(id)
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range atts {
		l, err := libcni.NetworkConfFromBytes(a.Config)
		if err != nil {
			errs = append(errs, fmt.Errorf("cached CNI configuration of %s: %w", id, err))
			continue
		}
		rt := &libcni.RuntimeConf{ContainerID: a.ContainerID, NetNS: netns, IfName: a.IfName, Args: a.CniArgs, CapabilityArgs: a.CapabilityArgs}
		if err := n.cni.DelNetworkList(ctx, l, rt); err != nil {
			errs = append(errs, fmt.Errorf("CNI DEL (network %s): %w", l.Name, err))
		}
	}
	if len(atts) > 0 || len(errs) > 0 {
		if len(errs) == 0 {
			done()
		}
		return errors.Join(errs...)
	}
	if id != podOf(id) && !stale && !n.recorded(addingDir, id) {
		return nil
	}
	l, err := n.list()
	if errors.Is(err, ErrNoNetwork) {
		return nil // never attached
	}
	if err != nil {
		return err
	}
	if err := n.cni.DelNetworkList(ctx, l, rtConf(id, netns, delPorts)); err != nil {
		return fmt.Errorf("CNI DEL (network %s): %w", l.Name, err)
	}
	done()
	return nil
}

// delPorts stand for a pod's hostPorts in a DEL made without a cached
// result (the agent was killed during the ADD, before libcni cached it):
// portmap's DEL does nothing when given no port mappings, and given any it
// removes the chains it made for the container ID whatever their ports, so
// a half-made ADD's chains go too.
var delPorts = []PortMapping{{HostPort: 1, ContainerPort: 1, Protocol: "tcp"}}

// reapLater DELs the stale attachments ids in the background, one at a
// time: a node back from a reboot starts its pods first. A DEL that
// fails is tried again later (backing off up to maxBackoff) while its
// record stays; the start-up sweep finds records an agent stopped before
// their DEL left.
func (n *Network) reapLater(ids ...string) {
	if len(ids) == 0 {
		return
	}
	n.mu.Lock()
	for _, id := range ids {
		n.pending[id] = true
	}
	start := !n.reaping
	n.reaping = true
	n.mu.Unlock()
	if start {
		go n.reap()
	}
}

func (n *Network) reap() {
	for {
		n.mu.Lock()
		var id string
		for p := range n.pending {
			id = p
			break
		}
		if id == "" {
			n.reaping = false
			n.mu.Unlock()
			return
		}
		delete(n.pending, id)
		n.mu.Unlock()
		n.reapOne(id)
	}
}

func (n *Network) reapOne(id string) {
	defer n.lockPod(podOf(id))()
	if !n.recorded(staleDir, id) {
		// DELed meanwhile: the pod went, or its next ADD needed the ID.
		n.mu.Lock()
		delete(n.backoff, id)
		n.mu.Unlock()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), reapTimeout)
	defer cancel()
	began := time.Now()
	err := n.detachID(ctx, id, "")
	n.mu.Lock()
	defer n.mu.Unlock()
	if err == nil {
		n.log.Debug("cni: stale attachment removed", "id", id, "took", time.Since(began))
		delete(n.backoff, id)
		return
	}
	d := min(max(2*n.backoff[id], time.Second), maxBackoff)
	n.backoff[id] = d
	n.log.Warn("cni: removing a stale attachment; trying again later", "id", id, "in", d, "err", err)
	time.AfterFunc(d, func() { n.reapLater(id) })
}

// podLock serialises one pod's ADDs and DELs: its worker's, the
// background DEL of its stale attachment, the start-up sweep's.
type podLock struct {
	mu   sync.Mutex
	refs int
}

// lockPod locks pod uid and returns the unlock; the lock is dropped once
// nobody holds or waits for it, so there are never more than the pods
// being worked on.
func (n *Network) lockPod(uid string) (unlock func()) {
	n.mu.Lock()
	l := n.locks[uid]
	if l == nil {
		l = &podLock{}
		n.locks[uid] = l
	}
	l.refs++
	n.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		n.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(n.locks, uid)
		}
		n.mu.Unlock()
	}
}

// The agent's records, a file per CNI container ID under StateDir:
// addingDir holds an ADD begun and neither cached nor undone, what an
// agent killed during an ADD left (libcni caches a result only once
// every plugin is done); staleDir an attachment made for a namespace
// that is gone, waiting for its DEL.
const (
	addingDir = "adding"
	staleDir  = "stale"
)

func (n *Network) recorded(dir, id string) bool {
	_, err := os.Lstat(filepath.Join(n.cfg.StateDir, dir, id))
	return err == nil
}

// namesFile says whether id can name a record: one path element (pod
// UIDs are).
func namesFile(id string) bool {
	return id != "" && id != "." && id != ".." && !strings.ContainsAny(id, "/\x00") && len(id) <= 255
}

func (n *Network) record(dir, id string) error {
	if !namesFile(id) {
		return fmt.Errorf("CNI: pod ID %q cannot name a file: refusing to attach it", id)
	}
	d := filepath.Join(n.cfg.StateDir, dir)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return fmt.Errorf("CNI: recording %s of %s: %w", dir, id, err)
	}
	if err := os.WriteFile(filepath.Join(d, id), nil, 0o600); err != nil {
		return fmt.Errorf("CNI: recording %s of %s: %w", dir, id, err)
	}
	return nil
}

func (n *Network) unrecord(dir, id string) {
	if err := os.Remove(filepath.Join(n.cfg.StateDir, dir, id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		n.log.Warn("cni: removing a record", "dir", dir, "id", id, "err", err)
	}
}

func (n *Network) remember(uid string, ips []string) {
	n.mu.Lock()
	n.ips[uid] = ips
	n.mu.Unlock()
}

// IPs returns what Attach returned for pod uid in this process, if anything.
func (n *Network) IPs(uid string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ips[uid]
}

// Reconcile removes the attachments of pods that are gone: those in the
// result cache, host-local leases of the default network held by IDs
// with no cached result, ADDs begun and never finished (an agent killed
// during an ADD) and stale attachments. keep says which pod UIDs are
// still wanted (their stale attachments are DELed in the background);
// netns gives a gone pod's namespace path (its DEL passes it when it
// still exists).
func (n *Network) Reconcile(ctx context.Context, keep func(uid string) bool, netns func(uid string) string) error {
	atts, err := n.cni.GetCachedAttachments("")
	if err != nil {
		return err
	}
	var ids []string
	for _, a := range atts {
		ids = append(ids, a.ContainerID)
	}
	ids = append(ids, leaseHolders(filepath.Join(n.LeaseDir(), defaultName))...)
	for _, dir := range []string{addingDir, staleDir} {
		ents, _ := os.ReadDir(filepath.Join(n.cfg.StateDir, dir))
		for _, e := range ents {
			ids = append(ids, e.Name())
		}
	}
	var errs []error
	seen := map[string]bool{}
	for _, id := range ids {
		uid := podOf(id)
		if seen[uid] || !namesFile(id) {
			continue
		}
		seen[uid] = true
		if keep(uid) {
			continue
		}
		n.log.Info("cni: removing the network attachments of a pod that is gone", "id", uid)
		if err := n.Detach(ctx, uid, netns(uid)); err != nil {
			errs = append(errs, err)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(n.cfg.StateDir, staleDir))
	for _, e := range ents {
		n.reapLater(e.Name())
	}
	return errors.Join(errs...)
}
