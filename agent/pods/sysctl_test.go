package pods

import (
	"strings"
	"testing"

	"outpost.dev/wire"
)

func TestForbiddenSysctl(t *testing.T) {
	allowed := []string{"net.core.somaxconn", "kernel.msg*", "kernel.panic"}
	for _, tc := range []struct {
		sysctl      string
		hostNetwork bool
		errHas      string // "" when admitted
	}{
		{"kernel.shm_rmid_forced", false, ""},
		{"net.ipv4.ip_unprivileged_port_start", false, ""},
		{"net.ipv4.tcp_keepalive_probes", false, ""},
		{"net/ipv4/ping_group_range", false, ""},
		{"net.core.somaxconn", false, ""},
		{"kernel.msgmax", false, ""},
		{"kernel.shm_rmid_forced", true, ""},
		{"net.ipv4.tcp_syncookies", true, "not allowed with host net enabled"},
		{"net.core.somaxconn", true, "not allowed with host net enabled"},
		{"net.core.rmem_max", false, "not allowlisted"},
		{"kernel.shmmax", false, "not allowlisted"},
		{"vm.swappiness", false, "not allowlisted"},
		{"kernel.panic", false, "not a namespaced sysctl"}, // allowed by a bad config, still refused
	} {
		p := &wire.Pod{HostNetwork: tc.hostNetwork, Sysctls: []wire.Sysctl{{Name: "kernel.shm_rmid_forced", Value: "1"}, {Name: tc.sysctl, Value: "1"}}}
		got := forbiddenSysctl(p, allowed)
		if tc.errHas == "" && got != "" || tc.errHas != "" && !strings.Contains(got, tc.errHas) {
			t.Errorf("%s (hostNetwork %v): %q, want %q", tc.sysctl, tc.hostNetwork, got, tc.errHas)
		}
	}
	if m := sysctls(&wire.Pod{Sysctls: []wire.Sysctl{{Name: "net/ipv4/conf/eno2.100/rp_filter", Value: "1"}}}); m["net.ipv4.conf.eno2/100.rp_filter"] != "1" {
		t.Errorf("slash form not normalized: %v", m)
	}
}
