// Package images lists the gateway images make image builds (package
// outpost.dev/build/image/gateway): for each, the Debian architecture and
// suite its packages come from, how it boots (QEMU machine, kernel
// console, kernel modules, Raspberry Pi firmware and device trees) and
// which board of the agent's registry (outpost.dev/boards) it runs. The
// agent does not link this package.
package images

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Image is one board make image builds for.
type Image struct {
	Name, About string
	// Arch is the Debian architecture (arm64, riscv64); build/cross's
	// Lookup takes it to find the agent's Go target.
	Arch string
	// Suite is the Debian release the packages come from; "" means the
	// builder's -suite (bookworm).
	Suite string
	// Qemu is the QEMU machine that boots it, for the hint printed at
	// the end; "" for hardware.
	Qemu string
	// Console is the kernel's console= arguments.
	Console string
	// Board is the agent's board (registered in outpost.dev/boards)
	// written to the first-boot config.
	Board string
	// RootModules reach the root file system from the initramfs; they and
	// RunModules (taken when the kernel has them) go into the root too.
	RootModules, RunModules []string
	// Firmware is the Raspberry Pi boot firmware and device trees.
	Firmware bool
	DTBs     []string
}

// podNetModules are what the pod network (docs/network.md) needs of the
// kernel: veth pairs on a bridge, br_netfilter, and iptables' nf_tables
// backend with the xtables matches and targets that nft_compat runs for
// the agent's masquerade rule (comment, MASQUERADE) and portmap's hostPort
// rules (addrtype, multiport, tcp/udp ports, mark and MARK, DNAT), and the
// conntrack netlink portmap clears stale UDP entries with. The image has
// no modules.alias, so the kernel's loads on demand (by alias, such as
// nft-chain-2-nat) find nothing: the image's init loads these at boot.
var podNetModules = []string{"veth", "bridge", "br_netfilter",
	"nf_tables", "nft_compat", "nft_chain_nat", "nf_conntrack_netlink",
	"xt_MASQUERADE", "xt_nat", "xt_comment", "xt_addrtype", "xt_multiport", "xt_tcpudp", "xt_mark"}

var images = map[string]Image{
	"rpi4": {
		Name: "rpi4", About: "Raspberry Pi 4 Model B, Pi 400 and CM4: flash to an SD card",
		Arch:        "arm64",
		Console:     "console=ttyS1,115200 console=tty1",
		Board:       "rpi4",
		RootModules: []string{"sdhci_iproc", "ext4"},
		RunModules: slices.Concat([]string{"genet", "broadcom", "mdio_bcm_unimac", "iproc_rng200", "bcm2835_wdt",
			"i2c_bcm2835", "spi_bcm2835", "pcie_brcmstb", "reset_raspberrypi", "xhci_pci",
			"overlay", "vfat", "nls_cp437", "nls_ascii"}, podNetModules),
		Firmware: true,
		DTBs:     []string{"broadcom/bcm2711-rpi-4-b.dtb", "broadcom/bcm2711-rpi-400.dtb", "broadcom/bcm2711-rpi-cm4-io.dtb"},
	},
	"qemu-arm64": {
		Name: "qemu-arm64", About: "qemu-system-aarch64 -M virt, disk on virtio-blk: for tests and benchmarks",
		Arch:    "arm64",
		Qemu:    "qemu-system-aarch64 -M virt -cpu cortex-a72",
		Console: "console=ttyAMA0",
		// A QEMU virt machine has no sensor buses: its devices are simulated.
		Board:       "sim",
		RootModules: []string{"virtio_pci", "virtio_mmio", "virtio_blk", "ext4"},
		RunModules:  slices.Concat([]string{"virtio_net", "virtio_rng", "overlay", "vfat", "nls_cp437", "nls_ascii"}, podNetModules),
	},
	"qemu-riscv64": {
		Name: "qemu-riscv64", About: "qemu-system-riscv64 -M virt with OpenSBI, disk on virtio-blk: for tests and benchmarks",
		Arch: "riscv64",
		// bookworm has no riscv64 port; trixie (Debian 13) is the first
		// release with riscv64 packages.
		Suite:       "trixie",
		Qemu:        "qemu-system-riscv64 -M virt -bios default",
		Console:     "console=ttyS0",
		Board:       "sim",
		RootModules: []string{"virtio_pci", "virtio_mmio", "virtio_blk", "ext4"},
		// The virt machine's RTC (goldfish) is built into Debian's
		// riscv64 kernel, which sets the clock from it at boot.
		RunModules: slices.Concat([]string{"virtio_net", "virtio_rng", "overlay", "vfat", "nls_cp437", "nls_ascii"}, podNetModules),
	},
}

// Names lists the images, sorted.
func Names() []string { return slices.Sorted(maps.Keys(images)) }

// Lookup returns the image name, or an error listing the known ones with
// what each is for.
func Lookup(name string) (Image, error) {
	if img, ok := images[name]; ok {
		return img, nil
	}
	var lines []string
	for _, n := range Names() {
		lines = append(lines, fmt.Sprintf("  %-12s %s", n, images[n].About))
	}
	what := fmt.Sprintf("unknown board %q", name)
	if name == "" {
		what = "no board given"
	}
	return Image{}, fmt.Errorf("%s: make image BOARD=NAME with one of\n%s", what, strings.Join(lines, "\n"))
}
