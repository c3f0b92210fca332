// Package config loads the agent's configuration file, merges it with
// defaults and command-line flags, and validates the result.
//
// The file is optional: an agent joined with flags runs without one. Every
// field has a default, and unknown fields are errors, so a typo in a
// gateway's config is reported at start instead of being silently ignored.
package config

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Default locations and limits.
const (
	DefaultPath     = "/etc/outpost/agent.yaml"
	DefaultStateDir = "/var/lib/outpost"
	DefaultLogLevel = "info"
	// DefaultLogging is how containers' output reaches their log files:
	// the agent's copy, 13× less memory than a logger process each
	// (docs/containerd.md measures the two).
	DefaultLogging = LoggingAgent
	DefaultMaxPods = 110

	// DefaultMemoryLimit keeps the agent well under its 30 MB budget with
	// room for the garbage collector to work before the kernel steps in.
	DefaultMemoryLimit = 24 << 20
	// DefaultReservedCPUMillis and DefaultReservedMemory are held back from
	// the node's capacity for the agent, containerd and the OS, the way a
	// kubelet's system-reserved is.
	DefaultReservedCPUMillis = 100
	DefaultReservedMemory    = 64 << 20
	// DefaultOutboxMaxBytes bounds the reports queued while the relay is
	// unreachable: hours of status changes for a gateway's pods and twins.
	DefaultOutboxMaxBytes = 8 << 20
	// DefaultCertRotateAt is when the node certificate is renewed, in
	// percent of its lifetime (a 30-day one after 22.5 days).
	DefaultCertRotateAt = 75
	// DefaultMaxDevices bounds the Devices one gateway serves.
	DefaultMaxDevices = 256
	// DefaultMQTTListen keeps the embedded broker on loopback.
	DefaultMQTTListen = "127.0.0.1:1883"
	// DefaultMetricsListen is the agent's Prometheus endpoint, loopback
	// only (the kubelet's old read-only port: a gateway runs no kubelet).
	DefaultMetricsListen  = "127.0.0.1:10255"
	DefaultMQTTMaxClients = 32

	// minMemoryLimit is below what the agent needs to run at all; a smaller
	// value is a unit mistake ("24M" meant as MiB is fine, "24k" is not).
	minMemoryLimit = 8 << 20
	maxMaxPods     = 1000
	maxMaxDevices  = 4096
	maxFileSize    = 64 << 10
)

// Config is the agent's effective configuration.
type Config struct {
	// Path is the file Flags.Load read (or looked for), named in errors
	// that say to edit it.
	Path string
	// Server is the relay's URL, https://HOST:PORT.
	Server string
	// NodeName is the name to join as; only join uses it.
	NodeName string
	StateDir string
	// Board names the board definition; empty means detect.
	Board    string
	LogLevel string
	// Logging is LoggingProcess or LoggingAgent.
	Logging string
	// MemoryLimit is the Go runtime's soft memory limit in bytes.
	MemoryLimit int64
	MaxPods     int
	// ReservedCPUMillis and ReservedMemory are subtracted from capacity to
	// give allocatable.
	ReservedCPUMillis int64
	ReservedMemory    int64
	// OutboxMaxBytes bounds the durable queue of reports to the relay.
	OutboxMaxBytes int64
	// MaxDevices bounds the Devices (sensors, actuators) the agent serves.
	MaxDevices int
	// MQTT is where device twins are published on the gateway.
	MQTT MQTT
	// Containerd is how pods reach containerd and registries.
	Containerd Containerd
	// MetricsListen is where GET /metrics is served (HOST:PORT); empty
	// turns the endpoint off.
	MetricsListen string
	// SeccompProfileDir holds the Localhost seccomp profiles pods name in
	// securityContext.seccompProfile.localhostProfile (the kubelet's
	// <root-dir>/seccomp); empty is StateDir/seccomp.
	SeccompProfileDir string
	// AllowedUnsafeSysctls are the sysctls pods may set beyond the
	// kubelet's safe set (the kubelet's --allowed-unsafe-sysctls): names,
	// or prefixes ending in "*"; only namespaced ones (kernel.shm*,
	// kernel.msg*, kernel.sem, fs.mqueue.*, net.*).
	AllowedUnsafeSysctls []string
	// CertRotateAt is the share of the node certificate's lifetime, in
	// percent, after which the agent renews it on its link (link.Rotation).
	CertRotateAt int
	// Network is the pod network (CNI).
	Network Network
	// UpgradePublicKey is the ed25519 key agent upgrades must be signed
	// with (agent/upgrade), pinned here and never taken from the cloud;
	// nil refuses every upgrade.
	UpgradePublicKey ed25519.PublicKey
}

