package config

import (
	"crypto/ed25519"
	"encoding/base64"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestLoad(t *testing.T) {
	def := Default()
	tests := []struct {
		name    string
		yaml    string // "-" means no file
		want    func(c *Config)
		wantErr string
	}{
		{name: "absent file gives defaults", yaml: "-", want: func(c *Config) {}},
		{name: "empty file gives defaults", yaml: "", want: func(c *Config) {}},
		{name: "comment only", yaml: "# nothing\n", want: func(c *Config) {}},
		{
			name: "every field",
			yaml: `server: https://relay.example:8443
nodeName: gw-01
stateDir: /data/outpost
board: rpi4
logLevel: debug
logging: process
memoryLimit: 20MiB
maxPods: 16
reserved:
  cpu: 250m
  memory: 128Mi
seccompProfileDir: /etc/outpost/seccomp
allowedUnsafeSysctls: [net.core.somaxconn, "kernel.msg*"]
`,
			want: func(c *Config) {
				c.Server = "https://relay.example:8443"
				c.NodeName = "gw-01"
				c.StateDir = "/data/outpost"
				c.Board = "rpi4"
				c.LogLevel = "debug"
				c.Logging = LoggingProcess
				c.MemoryLimit = 20 << 20
				c.MaxPods = 16
				c.ReservedCPUMillis = 250
				c.ReservedMemory = 128 << 20
				c.SeccompProfileDir = "/etc/outpost/seccomp"
				c.AllowedUnsafeSysctls = []string{"net.core.somaxconn", "kernel.msg*"}
			},
		},
		{
			name: "reserved partly set keeps the other default",
			yaml: "reserved:\n  cpu: \"0.5\"\n",
			want: func(c *Config) { c.ReservedCPUMillis = 500 },
		},
		{name: "containerd and registries", yaml: "containerd:\n  address: /tmp/c.sock\n  registries:\n    127.0.0.1:5000: {plainHTTP: true}\n    reg.local: {username: u, password: p, ca: /etc/outpost/reg-ca.pem}\n",
			want: func(c *Config) {
				c.Containerd.Address = "/tmp/c.sock"
				c.Containerd.Registries = map[string]Registry{"127.0.0.1:5000": {PlainHTTP: true}, "reg.local": {Username: "u", Password: "p", CA: "/etc/outpost/reg-ca.pem"}}
			}},
		{name: "maxPods zero is allowed", yaml: "maxPods: 0\n", want: func(c *Config) { c.MaxPods = 0 }},
		{name: "unknown field named", yaml: "server: https://a:1\nmemorylimit: 1Gi\n", wantErr: `line 2: unknown field "memorylimit"`},
		{name: "unknown nested field named", yaml: "reserved:\n  disk: 1Gi\n", wantErr: `unknown field "disk"`},
		{name: "bad memory unit", yaml: "memoryLimit: 24 MiBs\n", wantErr: "memoryLimit:"},
		{name: "bad cpu", yaml: "reserved:\n  cpu: lots\n", wantErr: "reserved.cpu:"},
		{name: "wrong type", yaml: "maxPods: many\n", wantErr: "line 1: cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "agent.yaml")
			if tt.yaml != "-" {
				if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := Load(path, false)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error spans lines: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := def
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestLoadRequiredMissing(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), true); err == nil {
		t.Fatal("missing required file loaded")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(c *Config)
		wantErr string
	}{
		{name: "defaults", mod: func(c *Config) {}},
		{name: "server ok", mod: func(c *Config) { c.Server = "https://10.0.0.1:8443" }},
		{name: "server http", mod: func(c *Config) { c.Server = "http://10.0.0.1:8443" }, wantErr: "https://HOST:PORT"},
		{name: "server path", mod: func(c *Config) { c.Server = "https://relay/x" }, wantErr: "https://HOST:PORT"},
		{name: "node name upper", mod: func(c *Config) { c.NodeName = "GW-1" }, wantErr: "not a valid Kubernetes node name"},
		{name: "node name dotted", mod: func(c *Config) { c.NodeName = "gw-1.site-a" }},
		{name: "node name trailing dash", mod: func(c *Config) { c.NodeName = "gw-" }, wantErr: "node name"},
		{name: "relative state dir", mod: func(c *Config) { c.StateDir = "state" }, wantErr: "absolute"},
		{name: "relative seccomp profile dir", mod: func(c *Config) { c.SeccompProfileDir = "seccomp" }, wantErr: "seccompProfileDir"},
		{name: "node-wide sysctl allowed", mod: func(c *Config) { c.AllowedUnsafeSysctls = []string{"kernel.panic"} }, wantErr: "kernel.panic"},
		{name: "sysctl pattern with an inner star", mod: func(c *Config) { c.AllowedUnsafeSysctls = []string{"net.*.x"} }, wantErr: "net.*.x"},
		{name: "log level", mod: func(c *Config) { c.LogLevel = "verbose" }, wantErr: "logLevel"},
		{name: "logging", mod: func(c *Config) { c.Logging = "shim" }, wantErr: "logging"},
		{name: "logging process", mod: func(c *Config) { c.Logging = LoggingProcess }},
		{name: "log level case", mod: func(c *Config) { c.LogLevel = "DEBUG" }},
		{name: "memory too small", mod: func(c *Config) { c.MemoryLimit = 24 << 10 }, wantErr: "memoryLimit"},
		{name: "max pods", mod: func(c *Config) { c.MaxPods = 5000 }, wantErr: "maxPods"},
		{name: "reserved negative", mod: func(c *Config) { c.ReservedMemory = -1 }, wantErr: "reserved"},
		{name: "containerd relative socket", mod: func(c *Config) { c.Containerd.Address = "c.sock" }, wantErr: "containerd.address"},
		{name: "registry half credentials", mod: func(c *Config) {
			c.Containerd.Registries = map[string]Registry{"r.local": {Username: "u"}}
		}, wantErr: "username and password go together"},
		{name: "registry ca relative", mod: func(c *Config) {
			c.Containerd.Registries = map[string]Registry{"r.local": {CA: "ca.pem"}}
		}, wantErr: "must be an absolute path"},
		{name: "registry ca with plain HTTP", mod: func(c *Config) {
			c.Containerd.Registries = map[string]Registry{"r.local": {CA: "/ca.pem", PlainHTTP: true}}
		}, wantErr: "plainHTTP"},
		{name: "pod CIDR", mod: func(c *Config) { c.Network.PodCIDR = "10.244.3.0/24" }},
		{name: "pod CIDR not a network address", mod: func(c *Config) { c.Network.PodCIDR = "10.244.3.7/24" }, wantErr: "network.podCIDR"},
		{name: "bridge name too long", mod: func(c *Config) { c.Network.Bridge = "a-very-long-bridge" }, wantErr: "network.bridge"},
		{name: "cluster DNS not an IP", mod: func(c *Config) { c.Network.ClusterDNS = []string{"kube-dns"} }, wantErr: "network.clusterDNS"},
		{name: "CNI conf dir relative", mod: func(c *Config) { c.Network.ConfDir = "net.d" }, wantErr: "absolute"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mod(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"24MiB", 24 << 20, true},
		{"24Mi", 24 << 20, true},
		{"64M", 64e6, true},
		{"1G", 1e9, true},
		{"1Gi", 1 << 30, true},
		{"512", 512, true},
		{"512B", 512, true},
		{" 2KiB ", 2048, true},
		{"", 0, false},
		{"MiB", 0, false},
		{"1.5Gi", 0, false},
		{"-1Mi", 0, false},
		{"10XB", 0, false},
		{"99999999999999999Ti", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseBytes(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestParseCPU(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"100m", 100, true},
		{"0.5", 500, true},
		{"2", 2000, true},
		{"0.1", 100, true},
		{"m", 0, false},
		{"-1", 0, false},
		{"NaN", 0, false},
		{"1c", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseCPU(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseCPU(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// TestNetworkSection: the network block is read over the defaults.
func TestNetworkSection(t *testing.T) {
	c := Default()
	if err := c.parse([]byte("network:\n  podCIDR: 10.244.3.0/24\n  clusterDNS: [10.96.0.10]\n  bridge: cni9\n")); err != nil {
		t.Fatal(err)
	}
	n := c.Network
	if n.PodCIDR != "10.244.3.0/24" || n.ClusterDNS[0] != "10.96.0.10" || n.Bridge != "cni9" ||
		n.ConfDir != DefaultCNIConfDir || n.ClusterDomain != DefaultClusterDomain || len(n.BinDirs) != 2 {
		t.Errorf("network: %+v", n)
	}
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
	if n.Disabled {
		t.Error("network.disabled by default")
	}
	if err := c.parse([]byte("network:\n  disabled: true\n")); err != nil || !c.Network.Disabled {
		t.Errorf("network.disabled: true read as %v (%v)", c.Network.Disabled, err)
	}
}

func TestUpgradePublicKey(t *testing.T) {
	dir := t.TempDir()
	good := "upgradePublicKey: " + base64.StdEncoding.EncodeToString(make([]byte, ed25519.PublicKeySize)) + "\n"
	for _, c := range []struct {
		body string
		ok   bool
	}{
		{good, true},
		{"upgradePublicKey: notbase64!\n", false},
		{"upgradePublicKey: " + base64.StdEncoding.EncodeToString(make([]byte, 31)) + "\n", false},
	} {
		p := filepath.Join(dir, "agent.yaml")
		if err := os.WriteFile(p, []byte(c.body), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(p, true)
		if c.ok != (err == nil) {
			t.Fatalf("%q: err = %v", c.body, err)
		}
		if c.ok && len(cfg.UpgradePublicKey) != ed25519.PublicKeySize {
			t.Fatalf("key not loaded: %v", cfg.UpgradePublicKey)
		}
	}
}
