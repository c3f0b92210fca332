package containerd_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"outpost.dev/agent/runtime/containerd"
	"outpost.dev/test/wait"
)

// stdoutLines reads a CRI log file (and rotated ones before it, oldest
// first) and returns the lines of stream, partial records joined.
func stdoutLines(t *testing.T, path, stream string, rotated int) []string {
	t.Helper()
	var out []string
	var part string
	for i := rotated; i >= 0; i-- {
		p := path
		if i > 0 {
			p += "." + strconv.Itoa(i)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			if os.IsNotExist(err) && i > 0 {
				continue
			}
			t.Fatal(err)
		}
		for _, rec := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			f := strings.SplitN(rec, " ", 4)
			if len(f) < 3 {
				t.Fatalf("%s: not a CRI record: %q", p, rec)
			}
			if _, err := time.Parse(time.RFC3339Nano, f[0]); err != nil {
				t.Fatalf("%s: record %q: %v", p, rec, err)
			}
			if f[1] != stream {
				continue
			}
			line := ""
			if len(f) == 4 {
				line = f[3]
			}
			switch f[2] {
			case "P":
				part += line
			case "F":
				out = append(out, part+line)
				part = ""
			default:
				t.Fatalf("%s: record %q: tag %q", p, rec, f[2])
			}
		}
	}
	return out
}

