package gateway

import (
	"fmt"
	"path/filepath"

	"outpost.dev/agent/cni"
	"outpost.dev/build/image/rootfs"
)

// The pod network (docs/network.md): the agent runs Debian's CNI plugins
// for every pod that is not hostNetwork and masquerades the pod CIDR with
// iptables. The image carries the plugins its default conflist runs and
// iptables with the nf_tables backend: Debian's default choice (what its
// update-alternatives would pick), the one the kernel's nf_tables,
// nft_compat and nft_chain_nat modules serve (boards/images loads them at
// boot), and the one the host tests run the same plugins against.
var (
	podNetPackages = []string{"containernetworking-plugins", "iptables"}
	// iptablesAlternatives are the names Debian's iptables postinst links
	// to the nft backend through /etc/alternatives.
	iptablesAlternatives = map[string]string{
		"iptables": "iptables-nft", "iptables-save": "iptables-nft-save", "iptables-restore": "iptables-nft-restore",
		"ip6tables": "ip6tables-nft", "ip6tables-save": "ip6tables-nft-save", "ip6tables-restore": "ip6tables-nft-restore",
	}
	// xtablesExtensions are the iptables extensions the rules of the
	// agent (-m comment, -j MASQUERADE) and of portmap (-m addrtype,
	// -m multiport, -p tcp/udp --dport, -j MARK, -m mark, -j DNAT) parse
	// and list with; the package's other 110 take 7 MB.
	xtablesExtensions = []string{
		"libxt_standard.so", "libxt_comment.so", "libxt_addrtype.so", "libxt_multiport.so", "libxt_tcp.so", "libxt_udp.so",
		"libxt_mark.so", "libxt_MARK.so", "libxt_NAT.so", "libxt_MASQUERADE.so", "libxt_DNAT.so", "libxt_SNAT.so",
	}
)

// podNetwork trims the unpacked plugins to the default conflist's, the
// iptables extensions to the ones its rules use, and links iptables and
// ip6tables to the nft backend, as no maintainer script runs.
func podNetwork(root string) error {
	if err := rootfs.KeepOnly(filepath.Join(root, "usr/lib/cni"), cni.DefaultPlugins()); err != nil {
		return fmt.Errorf("CNI plugins: %w", err)
	}
	dirs, _ := filepath.Glob(filepath.Join(root, "usr/lib/*/xtables"))
	if len(dirs) != 1 {
		return fmt.Errorf("want one iptables extension directory (usr/lib/ARCH-TRIPLET/xtables), found %q", dirs)
	}
	if err := rootfs.KeepOnly(dirs[0], xtablesExtensions); err != nil {
		return fmt.Errorf("iptables extensions: %w", err)
	}
	return rootfs.Alternatives(root, "usr/sbin", iptablesAlternatives)
}
