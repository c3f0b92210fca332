// Package cni gives pods a network through CNI plugins, driven with
// libcni the way a container runtime drives them: ADD when a pod's network
// namespace is made, DEL when the pod goes, and at start-up a DEL of every
// attachment whose pod is gone (the result cache keeps the configuration
// each attachment was made with, so the DEL undoes exactly that).
//
// The network is the first conflist in ConfDir (a user's Flannel or
// Cilium), else the agent's own default written under StateDir: a bridge
// with the node's pod CIDR (host-local IPAM, leases under StateDir) and
// portmap for hostPorts, plus one masquerade rule of the agent's for
// traffic leaving the CIDR.
package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// Defaults, as containerd and the kubelet use them; Debian's
// containernetworking-plugins installs into /usr/lib/cni.
const (
	DefaultConfDir = "/etc/cni/net.d"
	DefaultBridge  = "outpost0"
	// IfName is the pod's interface, as every runtime names it.
	IfName = "eth0"
	// defaultName is the network name of the agent's own conflist.
	defaultName = "outpost"
	// maxConfSize bounds a conflist read from disk.
	maxConfSize = 1 << 20
)

// DefaultBinDirs are searched for plugins, in order.
var DefaultBinDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}

// Config configures a Network.
type Config struct {
	// ConfDir holds a user's conflists; the first one (by name, .conflist,
	// .conf or .json) is the pods' network. Default DefaultConfDir.
	ConfDir string
	// BinDirs are searched for plugin binaries. Default DefaultBinDirs.
	BinDirs []string
	// StateDir is the agent's own: the default conflist (net.d/), libcni's
	// result cache (cache/) and host-local's leases (networks/).
	StateDir string
	// PodCIDR is the node's pod range, for the default conflist. Read on
	// every load, so a CIDR learned later (from the relay) takes effect.
	PodCIDR func() string
	// Bridge names the default conflist's bridge. Default DefaultBridge.
	Bridge string
	Log    *slog.Logger
}

// PortMapping publishes a container port on the node (a hostPort).
type PortMapping struct {
	HostPort      int32  `json:"hostPort"`
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol"` // tcp, udp or sctp (lower case, as portmap reads it)
	HostIP        string `json:"hostIP,omitempty"`
}

// ErrNoNetwork means pods have no network beyond their loopback: there
// is no conflist and no pod CIDR to write the default one from, or the
// default one's plugins are not installed. The errors wrapping it say which.
var ErrNoNetwork = errors.New("no pod network")

// defaultPlugins are the plugins the default conflist runs; with
// defaultTools, what the default network needs installed.
var (
	defaultPlugins = []string{"bridge", "host-local", "portmap"}
	defaultTools   = []string{"iptables"}
)

// DefaultPlugins are the plugins the default conflist runs: what a
// gateway needs installed (with iptables) for its pods to get a network.
// The gateway image (build/image) carries these and no other plugin.
func DefaultPlugins() []string { return slices.Clone(defaultPlugins) }

// Network attaches pods to the node's pod network. Its methods are safe
// for concurrent use; each pod's calls come from that pod's worker.
type Network struct {
	cfg Config
	cni *libcni.CNIConfig
	log *slog.Logger

	mu     sync.Mutex
	ips    map[string][]string // by pod UID, attachments known to be in place
	masqed string              // the CIDR whose masquerade rule is in place
	locks  map[string]*podLock // by pod UID: one pod's ADDs and DELs run one at a time
	// stale attachments waiting for their DEL (see reap), by CNI
	// container ID; at most one per pod at a time, two at worst.
	pending map[string]bool
	reaping bool                     // a goroutine works through pending
	backoff map[string]time.Duration // by CNI container ID, after a failed DEL

	// masqMu makes masquerade's check-then-append one step: pods
	// attached at once would each add the rule.
	masqMu sync.Mutex
}