// Network configures the pod network: the CNI plugins the agent runs for
// each pod that is not hostNetwork, and the pods' DNS settings.
type Network struct {
	// Disabled runs no CNI plugin: pods that are not hostNetwork get a
	// network namespace with loopback only (no address, no hostPort, no
	// egress), as on a gateway without the plugins. For gateways whose
	// pods talk only to their devices, and to measure what CNI costs.
	Disabled bool `yaml:"disabled"`
	// PodCIDR is this node's pod range for the agent's default conflist;
	// set, it wins over the Node's spec.podCIDR from the cluster.
	PodCIDR string `yaml:"podCIDR"`
	// ConfDir holds a conflist of the user's own (Flannel, Cilium…): the
	// first by name is used instead of the agent's default.
	ConfDir string `yaml:"confDir"`
	// BinDirs are searched for the plugin binaries, in order.
	BinDirs []string `yaml:"binDirs"`
	// Bridge names the default conflist's bridge.
	Bridge string `yaml:"bridge"`
	// ClusterDNS and ClusterDomain are the kubelet's --cluster-dns and
	// --cluster-domain: dnsPolicy ClusterFirst resolves through them.
	ClusterDNS    []string `yaml:"clusterDNS"`
	ClusterDomain string   `yaml:"clusterDomain"`
	// ResolvConf is the node's resolver file (dnsPolicy Default).
	ResolvConf string `yaml:"resolvConf"`
}

// Default network settings (see agent/cni and agent/pods).
const (
	DefaultCNIConfDir    = "/etc/cni/net.d"
	DefaultBridge        = "outpost0"
	DefaultClusterDomain = "cluster.local"
	DefaultResolvConf    = "/etc/resolv.conf"
)

// DefaultCNIBinDirs are where Debian (/usr/lib/cni) and the upstream
// release tarballs (/opt/cni/bin) put the plugins.
var DefaultCNIBinDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}

func (n Network) validate() error {
	if n.PodCIDR != "" {
		if _, ipn, err := net.ParseCIDR(n.PodCIDR); err != nil || ipn.String() != n.PodCIDR {
			return fmt.Errorf("network.podCIDR %q is not a network address like 10.244.3.0/24", n.PodCIDR)
		}
	}
	for _, d := range append([]string{n.ConfDir, n.ResolvConf}, n.BinDirs...) {
		if !filepath.IsAbs(d) {
			return fmt.Errorf("network: %q must be an absolute path", d)
		}
	}
	if len(n.BinDirs) == 0 || len(n.BinDirs) > 8 {
		return errors.New("network.binDirs: give 1 to 8 directories")
	}
	if len(n.Bridge) == 0 || len(n.Bridge) > 15 || strings.ContainsAny(n.Bridge, "/ :") {
		return fmt.Errorf("network.bridge %q is not an interface name (1 to 15 characters, no '/', ':' or space)", n.Bridge)
	}
	if len(n.ClusterDNS) > 3 {
		return errors.New("network.clusterDNS: at most 3 servers (what a resolver reads)")
	}
	for _, a := range n.ClusterDNS {
		if net.ParseIP(a) == nil {
			return fmt.Errorf("network.clusterDNS: %q is not an IP address", a)
		}
	}
	if n.ClusterDomain == "" || len(n.ClusterDomain) > 253 || strings.ContainsAny(n.ClusterDomain, " \t#;/") {
		return fmt.Errorf("network.clusterDomain %q is not a domain like %s", n.ClusterDomain, DefaultClusterDomain)
	}
	return nil
}

// Containerd configures the pod runtime.
type Containerd struct {
	// Address is containerd's gRPC socket.
	Address string
	// Namespace is the containerd namespace the agent's containers live in.
	Namespace string
	// Registries holds per-registry settings by host[:port] as written in
	// image references.
	Registries map[string]Registry
}