func TestLogInAgent(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	if _, err := e.rt.Pull(ctx, e.images[0].Ref, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(e.logs, 0o755); err != nil {
		t.Fatal(err)
	}
	img := e.images[0].Ref
	fifos := filepath.Join(e.dir, "logfifo")

	t.Run("streams", func(t *testing.T) {
		id := "lia-streams"
		e.run(t, ctx, containerd.Spec{ID: id, Image: img, LogInAgent: true,
			Command: []string{"sh", "-c", "echo out1; echo err1 >&2; echo out2; printf tail"}})
		st := e.waitExit(t, ctx, id)
		if st.ExitCode != 0 {
			t.Fatalf("exit code %d", st.ExitCode)
		}
		waitLog(t, e, id, "stdout F tail")
		path := filepath.Join(e.logs, id+".log")
		if got := stdoutLines(t, path, "stdout", 0); strings.Join(got, ",") != "out1,out2,tail" {
			t.Errorf("stdout lines %q", got)
		}
		if got := stdoutLines(t, path, "stderr", 0); strings.Join(got, ",") != "err1" {
			t.Errorf("stderr lines %q", got)
		}
		if err := e.rt.Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{id + ".out", id + ".err"} {
			if _, err := os.Lstat(filepath.Join(fifos, p)); !os.IsNotExist(err) {
				t.Errorf("log FIFO %s after Delete: %v", p, err)
			}
		}
	})

	t.Run("tty", func(t *testing.T) {
		id := "lia-tty"
		e.run(t, ctx, containerd.Spec{ID: id, Image: img, LogInAgent: true, TTY: true,
			Command: []string{"sh", "-c", "echo on-a-terminal; echo err >&2"}})
		e.waitExit(t, ctx, id)
		waitLog(t, e, id, "stdout F err")
		if got := stdoutLines(t, filepath.Join(e.logs, id+".log"), "stdout", 0); !strings.HasPrefix(strings.Join(got, ","), "on-a-terminal") {
			t.Errorf("terminal lines %q", got)
		}
		if _, err := os.Lstat(filepath.Join(fifos, id+".err")); !os.IsNotExist(err) {
			t.Errorf("a terminal's container got a stderr FIFO: %v", err)
		}
	})

	t.Run("rotation", func(t *testing.T) {
		id := "lia-rotate"
		e.run(t, ctx, containerd.Spec{ID: id, Image: img, LogInAgent: true,
			LogArgs: map[string]string{"max-size": "4096", "max-files": "2"},
			Command: []string{"seq", "1", "2000"}})
		e.waitExit(t, ctx, id)
		waitLog(t, e, id, "stdout F 2000")
		path := filepath.Join(e.logs, id+".log")
		for _, p := range []string{path, path + ".1"} {
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if st.Size() > 4096 {
				t.Errorf("%s is %d bytes, over max-size 4096", p, st.Size())
			}
		}
		if _, err := os.Stat(path + ".2"); !os.IsNotExist(err) {
			t.Errorf("max-files 2 kept %s.2: %v", path, err)
		}
		got := stdoutLines(t, path, "stdout", 1)
		if len(got) == 0 || got[len(got)-1] != "2000" || len(got) > 2000 {
			t.Fatalf("%d lines, last %q", len(got), got[len(got)-1:])
		}
		first, _ := strconv.Atoi(got[0])
		for i, l := range got {
			if l != strconv.Itoa(first+i) {
				t.Fatalf("line %d is %q, want %d: a gap", i, l, first+i)
			}
		}
	})

	t.Run("bad options", func(t *testing.T) {
		for _, sp := range []containerd.Spec{
			{ID: "lia-bad-arg", LogArgs: map[string]string{"logger": "/tmp/x"}},
			{ID: "lia-bad-size", LogArgs: map[string]string{"max-size": "-1"}},
		} {
			sp.Image, sp.LogInAgent, sp.Command = img, true, []string{"true"}
			sp.LogPath = filepath.Join(e.logs, sp.ID+".log")
			if err := e.rt.Create(ctx, sp); err == nil {
				t.Errorf("%s: Create took LogArgs %v", sp.ID, sp.LogArgs)
			}
		}
	})

	// The agent goes away mid-output (its Runtime closed: the FIFOs' read
	// ends go, as when the process dies) while the container writes more
	// than the pipe holds: the container blocks, is not killed, and a new
	// Runtime's AttachLogs copies everything, in order, once.
	t.Run("restart", func(t *testing.T) {
		id := "lia-restart"
		gate := filepath.Join(e.dir, "gate")
		if err := os.MkdirAll(gate, 0o755); err != nil {
			t.Fatal(err)
		}
		const n = 200000 // about 1.3 MB: more than the 1 MiB pipe
		e.run(t, ctx, containerd.Spec{ID: id, Image: img, LogInAgent: true,
			LogArgs: map[string]string{"max-size": strconv.Itoa(64 << 20)},
			Mounts:  []containerd.Mount{{HostPath: gate, ContainerPath: "/gate", ReadOnly: true}},
			Command: []string{"sh", "-c", fmt.Sprintf("echo start; while [ ! -e /gate/go ]; do sleep 0.05; done; seq 1 %d; echo end", n)}})
		waitLog(t, e, id, "stdout F start")

		cfg := containerd.Config{Address: e.ctrd.Address, Namespace: e.ns, LogFIFODir: fifos}
		e.rt.Close() // the agent is gone
		if err := os.WriteFile(filepath.Join(gate, "go"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		// Watch the stdout FIFO fill up through a read end of our own that
		// reads nothing.
		fd, err := unix.Open(filepath.Join(fifos, id+".out"), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		size, err := unix.FcntlInt(uintptr(fd), unix.F_GETPIPE_SZ, 0)
		if err != nil {
			t.Fatal(err)
		}
		if size < 1<<20 {
			t.Errorf("log pipe holds %d bytes, want 1 MiB", size)
		}
		wait.For(t, time.Minute, "the container to fill its log pipe", func() bool {
			queued, err := unix.IoctlGetInt(fd, unix.TIOCINQ) // FIONREAD
			return err == nil && queued >= size-64<<10
		})
		if st, err := e.rt.Status(ctx, id); err != nil || st.State != containerd.StateRunning {
			t.Fatalf("with a full log pipe the container is %v (%v), want running", st, err)
		}

		rt2, err := containerd.New(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer rt2.Close()
		if err := rt2.AttachLogs(ctx); err != nil {
			t.Fatal(err)
		}
		e.rt = rt2
		st := e.waitExit(t, ctx, id)
		if st.ExitCode != 0 {
			t.Errorf("exit code %d after the restart", st.ExitCode)
		}
		waitLog(t, e, id, "stdout F end")
		got := stdoutLines(t, filepath.Join(e.logs, id+".log"), "stdout", 0)
		if len(got) != n+2 || got[0] != "start" || got[n+1] != "end" {
			t.Fatalf("%d lines (want %d), first %q", len(got), n+2, got[:min(3, len(got))])
		}
		for i := 1; i <= n; i++ {
			if got[i] != strconv.Itoa(i) {
				t.Fatalf("line %d is %q: lost or repeated output", i, got[i])
			}
		}
	})
}
