package gateway

import (
	"strings"
	"testing"

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
// board (sim for a QEMU image) and the plain-HTTP registries.
func TestAgentConfig(t *testing.T) {
	b, err := images.Lookup("qemu-arm64")
	if err != nil {
		t.Fatal(err)
	}
	o := &builder{Config: Config{Image: b, Relay: "https://10.0.2.2:8443", Registries: []string{"10.0.2.2:5000"}}}
	want := "# First-boot configuration written by make image; see /etc/outpost/agent.yaml's fields in agent/README.md.\n" +
		"server: https://10.0.2.2:8443\nboard: sim\ncontainerd:\n  registries:\n    \"10.0.2.2:5000\": {plainHTTP: true}\n"
	if got := o.agentConfig(); got != want {
		t.Errorf("agent.yaml:\n%s\nwant:\n%s", got, want)
	}
	o.Relay, o.Registries = "", nil
	if got := o.agentConfig(); !strings.Contains(got, "#server: https://relay.example.com:8443\nboard: sim\n") || strings.Contains(got, "containerd:") {
		t.Errorf("agent.yaml without a relay or registries:\n%s", got)
	}
}
