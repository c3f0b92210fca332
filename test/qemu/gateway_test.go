//go:build qemu

package qemu

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
)

// hostFromGuest is the host's loopback as QEMU's user network shows it to
// the guest.
const hostFromGuest = "10.0.2.2"

// gateway is one booted QEMU image joined to a relay on the host.
type gateway struct {
	St    *stack.Stack
	Relay *stack.Relay
	Con   *console
	Node  string
	// Start is when QEMU started; Ready when the node first showed Ready.
	Start, Joined, Ready time.Time
	// ReadyLine is the console's line count when the node became Ready.
	ReadyLine  int
	ImageBuild time.Duration
	Machine    machine
	// UpgradeKey signs agent upgrades; its public half is pinned in the
	// image (gatewayOptions.UpgradeKey).
	UpgradeKey *stack.UpgradeKey
	qemu       *exec.Cmd
}

// machine is how QEMU boots one image board.
type machine struct {
	Board, Arch, GOARCH string
	// Qemu is the emulator; Args select the machine and CPU.
	Qemu    string
	Args    []string
	Console string
	// Package is Debian's package that ships Qemu.
	Package string
}

// machines are the image boards the tests boot, by Debian architecture.
var machines = map[string]machine{
	"arm64": {Board: "qemu-arm64", Arch: "arm64", GOARCH: "arm64", Qemu: "qemu-system-aarch64",
		Args: []string{"-M", "virt", "-cpu", "cortex-a72"}, Console: "console=ttyAMA0", Package: "qemu-system-arm"},
	// -bios default is the OpenSBI firmware QEMU ships (qemu-system-data).
	"riscv64": {Board: "qemu-riscv64", Arch: "riscv64", GOARCH: "riscv64", Qemu: "qemu-system-riscv64",
		Args: []string{"-M", "virt", "-bios", "default"}, Console: "console=ttyS0", Package: "qemu-system-misc"},
}

// testArch is OUTPOST_QEMU_ARCH (make ARCH=…), arm64 by default: the
// image and machine a test boots.
func testArch(t *testing.T) string {
	arch := os.Getenv("OUTPOST_QEMU_ARCH")
	if arch == "" {
		return "arm64"
	}
	if _, ok := machines[arch]; !ok {
		t.Fatalf("OUTPOST_QEMU_ARCH=%q: want arm64 or riscv64", arch)
	}
	return arch
}

// Description is the machine as the benchmark reports it.
func (m machine) Description() string {
	return m.Qemu + " " + strings.Join(m.Args, " ") + " -smp 2 -m 512 (TCG)"
}

type gatewayOptions struct {
	// Arch picks the machine (machines); "" is arm64.
	Arch string
	// Registries are HOST:PORT registries on the host the agent pulls
	// from over plain HTTP; the image names them as 10.0.2.2:PORT.
	Registries []string
	// HostForwards are QEMU user-network forwards from the host to the
	// guest (hostfwd=, "tcp:127.0.0.1:HOSTPORT-:GUESTPORT").
	HostForwards []string
	// KernelArgs are appended to the kernel command line.
	KernelArgs []string
	// ReadyTimeout bounds boot, join and the first Ready.
	ReadyTimeout time.Duration
	// UpgradeKey makes a key with outpost-relay upgrade keygen and builds
	// the image with its public half pinned (-upgrade-public-key).
	UpgradeKey bool
	// RootFreeMiB is the image's -root-free; 0 is 64.
	RootFreeMiB int
}

