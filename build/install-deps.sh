#!/bin/sh
# install-deps.sh installs the Debian packages that building, testing and
# the demo need, and only those that are missing. Run as root (or with sudo
# available); it is idempotent.
set -eu

# Packages: gcc for the race detector (cgo), make and git for the build;
# containerd, runc and busybox-static (test images) for the pod tests;
# systemd (systemd-analyze), e2fsprogs and fdisk for the package and image
# tests; mosquitto and mosquitto-clients for the MQTT interop tests;
# containernetworking-plugins (bridge, host-local, portmap, loopback in
# /usr/lib/cni, and iptables with it) for the pod network; openssl's
# client for the relay's TLS 1.3 interop test with AES-256-GCM.
# `install-deps.sh image` adds what make image, image-boot, image-join and
# bench-mem need: mtools and xz-utils (trixie's kernel modules are .ko.xz)
# for the builder, qemu-system-arm for qemu-arm64 and qemu-system-misc for
# qemu-riscv64 (it boots with the OpenSBI firmware qemu-system-data ships).
want="ca-certificates git make gcc libc6-dev containerd runc busybox-static systemd e2fsprogs fdisk mosquitto mosquitto-clients containernetworking-plugins openssl"
if [ "${1:-}" = image ]; then
	want="$want mtools xz-utils apt debian-archive-keyring dpkg qemu-system-arm qemu-system-misc"
fi

missing=""
for p in $want; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing$missing" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
