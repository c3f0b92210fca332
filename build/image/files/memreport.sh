#!/bin/sh
# Memory report for benchmarks (make bench-mem): only when the kernel
# command line has outpost.memreport=SECONDS, prints one line per process
# every SECONDS to the console, in kB, read from /proc/PID/status and
# /proc/PID/smaps_rollup:
#   outpost-mem: outpost-agent pid=312 up=41.20 VmRSS=9012 ... Pss_Anon=2100
# It reads; it changes nothing. A gateway booted normally runs none of it.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
every=
for arg in $(cat /proc/cmdline); do
	case "$arg" in outpost.memreport=*) every="${arg#outpost.memreport=}" ;; esac
done
case "$every" in '' | *[!0-9]*) exit 0 ;; esac
[ "$every" -ge 1 ] || exit 0
while :; do
	sleep "$every"
	for name in outpost-agent containerd; do
		for pid in $(pidof "$name"); do
			# Only the long-running command: not "outpost-agent join".
			case "$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" in
			*" join "* | *" join") continue ;;
			esac
			up=$(cut -d' ' -f1 /proc/uptime)
			fig=$(awk '/^(VmRSS|VmHWM|RssAnon|RssFile):/ { printf "%s=%s ", substr($1, 1, length($1)-1), $2 }' "/proc/$pid/status" 2>/dev/null)
			fig="$fig$(awk '/^(Rss|Pss|Pss_Anon|Pss_File|Pss_Shmem):/ { printf "%s=%s ", substr($1, 1, length($1)-1), $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null)"
			[ -n "$fig" ] && echo "outpost-mem: $name pid=$pid up=$up $fig"
		done
	done
	mem=$(awk '/^(MemTotal|MemAvailable):/ { printf "%s=%s ", substr($1, 1, length($1)-1), $2 }' /proc/meminfo)
	echo "outpost-mem: system up=$(cut -d' ' -f1 /proc/uptime) $mem"
done