// bootGateway starts a control plane and a relay the guest can reach,
// builds the image for opts.Arch with the relay's URL and a fresh bootstrap
// token, boots it and waits until its node is Ready. Everything stops
// when the test ends.
func bootGateway(t *testing.T, opts gatewayOptions) *gateway {
	t.Helper()
	if opts.Arch == "" {
		opts.Arch = "arm64"
	}
	mach, ok := machines[opts.Arch]
	if !ok {
		t.Fatalf("no QEMU machine for arch %q: one of arm64, riscv64", opts.Arch)
	}
	qemuBin, err := exec.LookPath(mach.Qemu)
	if err != nil {
		t.Fatalf("%s is missing: install Debian's %s (build/install-deps.sh image)", mach.Qemu, mach.Package)
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 10 * time.Minute
	}
	ctx := context.Background()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t0 := time.Now()
	// The relay listens on the host's loopback; its certificate names
	// 10.0.2.2 too, the address the guest dials.
	st, relay := stack.StartWithRelay(t, ctx, stack.Options{Log: log}, "--advertise-address", "127.0.0.1,localhost,"+hostFromGuest)
	_, port, _ := strings.Cut(relay.Addr, ":")
	token, err := st.CreateToken(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("control plane and relay %s up in %s", relay.Addr, time.Since(t0).Round(100*time.Millisecond))

	g := &gateway{St: st, Relay: relay, Machine: mach}
	out := t.TempDir()
	relayURL := "https://" + hostFromGuest + ":" + port
	if opts.RootFreeMiB == 0 {
		opts.RootFreeMiB = 64
	}
	args := []string{"run", "./build/image", "-board", mach.Board, "-out", out, "-relay", relayURL, "-token", token, "-root-free", fmt.Sprint(opts.RootFreeMiB)}
	if opts.UpgradeKey {
		g.UpgradeKey = st.UpgradeKeygen(t, ctx, t.TempDir())
		args = append(args, "-upgrade-public-key", g.UpgradeKey.Public)
	}
	if len(opts.Registries) > 0 {
		var guest []string
		for _, r := range opts.Registries {
			_, port, _ := strings.Cut(r, ":")
			guest = append(guest, hostFromGuest+":"+port)
		}
		args = append(args, "-insecure-registries", strings.Join(guest, ","))
	}
	if v := os.Getenv("OUTPOST_VERSION"); v != "" {
		args = append(args, "-version", v)
	}
	b0 := time.Now()
	build := exec.CommandContext(ctx, "go", args...)
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	var buildOut strings.Builder
	build.Stdout, build.Stderr = &buildOut, &buildOut
	if err := build.Run(); err != nil {
		t.Fatalf("make image: %v\n%s", err, buildOut.String())
	}
	g.ImageBuild = time.Since(b0)
	for _, l := range strings.Split(strings.TrimSpace(buildOut.String()), "\n") {
		t.Logf("image: %s", l)
	}

	netdev := "user,id=n0"
	for _, f := range opts.HostForwards {
		netdev += ",hostfwd=" + f
	}
	base := filepath.Join(out, "outpost-"+mach.Board)
	cmdline := append([]string{mach.Console, "root=LABEL=outpost-root"}, opts.KernelArgs...)
	qargs := append(append([]string{}, mach.Args...), "-m", "512", "-smp", "2",
		"-nographic", "-no-reboot", "-rtc", "base=utc",
		"-kernel", base+".vmlinuz", "-initrd", base+".initrd", "-append", strings.Join(cmdline, " "),
		"-drive", "file="+base+".img,format=raw,if=virtio",
		"-netdev", netdev, "-device", "virtio-net-pci,netdev=n0,romfile=")
	g.qemu = exec.Command(qemuBin, qargs...)
	stdout, err := g.qemu.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	g.qemu.Stderr = g.qemu.Stdout
	logPath := filepath.Join(out, "console.log")
	if dir := os.Getenv("OUTPOST_CONSOLE_DIR"); dir != "" {
		os.MkdirAll(dir, 0o755)
		logPath = filepath.Join(dir, "console-"+strings.ReplaceAll(t.Name(), "/", "-")+".log")
	}
	g.Con = newConsole(stdout, logPath)
	g.Start = time.Now()
	if err := g.qemu.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		g.qemu.Process.Kill()
		g.qemu.Wait()
		t.Logf("guest console: %s", logPath)
	})
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s\nlast console lines:\n%s", fmt.Sprintf(format, args...), g.Con.Tail(40))
	}

	// The guest's clock comes from the virt machine's RTC (PL031 on
	// arm64, goldfish on riscv64; the host's time in UTC), set by the
	// kernel at boot: TLS needs it sane.
	wctx, cancel := context.WithTimeout(ctx, opts.ReadyTimeout)
	defer cancel()
	if line, err := g.Con.WaitFor(wctx, "setting system clock to"); err == nil {
		if m := regexp.MustCompile(`setting system clock to (\S+) UTC`).FindStringSubmatch(line); m != nil {
			if gt, err := time.Parse("2006-01-02T15:04:05", m[1]); err == nil {
				if skew := time.Since(gt); skew > 5*time.Minute || skew < -5*time.Minute {
					fail("the guest's clock is %s, %v off the host's: TLS would fail", m[1], skew.Round(time.Second))
				}
				t.Logf("guest clock from the RTC: %s UTC (host %s)", m[1], time.Now().UTC().Format(time.TimeOnly))
			}
		}
	} else {
		fail("no RTC line (setting system clock) on the console: %v", err)
	}
	line, err := g.Con.WaitFor(wctx, "joined https://"+hostFromGuest)
	if err != nil {
		fail("the agent did not join: %v", err)
	}
	g.Joined = time.Now()
	m := regexp.MustCompile(` as node (\S+);`).FindStringSubmatch(line)
	if m == nil {
		fail("no node name in %q", line)
	}
	g.Node = m[1]
	t.Logf("%5.1fs after QEMU started: %s", g.Joined.Sub(g.Start).Seconds(), line)
	// The guest picks its name at first boot, so the relay is allowed to
	// act as it only now; a hello before that is refused and the agent
	// reconnects.
	if err := st.AllowNode(ctx, g.Node); err != nil {
		fail("%v", err)
	}
	left := opts.ReadyTimeout - time.Since(g.Start)
	if err := st.WaitNodeReady(ctx, g.Node, true, left); err != nil {
		fail("%v", err)
	}
	g.Ready, g.ReadyLine = time.Now(), g.Con.Len()
	t.Logf("%5.1fs after QEMU started: node %s is Ready", g.Ready.Sub(g.Start).Seconds(), g.Node)
	return g
}

