package gateway

import (
	"fmt"
	"sort"
	"strings"
)

// Board is what the image builder needs to know of one board. (The
// agent's own board definitions live in boards/; this list only says how
// to boot each.)
type Board struct {
	Name, About string
	Arch        string // cross target: linux-arm64
	DebArch     string
	// Suite is the Debian release the packages come from; "" means the
	// builder's -suite (bookworm).
	Suite string
	// Qemu is the QEMU machine that boots it, for the hint printed at
	// the end; "" for hardware.
	Qemu string
	// Console is the kernel's console= arguments.
	Console string
	// AgentBoard is the agent's board (boards/) written to the
	// first-boot config; "" means name.
	AgentBoard string
	// RootModules reach the root file system from the initramfs; they and
	// RunModules (taken when the kernel has them) go into the root too.
	RootModules, RunModules []string
	// Firmware is the Raspberry Pi boot firmware and device trees.
	Firmware bool
	DTBs     []string
}

var boards = map[string]Board{
	"rpi4": {
		Name: "rpi4", About: "Raspberry Pi 4 Model B, Pi 400 and CM4: flash to an SD card",
		Arch: "linux-arm64", DebArch: "arm64",
		Console:     "console=ttyS1,115200 console=tty1",
		RootModules: []string{"sdhci_iproc", "ext4"},
		RunModules: []string{"genet", "broadcom", "mdio_bcm_unimac", "iproc_rng200", "bcm2835_wdt",
			"i2c_bcm2835", "spi_bcm2835", "pcie_brcmstb", "reset_raspberrypi", "xhci_pci",
			"overlay", "veth", "bridge", "br_netfilter", "vfat", "nls_cp437", "nls_ascii"},
		Firmware: true,
		DTBs:     []string{"broadcom/bcm2711-rpi-4-b.dtb", "broadcom/bcm2711-rpi-400.dtb", "broadcom/bcm2711-rpi-cm4-io.dtb"},
	},
	"qemu-arm64": {
		Name: "qemu-arm64", About: "qemu-system-aarch64 -M virt, disk on virtio-blk: for tests and benchmarks",
		Arch: "linux-arm64", DebArch: "arm64",
		Qemu:    "qemu-system-aarch64 -M virt -cpu cortex-a72",
		Console: "console=ttyAMA0",
		// A QEMU virt machine has no sensor buses: its devices are simulated.
		AgentBoard:  "sim",
		RootModules: []string{"virtio_pci", "virtio_mmio", "virtio_blk", "ext4"},
		RunModules:  []string{"virtio_net", "virtio_rng", "overlay", "veth", "bridge", "br_netfilter", "vfat", "nls_cp437", "nls_ascii"},
	},
	"qemu-riscv64": {
		Name: "qemu-riscv64", About: "qemu-system-riscv64 -M virt with OpenSBI, disk on virtio-blk: for tests and benchmarks",
		Arch: "linux-riscv64", DebArch: "riscv64",
		// bookworm has no riscv64 port; trixie (Debian 13) is the first
		// release with riscv64 packages.
		Suite:       "trixie",
		Qemu:        "qemu-system-riscv64 -M virt -bios default",
		Console:     "console=ttyS0",
		AgentBoard:  "sim",
		RootModules: []string{"virtio_pci", "virtio_mmio", "virtio_blk", "ext4"},
		// The virt machine's RTC (goldfish) is built into Debian's
		// riscv64 kernel, which sets the clock from it at boot.
		RunModules: []string{"virtio_net", "virtio_rng", "overlay", "veth", "bridge", "br_netfilter", "vfat", "nls_cp437", "nls_ascii"},
	},
}

// BoardNames lists the image boards, sorted.
func BoardNames() []string {
	var names []string
	for n := range boards {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Lookup returns the image board name, or an error listing them.
func Lookup(name string) (Board, error) {
	if b, ok := boards[name]; ok {
		return b, nil
	}
	var lines []string
	for _, n := range BoardNames() {
		lines = append(lines, fmt.Sprintf("  %-12s %s", n, boards[n].About))
	}
	what := fmt.Sprintf("unknown board %q", name)
	if name == "" {
		what = "no board given"
	}
	return Board{}, fmt.Errorf("%s: make image BOARD=NAME with one of\n%s", what, strings.Join(lines, "\n"))
}