// Registry is how to reach one registry.
type Registry struct {
	// PlainHTTP allows HTTP instead of HTTPS (loopback or trusted LAN only).
	PlainHTTP bool `yaml:"plainHTTP"`
	// Username and Password log in when a pod's pull secrets do not.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// CA is a PEM file of CAs trusted, besides the system's, for the
	// registry's HTTPS certificate (a registry with a private CA).
	CA string `yaml:"ca"`
}

// Default containerd settings.
const (
	DefaultContainerdAddress   = "/run/containerd/containerd.sock"
	DefaultContainerdNamespace = "outpost"
)

// MQTT configures the agent's MQTT side: the embedded broker (default) or
// an external broker (URL set).
type MQTT struct {
	// Enabled turns MQTT off entirely when false; twins still reach the
	// cluster through the relay.
	Enabled bool
	// Listen is the embedded broker's address, loopback by default.
	Listen string
	// Username and Password: required of clients by the embedded broker,
	// sent to an external one.
	Username, Password string
	// CertFile and KeyFile make the embedded broker speak TLS.
	CertFile, KeyFile string
	// URL is an external broker (tcp://HOST:1883, ssl://HOST:8883);
	// CAFile the PEM CA of its certificate.
	URL, CAFile string
	// DesiredWrites is "allow" or "deny": whether apps may write desired
	// values on the desired topics.
	DesiredWrites string
	// KubeEdge also speaks KubeEdge's $hw/events/device/… twin topics.
	KubeEdge bool
	// MaxClients bounds the embedded broker's clients.
	MaxClients int
}

// Default returns the configuration used when nothing is set.
func Default() Config {
	return Config{
		StateDir:          DefaultStateDir,
		LogLevel:          DefaultLogLevel,
		Logging:           DefaultLogging,
		MemoryLimit:       DefaultMemoryLimit,
		MaxPods:           DefaultMaxPods,
		OutboxMaxBytes:    DefaultOutboxMaxBytes,
		CertRotateAt:      DefaultCertRotateAt,
		ReservedCPUMillis: DefaultReservedCPUMillis,
		ReservedMemory:    DefaultReservedMemory,
		MaxDevices:        DefaultMaxDevices,
		MetricsListen:     DefaultMetricsListen,
		Network: Network{ConfDir: DefaultCNIConfDir, BinDirs: DefaultCNIBinDirs, Bridge: DefaultBridge,
			ClusterDomain: DefaultClusterDomain, ResolvConf: DefaultResolvConf},
		Containerd: Containerd{Address: DefaultContainerdAddress, Namespace: DefaultContainerdNamespace},
		MQTT: MQTT{
			Enabled:       true,
			Listen:        DefaultMQTTListen,
			DesiredWrites: "allow",
			MaxClients:    DefaultMQTTMaxClients,
		},
	}
}

// file is the YAML shape. Quantities stay strings here so the file can
// say "24MiB" and "100m" the way Kubernetes users write them.
type file struct {
	Server      string    `yaml:"server"`
	NodeName    string    `yaml:"nodeName"`
	StateDir    string    `yaml:"stateDir"`
	Board       string    `yaml:"board"`
	LogLevel    string    `yaml:"logLevel"`
	Logging     string    `yaml:"logging"`
	MemoryLimit string    `yaml:"memoryLimit"`
	MaxPods     *int      `yaml:"maxPods"`
	OutboxMax   string    `yaml:"outboxMaxBytes"`
	Reserved    *reserved `yaml:"reserved"`
	MaxDevices  *int      `yaml:"maxDevices"`
	RotateAt    *int      `yaml:"certRotateAt"`
	MQTT        *mqttFile `yaml:"mqtt"`
	Containerd  *struct {
		Address    string              `yaml:"address"`
		Namespace  string              `yaml:"namespace"`
		Registries map[string]Registry `yaml:"registries"`
	} `yaml:"containerd"`
	Metrics *struct {
		Listen *string `yaml:"listen"` // "" turns it off
	} `yaml:"metrics"`
	SeccompProfileDir    string   `yaml:"seccompProfileDir"`
	AllowedUnsafeSysctls []string `yaml:"allowedUnsafeSysctls"`
	Network              *Network `yaml:"network"`
	UpgradePublicKey     string   `yaml:"upgradePublicKey"`
}

