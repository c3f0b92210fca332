package main

import (
	"fmt"
	"sort"
	"strings"
)

// board is what the image builder needs to know of one board. (The
// agent's own board definitions live in boards/; this list only says how
// to boot each.)
type board struct {
	name, about string
	arch        string // cross target: linux-arm64
	debArch     string
	// suite is the Debian release the packages come from; "" means the
	// builder's -suite (bookworm).
	suite string
	// qemu is the QEMU machine that boots it, for the hint printed at
	// the end; "" for hardware.
	qemu string
	// console is the kernel's console= arguments.
	console string
	// agentBoard is the agent's board (boards/) written to the
	// first-boot config; "" means name.
	agentBoard string
	// rootModules reach the root file system from the initramfs; they and
	// runModules (taken when the kernel has them) go into the root too.
	rootModules, runModules []string
	// firmware is the Raspberry Pi boot firmware and device trees.
	firmware bool
	dtbs     []string
}

var boards = map[string]board{
	"rpi4": {
		name: "rpi4", about: "Raspberry Pi 4 Model B, Pi 400 and CM4: flash to an SD card",
		arch: "linux-arm64", debArch: "arm64",
		console:     "console=ttyS1,115200 console=tty1",
		rootModules: []string{"sdhci_iproc", "ext4"},
		runModules: []string{"genet", "broadcom", "mdio_bcm_unimac", "iproc_rng200", "bcm2835_wdt",
			"i2c_bcm2835", "spi_bcm2835", "pcie_brcmstb", "reset_raspberrypi", "xhci_pci",
			"overlay", "veth", "bridge", "br_netfilter", "vfat", "nls_cp437", "nls_ascii"},
		firmware: true,
		dtbs:     []string{"broadcom/bcm2711-rpi-4-b.dtb", "broadcom/bcm2711-rpi-400.dtb", "broadcom/bcm2711-rpi-cm4-io.dtb"},
	},
	"qemu-arm64": {
		name: "qemu-arm64", about: "qemu-system-aarch64 -M virt, disk on virtio-blk: for tests and benchmarks",
		arch: "linux-arm64", debArch: "arm64",
		qemu:    "qemu-system-aarch64 -M virt -cpu cortex-a72",
		console: "console=ttyAMA0",
		// A QEMU virt machine has no sensor buses: its devices are simulated.
		agentBoard:  "sim",
		rootModules: []string{"virtio_pci", "virtio_mmio", "virtio_blk", "ext4"},
		runModules:  []string{"virtio_net", "virtio_rng", "overlay", "veth", "bridge", "br_netfilter", "vfat", "nls_cp437", "nls_ascii"},
	},
	"qemu-riscv64": {
		name: "qemu-riscv64", about: "qemu-system-riscv64 -M virt with OpenSBI, disk on virtio-blk: for tests and benchmarks",
		arch: "linux-riscv64", debArch: "riscv64",
		// bookworm has no riscv64 port; trixie (Debian 13) is the first
		// release with riscv64 packages.
		suite:       "trixie",
		qemu:        "qemu-system-riscv64 -M virt -bios default",
		console:     "console=ttyS0",
		agentBoard:  "sim",
		rootModules: []string{"virtio_pci", "virtio_mmio", "virtio_blk", "ext4"},
		// The virt machine's RTC (goldfish) is built into Debian's
		// riscv64 kernel, which sets the clock from it at boot.
		runModules: []string{"virtio_net", "virtio_rng", "overlay", "veth", "bridge", "br_netfilter", "vfat", "nls_cp437", "nls_ascii"},
	},
}

func boardNames() []string {
	var names []string
	for n := range boards {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func lookupBoard(name string) (board, error) {
	if b, ok := boards[name]; ok {
		return b, nil
	}
	var lines []string
	for _, n := range boardNames() {
		lines = append(lines, fmt.Sprintf("  %-12s %s", n, boards[n].about))
	}
	what := fmt.Sprintf("unknown board %q", name)
	if name == "" {
		what = "no board given"
	}
	return board{}, fmt.Errorf("%s: make image BOARD=NAME with one of\n%s", what, strings.Join(lines, "\n"))
}