// New returns a Network; nothing runs until a method is called.
func New(cfg Config) *Network {
	if cfg.ConfDir == "" {
		cfg.ConfDir = DefaultConfDir
	}
	if len(cfg.BinDirs) == 0 {
		cfg.BinDirs = DefaultBinDirs
	}
	if cfg.Bridge == "" {
		cfg.Bridge = DefaultBridge
	}
	if cfg.PodCIDR == nil {
		cfg.PodCIDR = func() string { return "" }
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Network{
		cfg: cfg, log: cfg.Log, ips: map[string][]string{}, locks: map[string]*podLock{},
		pending: map[string]bool{}, backoff: map[string]time.Duration{},
		// The plugin runner libcni would make on first use, made here:
		// libcni makes it without a lock, and pods attach at once.
		cni: libcni.NewCNIConfigWithCacheDir(cfg.BinDirs, filepath.Join(cfg.StateDir, "cache"), &invoke.DefaultExec{
			RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}),
	}
}

// LeaseDir is where the default conflist's host-local IPAM keeps its
// leases (one file per address, named by the address).
func (n *Network) LeaseDir() string { return filepath.Join(n.cfg.StateDir, "networks") }

// list loads the pods' network: the user's first conflist, else the
// default one, (re)written when the pod CIDR changed.
func (n *Network) list() (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(n.cfg.ConfDir, []string{".conflist", ".conf", ".json"})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading CNI configuration directory %s: %w", n.cfg.ConfDir, err)
	}
	for _, f := range sortedNames(files) {
		l, err := loadFile(f)
		if err != nil {
			return nil, err
		}
		if l != nil {
			return l, nil
		}
	}
	cidr := n.cfg.PodCIDR()
	if cidr == "" {
		return nil, fmt.Errorf("%w: no conflist in the CNI configuration directory %s and no pod CIDR "+
			"(set network.podCIDR in the agent config, or start kube-controller-manager with --allocate-node-cidrs --cluster-cidr=…)", ErrNoNetwork, n.cfg.ConfDir)
	}
	if err := n.defaultInstalled(); err != nil {
		return nil, err
	}
	b, err := n.defaultConf(cidr)
	if err != nil {
		return nil, err
	}
	if err := n.masquerade(cidr); err != nil {
		return nil, err
	}
	p := filepath.Join(n.cfg.StateDir, "net.d", "10-outpost.conflist")
	if old, err := os.ReadFile(p); err != nil || string(old) != string(b) {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return nil, err
		}
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			return nil, err
		}
		if err := os.Rename(tmp, p); err != nil {
			return nil, err
		}
	}
	return libcni.NetworkConfFromBytes(b)
}

// defaultInstalled says, wrapping ErrNoNetwork, which of the default
// network's plugins and tools are missing: a gateway without them runs its
// pods with loopback only rather than failing every pod.
func (n *Network) defaultInstalled() error {
	var missing []string
	for _, p := range defaultPlugins {
		if _, err := invoke.FindInPath(p, n.cfg.BinDirs); err != nil {
			missing = append(missing, p)
		}
	}
	for _, t := range defaultTools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%w: the default network needs %s, not found (plugins in %s): install Debian's containernetworking-plugins and iptables, or bring a conflist",
		ErrNoNetwork, strings.Join(missing, ", "), strings.Join(n.cfg.BinDirs, ", "))
}

func sortedNames(files []string) []string {
	// Runtimes take the first by name.
	out := slices.Clone(files)
	slices.Sort(out)
	return out
}

// loadFile reads one configuration file, bounded; a single-plugin .conf
// becomes a list of one. A file with no plugin type is skipped (nil).
func loadFile(p string) (*libcni.NetworkConfigList, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if fi.Size() > maxConfSize {
		return nil, fmt.Errorf("CNI configuration %s is %d bytes (limit %d): is it the right file?", p, fi.Size(), maxConfSize)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	if strings.HasSuffix(p, ".conflist") {
		l, err := libcni.NetworkConfFromBytes(b)
		if err != nil {
			return nil, fmt.Errorf("CNI configuration %s: %w", p, err)
		}
		return l, nil
	}
	c, err := libcni.NetworkPluginConfFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("CNI configuration %s: %w", p, err)
	}
	if c.Network.Type == "" {
		return nil, nil
	}
	return libcni.ConfListFromConf(c)
}

