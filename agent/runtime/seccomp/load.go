package seccomp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Bounds on a Localhost profile: containerd's default profile is about
// 15 KiB of JSON and 20 rules.
const (
	MaxProfileSize = 256 << 10
	maxRules       = 4096
	maxNames       = 4096
	maxArgs        = 6
	maxNameLen     = 64
)

// CheckName reports a Localhost profile name that could leave the profile
// directory or is not a plain relative path: absolute, empty, with a ".."
// or "." component, an empty component, or a NUL. The name comes from the
// cloud (securityContext.seccompProfile.localhostProfile).
func CheckName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case len(name) > 4096:
		return errors.New("name longer than 4096 bytes")
	case filepath.IsAbs(name):
		return fmt.Errorf("%q is absolute; give a path relative to the node's seccomp profile directory", name)
	case strings.ContainsRune(name, 0):
		return errors.New("name contains a NUL byte")
	}
	for _, part := range strings.Split(name, "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("%q must be a relative path without empty, . or .. parts", name)
		}
	}
	return nil
}

// Load reads the Localhost profile name under dir. The name is resolved
// beneath dir by the kernel (openat2 with RESOLVE_BENEATH): no "..", no
// absolute symlink and no symlink leading out of dir is followed. The file
// must be a regular file of at most MaxProfileSize bytes holding one OCI
// seccomp profile (runtime-spec's LinuxSeccomp as JSON) with no unknown
// field; a notify listener (listenerPath) is refused.
func Load(dir, name string) (*specs.LinuxSeccomp, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("profile directory %s: %w", dir, err)
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat2(dfd, name, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	})
	switch {
	case errors.Is(err, unix.ENOSYS):
		return nil, fmt.Errorf("%s: opening profiles safely needs openat2 (Linux 5.6 or later)", name)
	case errors.Is(err, unix.EXDEV):
		return nil, fmt.Errorf("%s leads out of the profile directory %s (a symlink?)", name, dir)
	case errors.Is(err, unix.ENOENT):
		return nil, fmt.Errorf("%s not found in the node's profile directory %s: put the profile there on the gateway", name, dir)
	case err != nil:
		return nil, fmt.Errorf("%s in %s: %w", name, dir, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", name)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxProfileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(b) > MaxProfileSize {
		return nil, fmt.Errorf("%s is larger than %d KiB", name, MaxProfileSize>>10)
	}
	p, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

// Parse decodes and checks one OCI seccomp profile.
func Parse(b []byte) (*specs.LinuxSeccomp, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p specs.LinuxSeccomp
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("not an OCI seccomp profile (defaultAction, architectures, syscalls): %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("more than one JSON value")
	}
	if err := check(&p); err != nil {
		return nil, err
	}
	return &p, nil
}

var (
	actions = []specs.LinuxSeccompAction{specs.ActKill, specs.ActKillProcess, specs.ActKillThread, specs.ActTrap,
		specs.ActErrno, specs.ActTrace, specs.ActAllow, specs.ActLog}
	operators = []specs.LinuxSeccompOperator{specs.OpNotEqual, specs.OpLessThan, specs.OpLessEqual, specs.OpEqualTo,
		specs.OpGreaterEqual, specs.OpGreaterThan, specs.OpMaskedEqual}
	knownArchs = []specs.Arch{specs.ArchX86, specs.ArchX86_64, specs.ArchX32, specs.ArchARM, specs.ArchAARCH64,
		specs.ArchMIPS, specs.ArchMIPS64, specs.ArchMIPS64N32, specs.ArchMIPSEL, specs.ArchMIPSEL64, specs.ArchMIPSEL64N32,
		specs.ArchPPC, specs.ArchPPC64, specs.ArchPPC64LE, specs.ArchS390, specs.ArchS390X, specs.ArchPARISC,
		specs.ArchPARISC64, specs.ArchRISCV64, specs.ArchLOONGARCH64}
	flags = []specs.LinuxSeccompFlag{specs.LinuxSeccompFlagLog, specs.LinuxSeccompFlagSpecAllow, specs.LinuxSeccompFlagWaitKillableRecv}
)

// check refuses what runc would reject late or what Outpost does not
// serve (notify listeners), and bounds the rest.
func check(p *specs.LinuxSeccomp) error {
	if !slices.Contains(actions, p.DefaultAction) {
		return fmt.Errorf("defaultAction %q is not one of %v", p.DefaultAction, actions)
	}
	if p.ListenerPath != "" || p.ListenerMetadata != "" {
		return errors.New("listenerPath: seccomp notify listeners are not supported on edge nodes")
	}
	if len(p.Architectures) > len(knownArchs) || len(p.Flags) > len(flags) || len(p.Syscalls) > maxRules {
		return fmt.Errorf("too many architectures, flags or rules (at most %d rules)", maxRules)
	}
	for _, a := range p.Architectures {
		if !slices.Contains(knownArchs, a) {
			return fmt.Errorf("unknown architecture %q", a)
		}
	}
	for _, f := range p.Flags {
		if !slices.Contains(flags, f) {
			return fmt.Errorf("unknown flag %q", f)
		}
	}
	names := 0
	for i, r := range p.Syscalls {
		if len(r.Names) == 0 {
			return fmt.Errorf("syscalls[%d]: no names", i)
		}
		if names += len(r.Names); names > maxNames {
			return fmt.Errorf("more than %d syscall names", maxNames)
		}
		for _, n := range r.Names {
			if n == "" || len(n) > maxNameLen || strings.Trim(n, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
				return fmt.Errorf("syscalls[%d]: %q is not a system call name", i, n)
			}
		}
		if !slices.Contains(actions, r.Action) {
			return fmt.Errorf("syscalls[%d]: action %q is not one of %v", i, r.Action, actions)
		}
		if len(r.Args) > maxArgs {
			return fmt.Errorf("syscalls[%d]: more than %d args", i, maxArgs)
		}
		for _, a := range r.Args {
			if a.Index >= maxArgs || !slices.Contains(operators, a.Op) {
				return fmt.Errorf("syscalls[%d]: arg index %d or op %q out of range", i, a.Index, a.Op)
			}
		}
	}
	return nil
}