type mqttFile struct {
	Enabled       *bool  `yaml:"enabled"`
	Listen        string `yaml:"listen"`
	Username      string `yaml:"username"`
	Password      string `yaml:"password"`
	CertFile      string `yaml:"certFile"`
	KeyFile       string `yaml:"keyFile"`
	URL           string `yaml:"url"`
	CAFile        string `yaml:"caFile"`
	DesiredWrites string `yaml:"desiredWrites"`
	KubeEdge      *bool  `yaml:"kubeEdge"`
	MaxClients    *int   `yaml:"maxClients"`
}

// MQTTFields lists the fields of mqtt, for error messages and docs.
var MQTTFields = []string{"enabled", "listen", "username", "password", "certFile", "keyFile", "url", "caFile", "desiredWrites", "kubeEdge", "maxClients"}

type reserved struct {
	CPU    string `yaml:"cpu"`
	Memory string `yaml:"memory"`
}

// Fields lists the file's top-level fields, for error messages and docs.
var Fields = []string{"server", "nodeName", "stateDir", "board", "logLevel", "logging", "memoryLimit", "maxPods", "reserved", "outboxMaxBytes", "maxDevices", "certRotateAt", "mqtt", "containerd", "metrics", "seccompProfileDir", "allowedUnsafeSysctls", "network", "upgradePublicKey"}

// Load reads the file at path over the defaults. A missing file is not an
// error unless required, since the default path is tried on every start.
func Load(path string, required bool) (Config, error) {
	cfg := Default()
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if !required {
				return cfg, nil
			}
			return cfg, fmt.Errorf("config %s does not exist: check --config", path)
		}
		return cfg, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	// Bounded so a wrong path (a log file, a device) cannot eat the budget.
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	if len(b) > maxFileSize {
		return cfg, fmt.Errorf("config %s: larger than %d KiB: is this the right file?", path, maxFileSize>>10)
	}
	if err := cfg.parse(b); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

var unknownField = regexp.MustCompile(`line (\d+): field (\S+) not found`)

