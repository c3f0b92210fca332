package seccomp

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// ContainerdVersion is the containerd release whose default profile
// (contrib/seccomp DefaultProfile, what its CRI plugin gives RuntimeDefault)
// this package reproduces; profile_test.go compares the two.
const ContainerdVersion = "v2.4.2"

// allowed is the profile's first rule: the system calls every container
// may make, in containerd's order. One string keeps the table small in the
// agent's binary.
const allowed = `
accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown chown32 
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64 
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2 
dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait 
epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64 
fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat 
fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64 
fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue futex_time64 futex_wait 
futex_waitv futex_wake futimesat getcpu getcwd getdents getdents64 getegid getegid32 geteuid 
geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp getpid 
getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit get_robust_list 
getrusage getsid getsockname getsockopt get_thread_area gettid gettimeofday getuid getuid32 
getxattr getxattrat inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl 
io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit 
ipc kill landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr 
link linkat listen listmount listxattr listxattrat llistxattr _llseek lremovexattr lseek lsetxattr 
lsm_get_self_attr lsm_list_modules lsm_set_self_attr lstat lstat64 madvise membarrier memfd_create 
memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall map_shadow_stack mmap mmap2 
mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend 
mq_timedsend_time64 mq_unlink mremap mseal msgctl msgget msgrcv msgsnd msync munlock munlockall 
munmap name_to_handle_at nanosleep newfstatat _newselect open openat openat2 pause pidfd_open 
pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl 
pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev 
pwritev2 read readahead readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg 
remap_file_pages removexattr removexattrat rename renameat renameat2 restart_syscall rmdir rseq 
rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend 
rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr 
sched_getparam sched_get_priority_max sched_get_priority_min sched_getscheduler 
sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam 
sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop semtimedop_time64 send 
sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32 
setgroups setgroups32 setitimer setpgid setpriority setregid setregid32 setresgid setresgid32 
setresuid setresuid32 setreuid setreuid32 setrlimit set_robust_list setsid setsockopt 
set_thread_area set_tid_address setuid setuid32 setxattr setxattrat shmat shmctl shmdt shmget 
shutdown sigaltstack signalfd signalfd4 sigprocmask sigreturn socketcall socketpair splice stat 
stat64 statfs statfs64 statmount statx symlink symlinkat sync sync_file_range syncfs sysinfo tee 
tgkill time timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime 
timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64 
times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat uretprobe utime utimensat 
utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev
`

// Socket domains: socket(2) is allowed for every domain below AF_ALG and
// for the listed ones above it, so AF_ALG (the kernel's crypto API) and
// AF_VSOCK (host/guest sockets, global across network namespaces on most
// kernels) stay blocked. runc ORs repeated comparisons of one argument, so
// a range is one-sided (AF_UNSPEC cannot be created).
var socketAbove = []uint64{unix.AF_NFC, unix.AF_KCM, unix.AF_QIPCRTR, unix.AF_SMC, unix.AF_XDP, unix.AF_MCTP}

// personalities are the personality(2) values allowed (PER_LINUX,
// PER_LINUX32, UNAME26, UNAME26|PER_LINUX32 and the query 0xffffffff).
var personalities = []uint64{0x0, 0x0008, 0x20000, 0x20008, 0xffffffff}

// archSyscalls are allowed on one architecture only (Go's GOARCH names).
var archSyscalls = map[string]string{
	"arm":     "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls",
	"arm64":   "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls",
	"amd64":   "arch_prctl modify_ldt",
	"riscv64": "riscv_flush_icache riscv_hwprobe",
}

