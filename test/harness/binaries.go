package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// ControlPlaneDirEnv names the environment variable that points Binaries at
// a directory of prebuilt control-plane binaries, skipping the build.
const ControlPlaneDirEnv = "OUTPOST_CONTROLPLANE_DIR"

// Binaries returns the directory holding etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler and kubectl at the pinned version.
// $OUTPOST_CONTROLPLANE_DIR wins; otherwise it runs
// build/controlplane/build.sh from the repository, which reuses its cache
// and takes minutes only the first time. The script's progress goes to log
// (nil discards it).
func Binaries(ctx context.Context, log *slog.Logger) (string, error) {
	return binaries(ctx, log, true)
}

// BuiltBinaries is Binaries without the build: it fails, saying how to
// build, unless the binaries are already in build.sh's cache (or in
// $OUTPOST_CONTROLPLANE_DIR). CI uses it, where the control plane is built
// by an earlier step and a build inside the tests means something is wrong.
func BuiltBinaries(ctx context.Context, log *slog.Logger) (string, error) {
	return binaries(ctx, log, false)
}

func binaries(ctx context.Context, log *slog.Logger, build bool) (string, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if dir := os.Getenv(ControlPlaneDirEnv); dir != "" {
		if err := checkBinaries(dir); err != nil {
			return "", fmt.Errorf("$%s: %w", ControlPlaneDirEnv, err)
		}
		return dir, nil
	}
	if _, err := exec.LookPath("go"); err != nil && build {
		return "", fmt.Errorf("the control plane is built from source with the Go toolchain, but go is not in $PATH: install Go, or set $%s to a directory of prebuilt binaries", ControlPlaneDirEnv)
	}
	return runBuild(ctx, log, build, "control plane", "controlplane", "make controlplane", checkBinaries)
}

// runBuild runs build/<dir>/build.sh, which prints the directory of what
// it built (what), cached; check vets that directory. Without build it
// fails, saying to run hint, unless the cache is complete.
func runBuild(ctx context.Context, log *slog.Logger, build bool, what, dir, hint string, check func(string) error) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	script := filepath.Join(root, "build", dir, "build.sh")
	unlock, err := lockBuild()
	if err != nil {
		return "", err
	}
	defer unlock()

	if build {
		log.Info(what+" binaries: running build.sh (cached after the first build, which takes minutes)", "script", script)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", script)
	// Cancelling must stop the go build that sh runs, not just sh.
	cmd.SysProcAttr = sysProcAttr()
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("run %s: %w", script, err)
	}
	var lastErr []string // the end of stderr, for the error message
	notBuilt := false
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		// build.sh is silent on stderr when its cache is complete and
		// says "build.sh: building …" before each build.
		if !build && strings.Contains(line, "building") {
			notBuilt = true
			cancel()
			break
		}
		log.Info("build.sh", "line", line)
		if lastErr = append(lastErr, line); len(lastErr) > 20 {
			lastErr = lastErr[1:]
		}
	}
	_, _ = io.Copy(io.Discard, stderr) // drain after a too-long line or a stop
	werr := cmd.Wait()
	if notBuilt {
		return "", fmt.Errorf("the %s is not built (%s would build it now): run %s or %s first", what, script, hint, script)
	}
	if werr != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("build the %s (%s): %w", what, script, context.Cause(ctx))
		}
		return "", fmt.Errorf("build the %s (%s): %w\n%s", what, script, werr, strings.Join(lastErr, "\n"))
	}
	out := lastLine(stdout.String())
	if out == "" {
		return "", fmt.Errorf("%s printed no output directory", script)
	}
	if err := check(out); err != nil {
		return "", fmt.Errorf("%s: %w", script, err)
	}
	return out, nil
}

// checkBinaries reports the first control-plane binary missing from dir.
func checkBinaries(dir string) error {
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("%s missing from %s: %w", name, dir, err)
		}
		if st.Mode()&0o111 == 0 {
			return fmt.Errorf("%s in %s is not executable", name, dir)
		}
	}
	return nil
}

// lockBuild takes an exclusive lock in the same cache directory build.sh
// uses, so that test packages running in parallel wait for one build
// instead of racing to write the same files.
func lockBuild() (unlock func(), err error) {
	cache := os.Getenv("OUTPOST_CACHE_DIR")
	if cache == "" {
		c, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("find the cache directory for the control-plane build: %w", err)
		}
		cache = filepath.Join(c, "outpost")
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(cache, "controlplane.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}

// RepoRoot returns the root of the Outpost repository: the nearest
// directory, from the working directory up, whose go.mod declares module
// outpost.dev. It falls back to this source file's location, which makes it
// work from test binaries run elsewhere.
func RepoRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	for _, start := range starts {
		for dir := start; ; dir = filepath.Dir(dir) {
			if isOutpostModule(filepath.Join(dir, "go.mod")) {
				return dir, nil
			}
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	return "", errors.New("cannot find the Outpost repository (a go.mod declaring module outpost.dev) above the working directory: run from inside the repository, or set $" + ControlPlaneDirEnv)
}

// isOutpostModule reports whether the go.mod at path declares outpost.dev.
func isOutpostModule(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`) == "outpost.dev"
		}
	}
	return false
}

// lastLine returns the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
