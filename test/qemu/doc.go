// Package qemu boots the gateway image (build/image) in qemu-system and
// runs it against a real control plane and relay on the host, through
// QEMU's user network: the guest reaches the host's loopback at 10.0.2.2.
//
// The tests are slow (an emulated arm64 or riscv64 machine) and need
// Debian's packages for the image, so they run only with the qemu build
// tag:
//
//	make image-join             # boots qemu-arm64, joins, shows Ready in kubectl get nodes, and
//	                            # runs a pod on the image's pod network (make test runs this)
//	make image-upgrade          # the image with an upgrade key pinned: an AgentUpgrade to a second
//	                            # agent build, then one to a build that exits at start (rolled back),
//	                            # with a pod running through both (CI runs this after make test)
//	make bench-mem              # the agent's memory inside the qemu-arm64 guest, idle and with
//	                            # 100 sim devices and 10 pods, against build/budget-mem.json
//	make bench-mem ARCH=riscv64 # the same in qemu-riscv64 (Debian trixie packages, OpenSBI)
package qemu
