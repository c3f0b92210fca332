package containerd_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"outpost.dev/agent/runtime/containerd"
	"outpost.dev/test/harness"
	"outpost.dev/test/wait"
)

// TestMain lets the test binary be an agent that copies containers' logs
// (OUTPOST_TEST_LOG_AGENT=address,namespace,fifo-dir): it attaches, says
// so, and copies until it is killed.
func TestMain(m *testing.M) {
	if v := os.Getenv("OUTPOST_TEST_LOG_AGENT"); v != "" {
		f := strings.Split(v, ",")
		if len(f) != 3 {
			fmt.Println("OUTPOST_TEST_LOG_AGENT is address,namespace,fifo-dir")
			os.Exit(2)
		}
		rt, err := containerd.New(context.Background(), containerd.Config{Address: f[0], Namespace: f[1], LogFIFODir: f[2]})
		if err == nil {
			err = rt.AttachLogs(context.Background())
		}
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("attached")
		select {}
	}
	os.Exit(m.Run())
}

// TestLogInAgentCrash kills (SIGKILL) an agent process while it copies a
// container's output at full speed: the container is not disturbed, and
// the next agent's copy loses at most what the dead one had read but not
// written, one read of 16 KiB (its tail may leave the rest of a cut line
// as a line of its own); nothing is repeated or reordered.
func TestLogInAgentCrash(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	if _, err := e.rt.Pull(ctx, e.images[0].Ref, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(e.logs, 0o755); err != nil {
		t.Fatal(err)
	}
	fifos := filepath.Join(e.dir, "logfifo")
	gate := filepath.Join(e.dir, "crash-gate")
	if err := os.MkdirAll(gate, 0o755); err != nil {
		t.Fatal(err)
	}
	const n = 400000
	id := "lia-crash"
	e.run(t, ctx, containerd.Spec{ID: id, Image: e.images[0].Ref, LogInAgent: true,
		LogArgs: map[string]string{"max-size": strconv.Itoa(64 << 20)},
		Mounts:  []containerd.Mount{{HostPath: gate, ContainerPath: "/gate", ReadOnly: true}},
		Command: []string{"sh", "-c", fmt.Sprintf("echo start; while [ ! -e /gate/go ]; do sleep 0.05; done; seq 1 %d; echo end", n)}})
	waitLog(t, e, id, "stdout F start")
	e.rt.Close() // this test's Runtime hands the copy to the agent process

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), "OUTPOST_TEST_LOG_AGENT="+e.ctrd.Address+","+e.ns+","+fifos)
	agent, err := harness.StartProcess("log-agent", cmd, filepath.Join(e.dir, "log-agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.Kill() })
	wait.For(t, 30*time.Second, "the agent process to attach", func() bool {
		b, _ := os.ReadFile(agent.LogPath)
		return strings.Contains(string(b), "\nattached\n")
	})
	if err := os.WriteFile(filepath.Join(gate, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitLog(t, e, id, "stdout F 20000\n")
	if err := agent.Kill(); err != nil {
		t.Fatal(err)
	}

	rt2, err := containerd.New(ctx, containerd.Config{Address: e.ctrd.Address, Namespace: e.ns, LogFIFODir: fifos})
	if err != nil {
		t.Fatal(err)
	}
	defer rt2.Close()
	if err := rt2.AttachLogs(ctx); err != nil {
		t.Fatal(err)
	}
	e.rt = rt2
	if st := e.waitExit(t, ctx, id); st.ExitCode != 0 {
		t.Errorf("exit code %d after the agent was killed", st.ExitCode)
	}
	waitLog(t, e, id, "stdout F end")
	got := stdoutLines(t, filepath.Join(e.logs, id+".log"), "stdout", 0)
	if len(got) < 2 || got[0] != "start" || got[len(got)-1] != "end" {
		t.Fatalf("%d lines, first %q, last %q", len(got), got[:1], got[len(got)-1:])
	}
	lost, gaps, next := 0, 0, 1
	for i := 1; i < len(got)-1; i++ {
		if got[i] == strconv.Itoa(next) {
			next++
			continue
		}
		gaps++
		// A gap: the line after it may be the tail of the first line lost.
		resume := i
		if v, err := strconv.Atoi(got[i]); err != nil || v <= next {
			resume = i + 1
		}
		if resume >= len(got)-1 {
			t.Fatalf("the log ends in a gap at line %d", next)
		}
		v, err := strconv.Atoi(got[resume])
		if err != nil || v <= next {
			t.Fatalf("after line %d: %q, %q: repeated or out of order", next-1, got[i], got[resume])
		}
		if resume > i && !strings.HasSuffix(strconv.Itoa(v-1), got[i]) && !strings.HasSuffix(strconv.Itoa(next), got[i]) {
			t.Fatalf("after line %d: %q is no tail of a lost line", next-1, got[i])
		}
		for k := next; k < v; k++ {
			lost += len(strconv.Itoa(k)) + 1
		}
		if resume > i {
			// The tail of a line counted lost above was written, with
			// the line's newline: got[i].
			lost -= len(got[i]) + 1
		}
		next, i = v+1, resume
	}
	if next != n+1 {
		t.Fatalf("the log's numbers end at %d, want %d", next-1, n)
	}
	t.Logf("killed mid-copy: %d gap(s), %d bytes lost", gaps, lost)
	if gaps > 1 || lost > 16<<10 {
		t.Errorf("%d gaps, %d bytes lost: more than one read (16 KiB)", gaps, lost)
	}
}
