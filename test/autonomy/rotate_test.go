package autonomy

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"outpost.dev/cloud/identity"
	"outpost.dev/test/stack"
)

// TestCertificateRotatesUnderRunningPods runs pods on an agent whose relay
// issues two-minute node certificates, so the agent renews its
// certificate on the link about every 15 s: across two renewals (the
// node's identity record accepts each new serial alone once the agent
// connected with it) no container restarts. The API's restartCount and
// container ID stay, containerd runs the same task with the same process
// (PID and start time), every pod update the API saw kept it Ready, and
// the agent process never restarted.
func TestCertificateRotatesUnderRunningPods(t *testing.T) {
	needStack(t)
	ctx := ctxFor(t, 4*time.Minute)
	// Certificates start five minutes back (the relay's allowance for
	// clock skew): two minutes of validity is a seven-minute lifetime,
	// renewed at the agent's default 75 %, 15 s after issue.
	r, err := st.StartRelay(ctx, "--node-cert-validity", "2m")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Stop() })
	e := newEdgeOn(t, ctx, r, "auto-rot", false)
	agentProc := e.agent.Proc

	pods := []string{"rot-a", "rot-b"}
	for _, n := range pods {
		createPod(t, ctx, podSpec(n, e.name, "sleep", "3600"))
	}
	stack.WaitFor(t, ctx, 2*time.Minute, "the pods Running and Ready in the API", func() (bool, string) {
		if ok, why := runningInAPI(ctx, pods...); !ok {
			return false, why
		}
		for _, n := range pods {
			p, err := apiPod(ctx, n)
			if err != nil || !podReady(p) {
				return false, fmt.Sprintf("%s not Ready: %v", n, err)
			}
		}
		return true, ""
	})
	rec := recordPods(t, e.name)

	// What runs before the renewals: per pod, the API's container and
	// restart count, containerd's task and its process's start time.
	type running struct {
		id       string
		restarts int32
		task     task
		started  string
	}
	before := map[string]running{}
	s0, err := e.state(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range pods {
		p, err := apiPod(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		id, restarts := containerID(p)
		tk, ok := s0.tasks[id]
		if !ok || tk.Status != "RUNNING" || tk.PID <= 0 {
			t.Fatalf("%s: container %s from the API has task %+v in containerd", n, id, tk)
		}
		before[n] = running{id: id, restarts: restarts, task: tk, started: procStart(t, tk.PID)}
	}

	serial := func() (string, string) {
		rec, err := identity.New(st.CP.Client(), stack.RelayNamespace).Fresh(ctx, e.name)
		if err != nil || rec == nil {
			return "", fmt.Sprintf("record of %s: %v", e.name, err)
		}
		if len(rec.Serials) != 1 {
			// A renewed certificate not connected yet: both accepted.
			return "", fmt.Sprint("serials ", rec.Serials)
		}
		return rec.Serials[0], ""
	}
	var seen []string
	stack.WaitFor(t, ctx, 30*time.Second, "the node's identity record", func() (bool, string) {
		s, why := serial()
		if s != "" {
			seen = append(seen, s)
		}
		return s != "", why
	})
	for i := range 2 {
		prev := seen[len(seen)-1]
		stack.WaitFor(t, ctx, 90*time.Second, fmt.Sprintf("renewal %d: a new certificate connected and the one before dropped", i+1), func() (bool, string) {
			s, why := serial()
			if s == "" || s == prev {
				return false, fmt.Sprintf("serial %s, was %s %s", s, prev, why)
			}
			seen = append(seen, s)
			return true, ""
		})
	}
	t.Logf("node certificate serials while the pods ran: %v", seen)
	// The whole log (LogTail reads only its last 64 KiB, which the
	// debug log of a minute with pods outgrows), and a moment for the
	// second line: the relay takes the old serial off the record as the
	// new certificate connects, which may be before the agent logs it.
	stack.WaitFor(t, ctx, 10*time.Second, "two reconnections with a renewed certificate in the agent's log", func() (bool, string) {
		b, err := os.ReadFile(e.agent.Proc.LogPath)
		if err != nil {
			return false, err.Error()
		}
		n := strings.Count(string(b), "connected with the renewed node certificate")
		return n >= 2, fmt.Sprintf("%d so far:\n%s", n, e.agent.Proc.LogTail(40))
	})
	if e.agent.Proc != agentProc || agentProc.Exited() {
		t.Fatalf("the agent restarted to renew its certificate:\n%s", e.agent.Proc.LogTail(40))
	}
	if ns, err := st.NodeReady(ctx, e.name); err != nil || ns != "True" {
		t.Errorf("node after the renewals: Ready %q (%v)", ns, err)
	}

	s1, err := e.state(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range pods {
		b := before[n]
		p, err := apiPod(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		if id, restarts := containerID(p); id != b.id || restarts != b.restarts || !podReady(p) {
			t.Errorf("%s after the renewals: container %s, restartCount %d, Ready %v; was %s, %d, Ready",
				n, id, restarts, podReady(p), b.id, b.restarts)
		}
		if got := s1.tasks[b.id]; got != b.task {
			t.Errorf("%s after the renewals: task %+v, was %+v", n, got, b.task)
		} else if started := procStart(t, got.PID); started != b.started {
			t.Errorf("%s: PID %d started at tick %s, the container's process at %s: it was replaced", n, got.PID, started, b.started)
		}
		for _, u := range rec.of(n) {
			if !u.Ready || u.Restarts != b.restarts || u.ID != "containerd://"+b.id {
				t.Errorf("%s: the API saw an update with Ready %v, restartCount %d, container %s (ran %s)", n, u.Ready, u.Restarts, u.ID, b.id)
			}
		}
	}
}

// procStart is the start time of process pid (field 22 of
// /proc/PID/stat, in clock ticks since boot): with the PID, it names one
// process, even if the PID was reused.
func procStart(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatalf("the container's process: %v", err)
	}
	// The command (field 2) is in parentheses and may hold anything.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 {
		t.Fatalf("/proc/%d/stat: %q", pid, s)
	}
	return f[19] // field 22; f[0] is field 3
}
