package boot

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"outpost.dev/test/wait"
)

// BenchmarkLauncherMemory measures what a resident launcher costs: the
// real outpost-boot supervising an agent on trial, its Rss and Pss
// (smaps_rollup) once the agent runs.
//
//	go test -run '^$' -bench LauncherMemory -benchtime 1x -count 5 ./agent/slots/boot/
func BenchmarkLauncherMemory(b *testing.B) {
	g := &gateway{b: buildAll(b), log: b.TempDir() + "/agent.log"}
	if err := os.RemoveAll(g.b.dir); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		b.StopTimer()
		if err := os.RemoveAll(g.b.dir); err != nil {
			b.Fatal(err)
		}
		g.upgrade(b, g.b.hang, "v2", time.Hour)
		cmd := exec.Command(g.b.launcher, "run")
		cmd.Env = append(os.Environ(), "FAKE_AGENT_LOG="+g.log)
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		// The agent runs once it wrote its line; the launcher is past its
		// start-up once it waits for that child: one of its threads is
		// blocked in the kernel's wait (the supervising loop's select
		// follows at once).
		before, _ := os.ReadFile(g.log)
		wait.For(b, 10*time.Second, "the agent on trial to start", func() bool {
			now, _ := os.ReadFile(g.log)
			return len(now) > len(before)
		})
		wait.For(b, 10*time.Second, "the launcher to wait for the agent", func() bool {
			return waitsForChild(cmd.Process.Pid)
		})
		fig := smaps(b, cmd.Process.Pid)
		b.ReportMetric(float64(fig["Rss"]), "rss-KiB")
		b.ReportMetric(float64(fig["Pss"]), "pss-KiB")
		b.ReportMetric(float64(fig["Pss_Anon"]), "pss-anon-KiB")
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			b.Fatal(err)
		}
		_ = cmd.Wait()
		b.StartTimer()
	}
}

// waitsForChild reports whether a thread of process pid is blocked waiting
// for a child (its wchan is the kernel's do_wait).
func waitsForChild(pid int) bool {
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/wchan")
	for _, f := range tasks {
		if b, err := os.ReadFile(f); err == nil && string(b) == "do_wait" {
			return true
		}
	}
	return false
}

// smaps reads /proc/PID/smaps_rollup's figures in KiB.
func smaps(tb testing.TB, pid int) map[string]int {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB")); err == nil {
			out[k] = n
		}
	}
	return out
}
