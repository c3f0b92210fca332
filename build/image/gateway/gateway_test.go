package gateway

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"outpost.dev/agent/config"
	"outpost.dev/boards/images"
)

func TestMissingToolNamesPackage(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	err := CheckTools()
	if err == nil || !strings.Contains(err.Error(), "apt-get install apt dpkg e2fsprogs mtools xz-utils") {
		t.Errorf("CheckTools with an empty PATH: %v", err)
	}
}

// TestAgentConfig: the first-boot config names the relay, the agent's
// board (sim for a QEMU image), the pinned upgrade key and the plain-HTTP
// registries, and the agent loads it.
func TestAgentConfig(t *testing.T) {
	b, err := images.Lookup("qemu-arm64")
	if err != nil {
		t.Fatal(err)
	}
	const key = "3q7G0l4bUpo8cP4mZ6XfB7Kx2l3Yk0yq1HcZ4tq9r5I="
	o := &builder{Config: Config{Image: b, Relay: "https://10.0.2.2:8443", Registries: []string{"10.0.2.2:5000"}, UpgradePublicKey: key}}
	want := "# First-boot configuration written by make image; see /etc/outpost/agent.yaml's fields in agent/README.md.\n" +
		"server: https://10.0.2.2:8443\nboard: sim\nupgradePublicKey: " + key + "\ncontainerd:\n  registries:\n    \"10.0.2.2:5000\": {plainHTTP: true}\n"
	if got := o.agentConfig(); got != want {
		t.Errorf("agent.yaml:\n%s\nwant:\n%s", got, want)
	}
	// The agent reads it, and pins the key.
	f := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(f, []byte(want), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(f, true)
	if err != nil {
		t.Fatalf("the agent does not load the image's agent.yaml: %v", err)
	}
	if base64.StdEncoding.EncodeToString(cfg.UpgradePublicKey) != key {
		t.Errorf("the agent pins upgrade key %x, want %s", cfg.UpgradePublicKey, key)
	}
	o.Relay, o.Registries, o.UpgradePublicKey = "", nil, ""
	if got := o.agentConfig(); !strings.Contains(got, "#server: https://relay.example.com:8443\nboard: sim\n") || strings.Contains(got, "containerd:") || strings.Contains(got, "upgradePublicKey") {
		t.Errorf("agent.yaml without a relay or registries:\n%s", got)
	}
}
