package pods

import (
	"fmt"
	"slices"
	"strings"

	"outpost.dev/agent/config"
	"outpost.dev/wire"
)

// safeSysctls are the sysctls a kubelet allows every pod: namespaced, and
// unable to hurt the node or other pods.
var safeSysctls = []string{
	"kernel.shm_rmid_forced",
	"net.ipv4.ip_local_port_range",
	"net.ipv4.tcp_syncookies",
	"net.ipv4.ping_group_range",
	"net.ipv4.ip_unprivileged_port_start",
	"net.ipv4.ip_local_reserved_ports",
	"net.ipv4.tcp_keepalive_time",
	"net.ipv4.tcp_fin_timeout",
	"net.ipv4.tcp_keepalive_intvl",
	"net.ipv4.tcp_keepalive_probes",
}

// sysctlName is a sysctl's name with dots, as the kubelet normalizes it:
// when the first separator is a slash, slashes and dots swap
// ("net/ipv4/conf/eno2.100/rp_filter" is net.ipv4.conf.eno2/100.rp_filter).
func sysctlName(name string) string {
	i := strings.IndexAny(name, "./")
	if i < 0 || name[i] == '.' {
		return name
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '.':
			return '/'
		case '/':
			return '.'
		}
		return r
	}, name)
}

// forbiddenSysctl says why the node does not admit pod p's sysctls (a
// kubelet's SysctlForbidden), or "" when it does: each must be in the safe
// set or match allowed (names, or prefixes ending in "*"), live in a
// namespace the pod has of its own, and net.* needs the pod's own network.
func forbiddenSysctl(p *wire.Pod, allowed []string) string {
	for _, s := range p.Sysctls {
		name := sysctlName(s.Name)
		ok := slices.Contains(safeSysctls, name)
		for _, a := range allowed {
			if pre, star := strings.CutSuffix(a, "*"); a == name || star && strings.HasPrefix(name, pre) {
				ok = true
			}
		}
		switch {
		case !ok:
			return fmt.Sprintf("forbidden sysctl: %q not allowlisted: add it to the agent's allowedUnsafeSysctls", s.Name)
		case !config.NamespacedSysctl(strings.ReplaceAll(name, "/", ".")):
			return fmt.Sprintf("forbidden sysctl: %q is not a namespaced sysctl", s.Name)
		case p.HostNetwork && strings.HasPrefix(name, "net."):
			return fmt.Sprintf("forbidden sysctl: %q not allowed with host net enabled", s.Name)
		}
	}
	return ""
}

// sysctls is the OCI spec's sysctl map of an admitted pod.
func sysctls(p *wire.Pod) map[string]string {
	if len(p.Sysctls) == 0 {
		return nil
	}
	m := make(map[string]string, len(p.Sysctls))
	for _, s := range p.Sysctls {
		m[sysctlName(s.Name)] = s.Value
	}
	return m
}
