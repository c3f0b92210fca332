package streams

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"outpost.dev/test/stack"
)

// soakSessions is how many exec sessions, and how many port-forwarded
// connections, TestSoak runs; soakWorkers how many at a time.
const (
	soakSessions = 1000
	soakWorkers  = 8
	// perForward is how many connections go through one port-forward
	// session before it is closed and another opened.
	perForward = 25
)

// footprint is what a stream left behind would show in, on each side.
type footprint struct {
	relayGoroutines, relayFDs, relayTunnels float64
	agentGoroutines, agentFDs, agentThreads int
	containerdFDs, shims, execProcesses     int
}

func (f footprint) String() string {
	return fmt.Sprintf("relay: %v goroutines, %v fds, %v tunnels; agent: %d goroutines, %d fds, %d threads; containerd: %d fds, %d shims, %d processes in the pod's task",
		f.relayGoroutines, f.relayFDs, f.relayTunnels, f.agentGoroutines, f.agentFDs, f.agentThreads, f.containerdFDs, f.shims, f.execProcesses)
}

// within says whether f is back to base: the same shims and task
// processes, no tunnel open, and goroutines and fds within a few of
// base's (keep-alive connections and timers come and go; a leak of a
// thousand streams does not hide in them).
func (f footprint) within(base footprint) bool {
	const goroutines, fds = 8, 4
	return f.relayTunnels == 0 && f.shims == base.shims && f.execProcesses == base.execProcesses &&
		f.relayGoroutines <= base.relayGoroutines+goroutines && f.agentGoroutines <= base.agentGoroutines+goroutines &&
		f.relayFDs <= base.relayFDs+fds && f.agentFDs <= base.agentFDs+fds && f.containerdFDs <= base.containerdFDs+fds
}

func measure(ctx context.Context) (footprint, error) {
	var f footprint
	rm, err := stack.Scrape(ctx, relay.URL+"/metrics")
	if err != nil {
		return f, err
	}
	f.relayGoroutines, f.relayFDs, f.relayTunnels = rm["go_goroutines"], rm["process_open_fds"], rm["outpost_relay_tunnels"]
	am, err := stack.Scrape(ctx, "http://"+agent.MetricsAddr+"/metrics")
	if err != nil {
		return f, err
	}
	f.agentGoroutines = int(am["go_goroutines"])
	if f.agentFDs, err = countFDs(agent.Proc.Pid()); err != nil {
		return f, err
	}
	if f.agentThreads, err = threads(agent.Proc.Pid()); err != nil {
		return f, err
	}
	if f.containerdFDs, err = countFDs(st.Containerd.Pid()); err != nil {
		return f, err
	}
	f.shims = len(st.Containerd.Shims())
	out, err := st.Containerd.Ctr(ctx, "-n", "outpost-"+node, "tasks", "ps", containerID)
	if err != nil {
		return f, err
	}
	f.execProcesses = len(strings.Split(strings.TrimSpace(out), "\n")) - 1 // header
	return f, nil
}

// countFDs counts the open file descriptors of process pid.
func countFDs(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents), err
}

// threads is the Threads: line of /proc/PID/status.
func threads(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no Threads line", pid)
}

// TestSoak: 1,000 exec sessions and 1,000 port-forwarded connections
// through the relay, several at a time, leave nothing behind on either
// side: the relay's and the agent's goroutines and file descriptors,
// containerd's shims and file descriptors and the processes of the pod's
// task come back to what they were before.
func TestSoak(t *testing.T) {
	stack.Need(t)
	ctx := stack.Context(t, 10*time.Minute)

	// Warm up: the relay's connections to the API server (for the
	// kubelet client's authorization) and pools exist before the
	// baseline.
	runExecs(t, ctx, 2*soakWorkers)
	runForwards(t, ctx, 2*soakWorkers)
	var base footprint
	stack.WaitFor(t, ctx, time.Minute, "no tunnel open after the warm-up", func() (bool, string) {
		var err error
		base, err = measure(ctx)
		return err == nil && base.relayTunnels == 0 && base.execProcesses >= 1, fmt.Sprint(base, err)
	})
	t.Logf("before: %s", base)

	start := time.Now()
	runExecs(t, ctx, soakSessions)
	t.Logf("%d exec sessions, %d at a time: %v", soakSessions, soakWorkers, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	runForwards(t, ctx, soakSessions)
	t.Logf("%d port-forwarded connections (%d per port-forward session), %d at a time: %v", soakSessions, perForward, soakWorkers, time.Since(start).Round(time.Millisecond))

	var after footprint
	stack.WaitFor(t, ctx, 90*time.Second, "the relay, the agent and containerd back to their footprint before ("+base.String()+")", func() (bool, string) {
		var err error
		after, err = measure(ctx)
		return err == nil && after.within(base), fmt.Sprint(after, err)
	})
	t.Logf("after:  %s", after)
}

// runExecs runs n exec sessions, soakWorkers at a time: half echo an
// argument, half copy stdin (cat), each checked.
func runExecs(t *testing.T, ctx context.Context, n int) {
	t.Helper()
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for range soakWorkers {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(n) || failed.Load() > 5 {
					return
				}
				want := fmt.Sprintf("soak-%d\n", i)
				var out string
				var err error
				if i%2 == 0 {
					out, err = exec(ctx, nil, "echo", strings.TrimSpace(want))
				} else {
					out, err = exec(ctx, strings.NewReader(want), "cat")
				}
				if err != nil || out != want {
					failed.Add(1)
					t.Errorf("exec session %d: %q, %v; want %q", i, out, err, want)
				}
			}
		})
	}
	wg.Wait()
}

// runForwards makes n connections through port-forward sessions of
// perForward connections each, soakWorkers sessions at a time, each
// connection one HTTP GET of index.html.
func runForwards(t *testing.T, ctx context.Context, n int) {
	t.Helper()
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for range soakWorkers {
		wg.Go(func() {
			for failed.Load() <= 5 {
				first := next.Add(perForward) - perForward
				if first >= int64(n) {
					return
				}
				port, stop, err := forward(ctx)
				if err != nil {
					failed.Add(1)
					t.Errorf("port-forward session from connection %d: %v", first, err)
					continue
				}
				for i := first; i < min(first+perForward, int64(n)); i++ {
					if _, err := get(ctx, localAddr(port), "/index.html"); err != nil {
						failed.Add(1)
						t.Errorf("port-forwarded connection %d: %v", i, err)
					}
				}
				if err := stop(); err != nil {
					failed.Add(1)
					t.Errorf("port-forward session from connection %d: %v", first, err)
				}
			}
		})
	}
	wg.Wait()
}
