package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"outpost.dev/agent/mountinfo"
)

// ContainerdOptions configures StartContainerd. The zero value works.
type ContainerdOptions struct {
	// Dir holds the config, root (images, snapshots, metadata), state,
	// socket and log. It must be empty or absent. If Dir is "", a
	// temporary directory is used and Stop removes it.
	Dir string
	// Log receives progress; nil discards it.
	Log *slog.Logger
	// StartTimeout bounds the wait for the socket to answer; default 30s.
	StartTimeout time.Duration
}

// Containerd is a containerd started by StartContainerd: Debian's
// containerd and runc, run by hand with its own root, state and socket
// under Dir, so it neither needs nor touches a system containerd. Call Stop
// when done.
type Containerd struct {
	// Dir holds config.toml, root/, state/, the sockets and containerd.log.
	Dir string
	// Address is the path of the gRPC unix socket (what clients dial and
	// ctr --address takes).
	Address string
	// Root and State are containerd's root and state directories.
	Root, State string
	// Config is the path of the config file it runs with.
	Config string

	proc       *Process
	log        *slog.Logger
	removeDir  bool
	stopCalled bool
}

// ContainerdMissing returns an error naming the Debian packages to install
// (containerd, runc) when containerd, ctr, containerd-shim-runc-v2 or runc
// are not in $PATH, or when this process is not root; nil when
// StartContainerd can run.
func ContainerdMissing() error {
	var missing []string
	for _, b := range []string{"containerd", "ctr", "containerd-shim-runc-v2", "runc"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s not in $PATH: install Debian's containerd and runc (apt-get install containerd runc)", strings.Join(missing, ", "))
	}
	if os.Geteuid() != 0 {
		return errors.New("containerd runs containers only as root: run the tests as root")
	}
	return nil
}

// containerdConfig is containerd 1.6's config (version 2). The CRI plugin is
// disabled: Outpost does not use it, and without it containerd needs no CNI
// configuration. Debug and metrics listeners are off.
const containerdConfig = `version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = %q
`

// StartContainerd writes a config under opts.Dir and starts containerd with
// it, returning once its socket answers (ctr version). Containers it runs
// use runc through containerd-shim-runc-v2.
func StartContainerd(ctx context.Context, opts ContainerdOptions) (*Containerd, error) {
	if err := ContainerdMissing(); err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := opts.StartTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	c := &Containerd{Dir: opts.Dir, log: log}
	if c.Dir == "" {
		d, err := os.MkdirTemp("", "outpost-containerd-")
		if err != nil {
			return nil, err
		}
		c.Dir, c.removeDir = d, true
	} else if err := emptyDir(c.Dir); err != nil {
		return nil, err
	}
	c.Root = filepath.Join(c.Dir, "root")
	c.State = filepath.Join(c.Dir, "state")
	c.Address = filepath.Join(c.Dir, "containerd.sock")
	c.Config = filepath.Join(c.Dir, "config.toml")
	// A unix socket path is limited to 107 bytes; the ttrpc one is longest.
	if n := len(c.Address + ".ttrpc"); n > 107 {
		return nil, fmt.Errorf("containerd socket path %s is %d bytes, more than a unix socket allows (107): use a shorter Dir", c.Address, n)
	}
	conf := fmt.Sprintf(containerdConfig, c.Root, c.State, c.Address, c.Address+".ttrpc", filepath.Join(c.Dir, "opt"))
	if err := os.WriteFile(c.Config, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command("containerd", "--config", c.Config)
	cmd.Dir = c.Dir
	p, err := StartProcess("containerd", cmd, filepath.Join(c.Dir, "containerd.log"))
	if err != nil {
		c.cleanupDir()
		return nil, err
	}
	c.proc = p
	log.Info("containerd: starting", "pid", p.Pid(), "address", c.Address)

	deadline := time.Now().Add(timeout)
	for {
		if p.Exited() {
			err := exitedEarly(p)
			c.cleanupDir()
			return nil, err
		}
		if err := c.ping(ctx); err == nil {
			break
		} else if time.Now().After(deadline) || ctx.Err() != nil {
			_ = c.Stop()
			if ctx.Err() != nil {
				return nil, fmt.Errorf("containerd: %w", ctx.Err())
			}
			return nil, fmt.Errorf("containerd did not answer on %s within %s: %v%s", c.Address, timeout, err, tailSection(p))
		}
		time.Sleep(50 * time.Millisecond)
	}
	log.Info("containerd: ready", "address", c.Address)
	return c, nil
}

// ping dials the socket and asks for the version with ctr.
func (c *Containerd) ping(ctx context.Context) error {
	conn, err := net.DialTimeout("unix", c.Address, time.Second)
	if err != nil {
		return err
	}
	conn.Close()
	_, err = c.Ctr(ctx, "version")
	return err
}

// Ctr runs Debian's ctr against this containerd and returns its stdout;
// the error includes stderr. For checks in tests ("what does containerd
// say it runs?") that should not go through the code under test.
func (c *Containerd) Ctr(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"--address", c.Address}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// LogTail returns the last n lines of containerd's log.
func (c *Containerd) LogTail(n int) string { return c.proc.LogTail(n) }

// Pid returns containerd's process id.
func (c *Containerd) Pid() int { return c.proc.Pid() }

// Stop kills every task in every namespace (with SIGKILL: tests that care
// about graceful stops do them themselves), deletes the tasks so their
// shims exit, stops containerd, then kills any shim of this containerd that
// is still running and unmounts whatever is still mounted under Dir. It
// returns an error describing anything it could not clean up. Safe to call
// more than once.
func (c *Containerd) Stop() error {
	if c.stopCalled {
		return nil
	}
	c.stopCalled = true
	var errs []error
	if !c.proc.Exited() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		errs = append(errs, c.killTasks(ctx))
		cancel()
	}
	errs = append(errs, c.proc.Stop(10*time.Second))
	if pids := c.Shims(); len(pids) > 0 {
		c.log.Warn("containerd: killing shims left after stop", "pids", pids)
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		for range 100 {
			if len(c.Shims()) == 0 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if left := c.Shims(); len(left) > 0 {
			errs = append(errs, fmt.Errorf("containerd shims still running after SIGKILL: %v", left))
		}
	}
	errs = append(errs, c.unmountAll())
	if c.removeDir {
		if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", c.Dir, err))
		}
	}
	return errors.Join(errs...)
}

