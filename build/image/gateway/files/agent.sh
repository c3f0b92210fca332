#!/bin/sh
# Run by init, restarted when it exits: join once with the first-boot
# token, then run the agent through outpost-boot, which starts the agent
# of the current upgrade slot (or /usr/bin/outpost-agent when the gateway
# never upgraded) and rolls back an upgrade that does not come up. Its
# log goes to the console.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
token=/etc/outpost/join-token
# The relay CA's pin, when the image was built with one.
pin=/etc/outpost/ca-cert-hash
i=0
while [ ! -S /run/containerd/containerd.sock ] && [ $i -lt 30 ]; do
	sleep 1
	i=$((i + 1))
done
if [ -S /run/containerd/containerd.sock ]; then
	echo "outpost: containerd is up"
else
	echo "outpost: containerd did not start in 30 s: see /var/log/containerd.log"
fi
if [ -s "$token" ]; then
	set -- --token "$(cat "$token")"
	if [ -s "$pin" ]; then
		set -- "$@" --ca-cert-hash "$(cat "$pin")"
	fi
	if out=$(outpost-agent join "$@" 2>&1); then
		echo "$out"
		rm -f "$token"
		sync
	else
		echo "$out"
		case "$out" in
		*"already joined"*) rm -f "$token" ;;
		*) sleep 10; exit 1 ;;
		esac
	fi
fi
outpost-boot run
# Do not spin when the agent fails at start.
sleep 5