// parse applies a YAML document to cfg.
func (cfg *Config) parse(b []byte) error {
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file sets nothing
		}
		if m := unknownField.FindStringSubmatch(err.Error()); m != nil {
			return fmt.Errorf("line %s: unknown field %q (known: %s; reserved takes cpu and memory; mqtt takes %s)",
				m[1], m[2], strings.Join(Fields, ", "), strings.Join(MQTTFields, ", "))
		}
		return errors.New(oneLine(err.Error()))
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&cfg.Server, f.Server)
	set(&cfg.NodeName, f.NodeName)
	set(&cfg.StateDir, f.StateDir)
	set(&cfg.Board, f.Board)
	set(&cfg.LogLevel, f.LogLevel)
	set(&cfg.Logging, f.Logging)
	set(&cfg.SeccompProfileDir, f.SeccompProfileDir)
	if f.UpgradePublicKey != "" {
		k, err := ParseUpgradeKey(f.UpgradePublicKey)
		if err != nil {
			return err
		}
		cfg.UpgradePublicKey = k
	}
	if f.AllowedUnsafeSysctls != nil {
		cfg.AllowedUnsafeSysctls = f.AllowedUnsafeSysctls
	}
	if f.MemoryLimit != "" {
		n, err := ParseBytes(f.MemoryLimit)
		if err != nil {
			return fmt.Errorf("memoryLimit: %w", err)
		}
		cfg.MemoryLimit = n
	}
	if f.OutboxMax != "" {
		n, err := ParseBytes(f.OutboxMax)
		if err != nil {
			return fmt.Errorf("outboxMaxBytes: %w", err)
		}
		cfg.OutboxMaxBytes = n
	}
	if f.MaxPods != nil {
		cfg.MaxPods = *f.MaxPods
	}
	if f.MaxDevices != nil {
		cfg.MaxDevices = *f.MaxDevices
	}
	if f.RotateAt != nil {
		cfg.CertRotateAt = *f.RotateAt
	}
	if m := f.MQTT; m != nil {
		if m.Enabled != nil {
			cfg.MQTT.Enabled = *m.Enabled
		}
		if m.KubeEdge != nil {
			cfg.MQTT.KubeEdge = *m.KubeEdge
		}
		if m.MaxClients != nil {
			cfg.MQTT.MaxClients = *m.MaxClients
		}
		set(&cfg.MQTT.Listen, m.Listen)
		set(&cfg.MQTT.Username, m.Username)
		set(&cfg.MQTT.Password, m.Password)
		set(&cfg.MQTT.CertFile, m.CertFile)
		set(&cfg.MQTT.KeyFile, m.KeyFile)
		set(&cfg.MQTT.URL, m.URL)
		set(&cfg.MQTT.CAFile, m.CAFile)
		set(&cfg.MQTT.DesiredWrites, m.DesiredWrites)
	}
	if m := f.Metrics; m != nil && m.Listen != nil {
		cfg.MetricsListen = *m.Listen
	}
	if c := f.Containerd; c != nil {
		set(&cfg.Containerd.Address, c.Address)
		set(&cfg.Containerd.Namespace, c.Namespace)
		if c.Registries != nil {
			cfg.Containerd.Registries = c.Registries
		}
	}
	if n := f.Network; n != nil {
		cfg.Network.Disabled = n.Disabled
		set(&cfg.Network.PodCIDR, n.PodCIDR)
		set(&cfg.Network.ConfDir, n.ConfDir)
		set(&cfg.Network.Bridge, n.Bridge)
		set(&cfg.Network.ClusterDomain, n.ClusterDomain)
		set(&cfg.Network.ResolvConf, n.ResolvConf)
		if n.BinDirs != nil {
			cfg.Network.BinDirs = n.BinDirs
		}
		if n.ClusterDNS != nil {
			cfg.Network.ClusterDNS = n.ClusterDNS
		}
	}
	if f.Reserved != nil {
		if f.Reserved.CPU != "" {
			n, err := ParseCPU(f.Reserved.CPU)
			if err != nil {
				return fmt.Errorf("reserved.cpu: %w", err)
			}
			cfg.ReservedCPUMillis = n
		}
		if f.Reserved.Memory != "" {
			n, err := ParseBytes(f.Reserved.Memory)
			if err != nil {
				return fmt.Errorf("reserved.memory: %w", err)
			}
			cfg.ReservedMemory = n
		}
	}
	return nil
}

