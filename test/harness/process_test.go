package harness

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"outpost.dev/test/wait"
)

func TestProcessLogAndExit(t *testing.T) {
	p, err := StartProcess("echo", exec.Command("sh", "-c", "echo one; echo two >&2; exit 3"), filepath.Join(t.TempDir(), "logs", "echo.log"))
	if err != nil {
		t.Fatal(err)
	}
	var exit *exec.ExitError
	if err := p.Wait(); !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("Wait = %v, want exit status 3", err)
	}
	if !p.Exited() {
		t.Error("Exited() = false after Wait")
	}
	if got := p.LogTail(2); got != "one\ntwo" {
		t.Errorf("LogTail(2) = %q, want %q", got, "one\ntwo")
	}
	if err := p.Stop(time.Second); err != nil {
		t.Errorf("Stop after exit: %v", err)
	}
}

func TestProcessStopEscalatesToKill(t *testing.T) {
	// Ignored signals are inherited, so neither sh nor its sleep child
	// dies of SIGTERM: Stop must SIGKILL the whole group.
	log := filepath.Join(t.TempDir(), "stubborn.log")
	p, err := StartProcess("stubborn", exec.Command("sh", "-c", `trap "" TERM; echo "trap $((6*7))"; sleep 60; echo survived`), log)
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "sh to install its trap", func() bool {
		b, _ := os.ReadFile(log)
		return strings.Contains(string(b), "trap 42") // printed, not the command line echoed
	})
	start := time.Now()
	if err := p.Stop(300 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 5*time.Second {
		t.Errorf("Stop took %s, want just over the 300ms timeout", d)
	}
	if !p.Exited() {
		t.Error("still running after Stop")
	}
}

func TestProcessKill(t *testing.T) {
	p, err := StartProcess("sleeper", exec.Command("sleep", "60"), filepath.Join(t.TempDir(), "sleeper.log"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Exited() {
		t.Fatal("exited at once")
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	var exit *exec.ExitError
	if err := p.Wait(); !errors.As(err, &exit) || exit.ExitCode() != -1 {
		t.Errorf("Wait after Kill = %v, want killed by a signal", err)
	}
}

func TestFreePort(t *testing.T) {
	ports, err := freePorts(20)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Fatalf("ports %v: want 20 distinct positive ports", ports)
		}
		seen[p] = true
	}
	if _, err := FreePort(); err != nil {
		t.Fatal(err)
	}
}