// archs are the seccomp architectures a filter covers; an architecture
// not listed here (arm) gets the native one only, as with containerd.
var archs = map[string][]specs.Arch{
	"amd64":   {specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
	"arm64":   {specs.ArchARM, specs.ArchAARCH64},
	"riscv64": {specs.ArchRISCV64},
}

// capSyscalls are allowed when the container's bounding set holds the
// capability, in the order containerd checks them.
var capSyscalls = []struct{ cap, names string }{
	{"CAP_DAC_READ_SEARCH", "open_by_handle_at"},
	{"CAP_SYS_ADMIN", "bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount mount_setattr " +
		"move_mount open_tree perf_event_open quotactl quotactl_fd setdomainname sethostname setns syslog umount umount2 unshare"},
	{"CAP_SYS_BOOT", "reboot"},
	{"CAP_SYS_CHROOT", "chroot"},
	{"CAP_SYS_MODULE", "delete_module init_module finit_module"},
	{"CAP_SYS_PACCT", "acct"},
	{"CAP_SYS_PTRACE", "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace"},
	{"CAP_SYS_RAWIO", "iopl ioperm"},
	{"CAP_SYS_TIME", "settimeofday stime clock_settime clock_settime64"},
	{"CAP_SYS_TTY_CONFIG", "vhangup"},
	{"CAP_SYS_NICE", "get_mempolicy mbind set_mempolicy set_mempolicy_home_node"},
	{"CAP_SYSLOG", "syslog"},
	{"CAP_BPF", "bpf"},
	{"CAP_PERFMON", "perf_event_open"},
}

// cloneNamespaces are the clone(2) flags that create namespaces: without
// CAP_SYS_ADMIN, clone is allowed only with none of them.
const cloneNamespaces = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER | unix.CLONE_NEWPID |
	unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP

// Default is the RuntimeDefault profile of a container whose bounding
// capability set is caps, on this machine's architecture and kernel:
// exactly what containerd's CRI plugin gives such a container.
func Default(caps []string) *specs.LinuxSeccomp {
	return profile(runtime.GOARCH, caps, ptraceKernel())
}

// ptraceKernel says whether the kernel is 4.8 or later, from which
// ptrace no longer lets a process get around seccomp, so the profile
// allows it (and process_vm_readv/writev) to everyone.
var ptraceKernel = sync.OnceValue(func() bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	return kernelAtLeast(unix.ByteSliceToString(u.Release[:]), 4, 8)
})

// kernelAtLeast reads "MAJOR.MINOR…" from a kernel release as containerd
// does; an unreadable one counts as older.
func kernelAtLeast(release string, major, minor int) bool {
	var ma, mi int
	if _, err := fmt.Sscanf(release, "%d.%d", &ma, &mi); err != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}

// profile builds the default profile for GOARCH goarch, bounding set caps
// and a kernel that is (ptrace) or is not 4.8 or later, rule by rule in
// containerd's order.
func profile(goarch string, caps []string, ptrace bool) *specs.LinuxSeccomp {
	allow := func(names string) specs.LinuxSyscall {
		return specs.LinuxSyscall{Names: strings.Fields(names), Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{}}
	}
	argRule := func(name string, index uint, value uint64, op specs.LinuxSeccompOperator) specs.LinuxSyscall {
		return specs.LinuxSyscall{Names: []string{name}, Action: specs.ActAllow,
			Args: []specs.LinuxSeccompArg{{Index: index, Value: value, Op: op}}}
	}
	rules := []specs.LinuxSyscall{allow(allowed), argRule("socket", 0, unix.AF_ALG, specs.OpLessThan)}
	for _, d := range socketAbove {
		rules = append(rules, argRule("socket", 0, d, specs.OpEqualTo))
	}
	for _, p := range personalities {
		rules = append(rules, argRule("personality", 0, p, specs.OpEqualTo))
	}
	if ptrace {
		rules = append(rules, allow("process_vm_readv process_vm_writev ptrace"))
	}
	if names, ok := archSyscalls[goarch]; ok {
		rules = append(rules, allow(names))
	}
	admin := false
	for _, c := range caps {
		for _, cs := range capSyscalls {
			if cs.cap == c {
				rules = append(rules, allow(cs.names))
			}
		}
		admin = admin || c == "CAP_SYS_ADMIN"
	}
	if !admin {
		rules = append(rules, specs.LinuxSyscall{Names: []string{"clone"}, Action: specs.ActAllow,
			Args: []specs.LinuxSeccompArg{{Index: 0, Value: cloneNamespaces, Op: specs.OpMaskedEqual}}})
		// clone3 fails with ENOSYS, not EPERM, so that C libraries fall
		// back to clone, whose flags the rule above can see.
		nosys := uint(unix.ENOSYS)
		rules = append(rules, specs.LinuxSyscall{Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: &nosys})
	}
	return &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Architectures: slices.Clone(archs[goarch]), Syscalls: rules}
}