// Validate reports the first field that cannot work, saying how to fix it.
func (cfg Config) Validate() error {
	if cfg.Server != "" {
		if err := CheckServer(cfg.Server); err != nil {
			return err
		}
	}
	if cfg.NodeName != "" {
		if err := CheckNodeName(cfg.NodeName); err != nil {
			return err
		}
	}
	if cfg.StateDir == "" || !strings.HasPrefix(cfg.StateDir, "/") {
		return fmt.Errorf("stateDir %q must be an absolute path", cfg.StateDir)
	}
	if cfg.Logging != LoggingProcess && cfg.Logging != LoggingAgent {
		return fmt.Errorf("logging %q is not %s or %s", cfg.Logging, LoggingProcess, LoggingAgent)
	}
	if _, err := ParseLogLevel(cfg.LogLevel); err != nil {
		return err
	}
	if cfg.OutboxMaxBytes < 64<<10 || cfg.OutboxMaxBytes > 1<<30 {
		return fmt.Errorf("outboxMaxBytes %d is outside 64KiB..1GiB: write it like \"8MiB\"", cfg.OutboxMaxBytes)
	}
	if cfg.MemoryLimit < minMemoryLimit {
		return fmt.Errorf("memoryLimit %d bytes is below the %d MiB the agent needs: write it like \"24MiB\"", cfg.MemoryLimit, minMemoryLimit>>20)
	}
	if cfg.CertRotateAt < 10 || cfg.CertRotateAt > 95 {
		return fmt.Errorf("certRotateAt %d%% is outside 10..95: the share of the node certificate's lifetime after which it is renewed", cfg.CertRotateAt)
	}
	if cfg.MaxPods < 0 || cfg.MaxPods > maxMaxPods {
		return fmt.Errorf("maxPods %d out of range [0, %d]", cfg.MaxPods, maxMaxPods)
	}
	if cfg.ReservedCPUMillis < 0 || cfg.ReservedMemory < 0 {
		return errors.New("reserved cpu and memory must not be negative")
	}
	if cfg.MaxDevices < 0 || cfg.MaxDevices > maxMaxDevices {
		return fmt.Errorf("maxDevices %d out of range [0, %d]", cfg.MaxDevices, maxMaxDevices)
	}
	if err := cfg.MQTT.validate(); err != nil {
		return err
	}
	if a := cfg.Containerd.Address; !strings.HasPrefix(a, "/") {
		return fmt.Errorf("containerd.address %q must be the absolute path of containerd's socket (like %s)", a, DefaultContainerdAddress)
	}
	if !dnsLabel.MatchString(cfg.Containerd.Namespace) {
		return fmt.Errorf("containerd.namespace %q must be lowercase letters, digits and '-'", cfg.Containerd.Namespace)
	}
	for host, r := range cfg.Containerd.Registries {
		if host == "" || strings.ContainsAny(host, "/ ") {
			return fmt.Errorf("containerd.registries: %q is not a registry host[:port]", host)
		}
		if (r.Username == "") != (r.Password == "") {
			return fmt.Errorf("containerd.registries.%s: username and password go together", host)
		}
		if r.CA != "" {
			if r.PlainHTTP {
				return fmt.Errorf("containerd.registries.%s: ca is for HTTPS; it makes no sense with plainHTTP", host)
			}
			if !filepath.IsAbs(r.CA) {
				return fmt.Errorf("containerd.registries.%s: ca %q must be an absolute path of a PEM file", host, r.CA)
			}
		}
	}
	if cfg.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(cfg.MetricsListen); err != nil {
			return fmt.Errorf("metrics.listen %q is not HOST:PORT (like %s; \"\" turns metrics off)", cfg.MetricsListen, DefaultMetricsListen)
		}
	}
	if d := cfg.SeccompProfileDir; d != "" && !filepath.IsAbs(d) {
		return fmt.Errorf("seccompProfileDir %q must be an absolute path (default: stateDir/seccomp)", d)
	}
	if len(cfg.AllowedUnsafeSysctls) > 64 {
		return errors.New("allowedUnsafeSysctls: more than 64 entries")
	}
	for _, sy := range cfg.AllowedUnsafeSysctls {
		if !NamespacedSysctl(strings.TrimSuffix(sy, "*")) || strings.Count(sy, "*") > 1 || strings.Contains(strings.TrimSuffix(sy, "*"), "*") {
			return fmt.Errorf("allowedUnsafeSysctls: %q is not a namespaced sysctl or prefix* (kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*, net.*)", sy)
		}
	}
	if len(cfg.Board) > 64 {
		return fmt.Errorf("board name %q is longer than 64 characters", cfg.Board)
	}
	return cfg.Network.validate()
}

func (m MQTT) validate() error {
	if !m.Enabled {
		return nil
	}
	switch m.DesiredWrites {
	case "allow", "deny":
	default:
		return fmt.Errorf("mqtt.desiredWrites %q is not allow or deny", m.DesiredWrites)
	}
	if m.MaxClients < 1 || m.MaxClients > 1024 {
		return fmt.Errorf("mqtt.maxClients %d out of range [1, 1024]", m.MaxClients)
	}
	if (m.Username == "") != (m.Password == "") {
		return errors.New("mqtt: username and password go together")
	}
	if m.URL != "" {
		if m.CertFile != "" || m.KeyFile != "" {
			return errors.New("mqtt: certFile and keyFile are for the embedded broker; with url set, give the external broker's CA in caFile")
		}
		u, err := url.Parse(m.URL)
		if err != nil || u.Host == "" || u.Port() == "" || !slices.Contains([]string{"tcp", "mqtt", "ssl", "tls", "mqtts", "tcps"}, u.Scheme) {
			return fmt.Errorf("mqtt.url %q must look like tcp://HOST:1883 or ssl://HOST:8883", m.URL)
		}
		return nil
	}
	if m.CAFile != "" {
		return errors.New("mqtt.caFile is for an external broker (mqtt.url)")
	}
	if (m.CertFile == "") != (m.KeyFile == "") {
		return errors.New("mqtt: certFile and keyFile go together")
	}
	if _, _, err := net.SplitHostPort(m.Listen); err != nil {
		return fmt.Errorf("mqtt.listen %q is not HOST:PORT (like %s)", m.Listen, DefaultMQTTListen)
	}
	return nil
}