// console keeps the guest's serial console lines and copies them to a file.
type console struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{}
	closed  bool
}

func newConsole(r io.Reader, logPath string) *console {
	c := &console{changed: make(chan struct{})}
	f, _ := os.Create(logPath)
	go func() {
		if f != nil {
			defer f.Close()
		}
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l := strings.TrimRight(sc.Text(), "\r ")
			if f != nil {
				fmt.Fprintln(f, l)
			}
			c.mu.Lock()
			c.lines = append(c.lines, l)
			close(c.changed)
			c.changed = make(chan struct{})
			c.mu.Unlock()
		}
		c.mu.Lock()
		c.closed = true
		close(c.changed)
		c.mu.Unlock()
	}()
	return c
}

// Len is the number of lines so far.
func (c *console) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lines)
}

// WaitFor returns the first line containing s.
func (c *console) WaitFor(ctx context.Context, s string) (string, error) {
	_, l, err := c.WaitFrom(ctx, 0, func(l string) bool { return strings.Contains(l, s) })
	if err != nil {
		return "", fmt.Errorf("waiting for %q: %w", s, err)
	}
	return l, nil
}

// WaitFrom returns the first line at index from or later that match
// accepts, and its index.
func (c *console) WaitFrom(ctx context.Context, from int, match func(string) bool) (int, string, error) {
	for i := from; ; {
		c.mu.Lock()
		for ; i < len(c.lines); i++ {
			if match(c.lines[i]) {
				l := c.lines[i]
				c.mu.Unlock()
				return i, l, nil
			}
		}
		closed, ch := c.closed, c.changed
		c.mu.Unlock()
		if closed {
			return 0, "", io.EOF
		}
		select {
		case <-ctx.Done():
			return 0, "", ctx.Err()
		case <-ch:
		}
	}
}

// Tail returns the last n lines.
func (c *console) Tail(n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.lines[max(0, len(c.lines)-n):], "\n")
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