// killTasks SIGKILLs and deletes every task in every namespace.
func (c *Containerd) killTasks(ctx context.Context) error {
	out, err := c.Ctr(ctx, "namespaces", "list", "-q")
	if err != nil {
		return err
	}
	var errs []error
	for _, ns := range strings.Fields(out) {
		tasks, err := c.Ctr(ctx, "-n", ns, "tasks", "list", "-q")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, id := range strings.Fields(tasks) {
			// A task that already exited cannot be killed; delete -f
			// covers both.
			_, _ = c.Ctr(ctx, "-n", ns, "tasks", "kill", "-a", "-s", "SIGKILL", id)
			if _, err := c.Ctr(ctx, "-n", ns, "tasks", "delete", "-f", id); err != nil && !strings.Contains(err.Error(), "not found") {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Shims returns the pids of containerd-shim processes started by this
// containerd (their command line names its socket). Empty after Stop.
func (c *Containerd) Shims() []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		for _, a := range args {
			if a == c.Address || strings.HasPrefix(a, c.Dir+"/") {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// Mounts returns the mount points under Dir (rootfs overlays, shm), deepest
// first. Empty after Stop.
func (c *Containerd) Mounts() []string {
	return MountsUnder(c.Dir)
}

// unmountAll lazily unmounts everything mounted under Dir.
func (c *Containerd) unmountAll() error {
	var errs []error
	for _, m := range c.Mounts() {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	if left := c.Mounts(); len(left) > 0 {
		errs = append(errs, fmt.Errorf("still mounted under %s: %v", c.Dir, left))
	}
	return errors.Join(errs...)
}

// MountsUnder lists mount points at or below dir, deepest first.
func MountsUnder(dir string) []string { return mountinfo.Under(dir) }

// emptyDir creates dir or checks that it is empty.
func emptyDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(ents) > 0 {
		return fmt.Errorf("%s is not empty", dir)
	}
	return nil
}

// cleanupDir removes a temporary Dir after a failed start.
func (c *Containerd) cleanupDir() {
	_ = c.unmountAll()
	if c.removeDir {
		_ = os.RemoveAll(c.Dir)
	}
}

// StopDaemon stops the containerd process alone, as when its service is
// restarted on a real machine: shims and containers keep running. Start it
// again with StartDaemon; Stop still cleans up everything.
func (c *Containerd) StopDaemon() error {
	return c.proc.Stop(10 * time.Second)
}

// StartDaemon starts containerd again after StopDaemon, with the same
// config, root and state, and returns once its socket answers.
func (c *Containerd) StartDaemon(ctx context.Context) error {
	if !c.proc.Exited() {
		return errors.New("containerd is running: StopDaemon first")
	}
	cmd := exec.Command("containerd", "--config", c.Config)
	cmd.Dir = c.Dir
	p, err := StartProcess("containerd", cmd, filepath.Join(c.Dir, "containerd.log"))
	if err != nil {
		return err
	}
	c.proc = p
	deadline := time.Now().Add(30 * time.Second)
	for {
		if p.Exited() {
			return exitedEarly(p)
		}
		if err := c.ping(ctx); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("containerd did not answer again within 30s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