// NamespacedSysctl says whether a sysctl (or a prefix of one) lives in
// the IPC or network namespace, so a pod can set it without changing the
// node: the kubelet's namespaced groups.
func NamespacedSysctl(name string) bool {
	if name == "" || len(name) > 256 {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-') {
			return false
		}
	}
	return name == "kernel.sem" || strings.HasPrefix(name, "kernel.shm") || strings.HasPrefix(name, "kernel.msg") ||
		strings.HasPrefix(name, "fs.mqueue.") || strings.HasPrefix(name, "net.")
}

// CheckServer accepts an https URL with a host and nothing after it.
func CheckServer(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("server %q must look like https://HOST:PORT", s)
	}
	return nil
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// CheckNodeName accepts a DNS-1123 subdomain, as Kubernetes requires of
// Node names.
func CheckNodeName(name string) error {
	bad := func(why string) error {
		return fmt.Errorf("node name %q is not a valid Kubernetes node name (%s): pass --node-name with lowercase letters, digits, '-' and '.'", name, why)
	}
	if name == "" {
		return bad("empty")
	}
	if len(name) > 253 {
		return bad("longer than 253 characters")
	}
	for _, l := range strings.Split(name, ".") {
		if len(l) > 63 {
			return bad("a label is longer than 63 characters")
		}
		if !dnsLabel.MatchString(l) {
			return bad("each dot-separated part must start and end with a letter or digit")
		}
	}
	return nil
}

// The values of logging: how containers' output reaches their CRI log
// files. LoggingProcess is a logger process per container, started by its
// shim (outpost-logger); LoggingAgent is the agent copying the shims'
// FIFOs itself (docs/containerd.md compares them).
const (
	LoggingProcess = "process"
	LoggingAgent   = "agent"
)

// LogLevels are the accepted logLevel values.
var LogLevels = []string{"debug", "info", "warn", "error"}

// ParseLogLevel maps a logLevel name to its index in LogLevels.
func ParseLogLevel(s string) (int, error) {
	for i, l := range LogLevels {
		if strings.EqualFold(s, l) {
			return i, nil
		}
	}
	return 0, fmt.Errorf("logLevel %q is not one of %s", s, strings.Join(LogLevels, ", "))
}

var byteSuffixes = []struct {
	s string
	n int64
}{
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"B", 1}, {"", 1},
}

// ParseBytes parses a whole number of bytes with an optional unit:
// Kubernetes' Ki/Mi/Gi and k/M/G, or the same with a B ("24MiB", "64MB").
func ParseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = s[:i], s[i:]
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || num == "" {
		return 0, fmt.Errorf("%q is not a size like 24MiB, 64Mi or 1G", s)
	}
	for _, suf := range byteSuffixes {
		if unit == suf.s {
			if n > (1<<62)/suf.n {
				return 0, fmt.Errorf("%q is too large", s)
			}
			return n * suf.n, nil
		}
	}
	return 0, fmt.Errorf("%q has unknown unit %q: use Ki, Mi, Gi (or KiB, MiB, GiB), k, M, G", s, unit)
}

// ParseCPU parses a CPU amount in millicores: "100m", "0.5" or "2".
func ParseCPU(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if m, ok := strings.CutSuffix(s, "m"); ok {
		n, err := strconv.ParseInt(m, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%q is not a CPU amount like 100m or 0.5", s)
		}
		return n, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || !(f >= 0 && f <= 1<<20) { // also refuses NaN
		return 0, fmt.Errorf("%q is not a CPU amount like 100m or 0.5", s)
	}
	return int64(f*1000 + 0.5), nil
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// ParseUpgradeKey reads upgradePublicKey: a raw ed25519 public key in
// standard base64 (what outpost-relay upgrade keygen prints).
func ParseUpgradeKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("upgradePublicKey: want the %d-byte ed25519 public key in base64 (outpost-relay upgrade keygen prints it)", ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}