// defaultConf is the agent's own conflist for cidr.
func (n *Network) defaultConf(cidr string) ([]byte, error) {
	_, ipn, err := net.ParseCIDR(cidr)
	if err != nil {
		return nil, fmt.Errorf("pod CIDR %q: %w", cidr, err)
	}
	route := "0.0.0.0/0"
	if ipn.IP.To4() == nil {
		route = "::/0"
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       defaultName,
		"plugins": []any{
			map[string]any{
				// ipMasq is the agent's one rule for the whole CIDR (see
				// masquerade): the plugin's per-pod chains are not always
				// removed by its DEL with iptables-nft.
				"type": "bridge", "bridge": n.cfg.Bridge, "isGateway": true, "ipMasq": false, "hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": ipn.String()}}},
					"routes":  []map[string]string{{"dst": route}},
					"dataDir": n.LeaseDir(),
				},
			},
			map[string]any{"type": "portmap", "snat": true, "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}

func rtConf(id, netns string, ports []PortMapping) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: netns, IfName: IfName,
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_INFRA_CONTAINER_ID", id}}}
	if len(ports) > 0 {
		rt.CapabilityArgs = map[string]any{"portMappings": ports}
	}
	return rt
}

// withoutPortmap is l without its portmap plugins, for a pod with no
// hostPort: the attachment is cached with this list, so its DEL runs
// without them too.
func withoutPortmap(l *libcni.NetworkConfigList) (*libcni.NetworkConfigList, error) {
	var raw map[string]any
	if err := json.Unmarshal(l.Bytes, &raw); err != nil {
		return nil, fmt.Errorf("CNI configuration %s: %w", l.Name, err)
	}
	plugins, _ := raw["plugins"].([]any)
	var kept []any
	for _, p := range plugins {
		if m, ok := p.(map[string]any); ok && m["type"] == "portmap" {
			continue
		}
		kept = append(kept, p)
	}
	if len(kept) == len(plugins) || len(kept) == 0 {
		return l, nil
	}
	raw["plugins"] = kept
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, err
	}
	return libcni.NetworkConfFromBytes(b)
}

// leaseHolders reads host-local's lease files (an address per file, the
// holder's ID on the first line), bounded.
func leaseHolders(dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var ids []string
	for _, e := range ents {
		if net.ParseIP(e.Name()) == nil || !e.Type().IsRegular() {
			continue // last_reserved_ip.0, lock
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		buf := make([]byte, 512)
		k, _ := f.Read(buf)
		f.Close()
		id, _, _ := strings.Cut(string(buf[:k]), "\n")
		if id = strings.TrimSpace(id); id != "" {
			ids = append(ids, id)
		}
	}
	return ids
}

// resultIPs are the addresses of the pod's interfaces in res (all of
// them when the plugin named no interface).
func resultIPs(res types.Result) ([]string, error) {
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("CNI result: %w", err)
	}
	var ips []string
	for _, ip := range r.IPs {
		if ip.Interface != nil {
			i := *ip.Interface
			if i < 0 || i >= len(r.Interfaces) || r.Interfaces[i].Sandbox == "" {
				continue
			}
		}
		ips = append(ips, ip.Address.IP.String())
	}
	if len(ips) == 0 {
		return nil, errors.New("the CNI plugins gave the pod no address: check the network's IPAM configuration")
	}
	return ips, nil
}

// masqComment marks the agent's masquerade rule in iptables.
const masqComment = "outpost: pod traffic leaving the pod CIDR"

// masquerade makes sure one rule masquerades what the pods on cidr send
// off it (egress through the node's address), as kubenet and Flannel do.
// It is the node's rule, not a pod's: no pod's DEL has to remove it.
func (n *Network) masquerade(cidr string) error {
	n.masqMu.Lock()
	defer n.masqMu.Unlock()
	n.mu.Lock()
	done := n.masqed == cidr
	n.mu.Unlock()
	if done {
		return nil
	}
	tool := "iptables"
	if ip, _, _ := net.ParseCIDR(cidr); ip.To4() == nil {
		tool = "ip6tables"
	}
	rule := []string{"POSTROUTING", "-s", cidr, "!", "-d", cidr, "-m", "comment", "--comment", masqComment, "-j", "MASQUERADE"}
	run := func(op string) error {
		cmd := exec.Command(tool, append([]string{"-w", "-t", "nat", op}, rule...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %w: %s", tool, op, err, bytes.TrimSpace(out[:min(len(out), 512)]))
		}
		return nil
	}
	if run("-C") != nil {
		if err := run("-A"); err != nil {
			return fmt.Errorf("masquerading the pod CIDR (is iptables installed? Debian's containernetworking-plugins depends on it): %w", err)
		}
	}
	n.mu.Lock()
	n.masqed = cidr
	n.mu.Unlock()
	return nil
}
