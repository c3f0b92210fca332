#!/bin/sh
# Memory report for benchmarks (make bench-mem): only when the kernel
# command line has outpost.memreport=SECONDS, prints one line per process
# every SECONDS to the console, in kB, read from /proc/PID/status and
# /proc/PID/smaps_rollup, and one line each for the pods' runc shims and
# container loggers, summed:
#   outpost-mem: outpost-agent pid=312 up=41.20 VmRSS=9012 ... Pss_Anon=2100
#   outpost-mem: shims count=10 up=41.25 Rss=... Pss=... Pss_Anon=... Pss_File=...
# It reads; it changes nothing. A gateway booted normally runs none of it.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
every=
for arg in $(cat /proc/cmdline); do
	case "$arg" in outpost.memreport=*) every="${arg#outpost.memreport=}" ;; esac
done
case "$every" in '' | *[!0-9]*) exit 0 ;; esac
[ "$every" -ge 1 ] || exit 0
# figs PID prints a process's figures as NAME=kB pairs.
figs() {
	awk '/^(VmRSS|VmHWM|RssAnon|RssFile):/ { printf "%s=%s ", substr($1, 1, length($1)-1), $2 }' "/proc/$1/status" 2>/dev/null
	awk '/^(Rss|Pss|Pss_Anon|Pss_File|Pss_Shmem):/ { printf "%s=%s ", substr($1, 1, length($1)-1), $2 }' "/proc/$1/smaps_rollup" 2>/dev/null
}
# sum NAME PID... prints one line adding up smaps_rollup across processes.
sum() {
	name=$1
	shift
	[ $# -gt 0 ] || return 0
	for pid in "$@"; do
		cat "/proc/$pid/smaps_rollup" 2>/dev/null
	done | awk -v name="$name" -v n=$# -v up="$(cut -d' ' -f1 /proc/uptime)" '
		/^(Rss|Pss|Pss_Anon|Pss_File):/ { s[substr($1, 1, length($1)-1)] += $2 }
		END { printf "outpost-mem: %s count=%d up=%s Rss=%d Pss=%d Pss_Anon=%d Pss_File=%d\n", name, n, up, s["Rss"], s["Pss"], s["Pss_Anon"], s["Pss_File"] }'
}
while :; do
	sleep "$every"
	loggers=
	# The agent (outpost-agent run), then containerd, one line each; the
	# agent's other processes (join; the agent binary in logger mode, used
	# only when outpost-logger is missing) are not the agent.
	for pid in $(pidof outpost-agent); do
		case "$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" in
		*"outpost-agent run" | *"outpost-agent run "*)
			fig=$(figs "$pid")
			[ -n "$fig" ] && echo "outpost-mem: outpost-agent pid=$pid up=$(cut -d' ' -f1 /proc/uptime) $fig"
			;;
		*" join "* | *" join") ;;
		*) loggers="$loggers $pid" ;;
		esac
	done
	for pid in $(pidof containerd); do
		fig=$(figs "$pid")
		[ -n "$fig" ] && echo "outpost-mem: containerd pid=$pid up=$(cut -d' ' -f1 /proc/uptime) $fig"
	done
	# The pods' share: runc shims and the loggers, summed.
	sum shims $(pidof containerd-shim-runc-v2)
	sum loggers $loggers $(pidof outpost-logger)
	mem=$(awk '/^(MemTotal|MemAvailable):/ { printf "%s=%s ", substr($1, 1, length($1)-1), $2 }' /proc/meminfo)
	echo "outpost-mem: system up=$(cut -d' ' -f1 /proc/uptime) $mem"
done
