// Package podnet counts what pods left on a node's network after the
// agent's default CNI network (bridge, host-local, portmap, see
// agent/cni) took them down: veths on the bridge, network namespace
// mounts, address leases, libcni result cache entries and iptables lines
// (portmap's per-pod chains and DNAT rules, rules naming a pod address,
// masquerade rules for the pod CIDR). Tests share one machine, so it looks
// only at what is this node's: its bridge, its state directory, its pod
// CIDR and the pods' CNI container IDs (cni.AttachmentIDs).
package podnet

import (
	"crypto/sha512"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"outpost.dev/agent/cni"
	"outpost.dev/agent/mountinfo"
)

// Network is the CNI network name of the agent's default conflist.
const Network = "outpost"

// masqComment marks the agent's one masquerade rule for its pod CIDR.
const masqComment = "outpost: pod traffic leaving the pod CIDR"

// Node names what is one node's.
type Node struct {
	// StateDir is the agent's state directory: pods/<uid>/netns mounts,
	// cni/cache (libcni's results), cni/adding (ADDs under way) and
	// cni/networks (host-local's leases).
	StateDir string
	// Bridge is the default network's bridge.
	Bridge string
	// CIDR is the node's pod CIDR.
	CIDR string
}

// Left is what is on the node's network. Each field lists what it found,
// so a failing test can say what leaked.
type Left struct {
	Veths  []string // interfaces on the bridge
	NetNS  []string // network namespace mounts under the state directory
	Leases []string // host-local's leases, address=holder
	Cache  []string // libcni's cached results, and the agent's records of unfinished ADDs and stale attachments
	// Rules are iptables lines (every table) of pods: portmap's chains of
	// the given pods and rules jumping to them or naming them in a
	// comment, and any rule naming an address of the pod CIDR other than
	// the node's masquerade rule.
	Rules []string
	// Masq counts the node's masquerade rules for the pod CIDR: one while
	// the agent runs (never one per pod).
	Masq int
}

// Empty reports whether no pod left anything (the node's one masquerade
// rule is not a pod's).
func (l Left) Empty() bool {
	return len(l.Veths)+len(l.NetNS)+len(l.Leases)+len(l.Cache)+len(l.Rules) == 0 && l.Masq <= 1
}

// Pods says whether what is there is n pods' worth: a veth, a namespace,
// a lease and a cached result each, and one masquerade rule.
func (l Left) Pods(n int) bool {
	return len(l.Veths) == n && len(l.NetNS) == n && len(l.Leases) == n && len(l.Cache) == n && l.Masq <= 1
}

func (l Left) String() string {
	return fmt.Sprintf("%d veths %v, %d netns %v, %d leases %v, %d cached results %v, %d masquerade rules, %d pod rules:\n%s",
		len(l.Veths), l.Veths, len(l.NetNS), l.NetNS, len(l.Leases), l.Leases, len(l.Cache), l.Cache, l.Masq, len(l.Rules),
		strings.Join(l.Rules, "\n"))
}

// Check reads what is on the node's network; uids are the CNI container
// IDs (pod UIDs) of every pod the test ever made there.
func Check(n Node, uids []string) (Left, error) {
	var l Left
	_, cidr, err := net.ParseCIDR(n.CIDR)
	if err != nil {
		return l, fmt.Errorf("pod CIDR %q: %w", n.CIDR, err)
	}
	out, err := exec.Command("ip", "-o", "link", "show", "master", n.Bridge).CombinedOutput()
	switch {
	case err == nil:
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if f := strings.Fields(line); len(f) > 1 {
				l.Veths = append(l.Veths, strings.TrimSuffix(f[1], ":"))
			}
		}
	case !strings.Contains(string(out), "does not exist"):
		return l, fmt.Errorf("ip link show master %s: %v: %s", n.Bridge, err, out)
	}
	for _, m := range mountinfo.Under(filepath.Join(n.StateDir, "pods")) {
		if filepath.Base(m) == "netns" {
			l.NetNS = append(l.NetNS, m)
		}
	}
	ents, err := os.ReadDir(filepath.Join(n.StateDir, "cni", "networks", Network))
	if err != nil && !os.IsNotExist(err) {
		return l, err
	}
	for _, e := range ents {
		if net.ParseIP(e.Name()) != nil {
			// host-local's lease file: the holder's ID, then its interface.
			b, _ := os.ReadFile(filepath.Join(n.StateDir, "cni", "networks", Network, e.Name()))
			holder, _, _ := strings.Cut(string(b[:min(len(b), 256)]), "\n")
			l.Leases = append(l.Leases, e.Name()+"="+strings.TrimSpace(holder))
		}
	}
	err = filepath.WalkDir(filepath.Join(n.StateDir, "cni", "cache"), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			l.Cache = append(l.Cache, filepath.Base(p))
		}
		if os.IsNotExist(err) {
			return nil
		}
		return err
	})
	if err != nil {
		return l, err
	}
	// The agent's records of ADDs begun and not finished, and of stale
	// attachments waiting for their DEL (agent/cni).
	for _, dir := range []string{"adding", "stale"} {
		ents, err = os.ReadDir(filepath.Join(n.StateDir, "cni", dir))
		if err != nil && !os.IsNotExist(err) {
			return l, err
		}
		for _, e := range ents {
			l.Cache = append(l.Cache, dir+"/"+e.Name())
		}
	}
	save, err := exec.Command("iptables-save").Output()
	if err != nil {
		return l, fmt.Errorf("iptables-save: %w", err)
	}
	chains := map[string]bool{}
	var ids []string
	for _, u := range uids {
		for _, id := range cni.AttachmentIDs(u) {
			chains[ChainName("DN-", id)] = true
			ids = append(ids, fmt.Sprintf("id: %q", id))
		}
	}
	for _, line := range strings.Split(string(save), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || (f[0] != "-A" && !strings.HasPrefix(f[0], ":")) {
			continue
		}
		if strings.Contains(line, masqComment) {
			if namesCIDR(f, cidr) {
				l.Masq++
			}
			continue
		}
		leak := chains[strings.TrimPrefix(f[0], ":")] || chains[f[1]] || chains[f[len(f)-1]] || namesCIDR(f, cidr)
		for _, id := range ids {
			leak = leak || strings.Contains(line, id)
		}
		if leak {
			l.Rules = append(l.Rules, line)
		}
	}
	return l, nil
}

// namesCIDR says whether an iptables rule names an address or network
// inside cidr (as -s, -d or a DNAT destination).
func namesCIDR(f []string, cidr *net.IPNet) bool {
	for i := 1; i < len(f); i++ {
		switch f[i-1] {
		case "-s", "-d", "--to-destination":
		default:
			continue
		}
		a := f[i]
		if h, _, err := net.SplitHostPort(a); err == nil {
			a = h
		}
		a, _, _ = strings.Cut(a, "/")
		if ip := net.ParseIP(a); ip != nil && cidr.Contains(ip) {
			return true
		}
	}
	return false
}

// ChainName is the name the CNI plugins give a per-container chain
// (containernetworking/plugins pkg/utils.MustFormatChainNameWithPrefix):
// "CNI-" + prefix + the hex SHA-512 of network name and container ID, cut
// to 28 characters.
func ChainName(prefix, id string) string {
	return fmt.Sprintf("CNI-%s%x", prefix, sha512.Sum512([]byte(Network+id)))[:28]
}
