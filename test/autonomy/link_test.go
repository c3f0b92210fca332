package autonomy

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/cloud/nodes"
	"outpost.dev/test/stack"
	"outpost.dev/test/wait"
)

// TestLinkCutMidFrame cuts the agent's link in the middle of a frame and
// keeps it down while a container crashes and restarts: the pods keep
// running (same tasks, same PIDs), the API sees nothing during the cut, and
// once the link returns it sees the crash loop's restart count catch up,
// never going backwards, ending equal to the agent's.
func TestLinkCutMidFrame(t *testing.T) {
	needStack(t)
	ctx := ctxFor(t, 5*time.Minute)
	e := newEdge(t, ctx, "auto-cut", true)
	steady := []string{"cut-steady-a", "cut-steady-b"}
	for _, n := range steady {
		createPod(t, ctx, podSpec(n, e.name, "sleep", "3600"))
	}
	stack.WaitFor(t, ctx, 2*time.Minute, "steady pods Running in the API", func() (bool, string) { return runningInAPI(ctx, steady...) })
	rec := recordPods(t, e.name)

	// Exits 2 s after each start; restartPolicy Always restarts it at
	// once, then after 10 s, 20 s... (crash back-off).
	crash := createPod(t, ctx, podSpec("cut-crash", e.name, "sh", "-c", "sleep 2; exit 3"))
	stack.WaitFor(t, ctx, time.Minute, "the crashing pod started (API)", func() (bool, string) {
		p, err := apiPod(ctx, crash.Name)
		if err != nil {
			return false, err.Error()
		}
		id, _ := containerID(p)
		return id != "", fmt.Sprintf("%+v", p.Status.ContainerStatuses)
	})

	// What runs before the cut.
	before := map[string]task{} // pod name → its running task
	s0, err := e.state(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range steady {
		p, err := apiPod(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := containerID(p)
		tk, ok := s0.tasks[id]
		if !ok || tk.Status != "RUNNING" {
			t.Fatalf("%s: container %s from the API has task %+v in containerd", n, id, tk)
		}
		before[n] = tk
	}

	e.proxy.Refuse(true)
	if !e.proxy.CutMidFrame(15 * time.Second) {
		t.Error("no data crossed the link within 15 s: the cut was not mid-frame")
	}
	cutAt := time.Now()
	// Nothing reaches the API from now on, once the relay finished the
	// API writes of what it read before the cut: what it has then is the
	// base. The relay writes EdgeLinkReady=False as the connection's last
	// write, after its pod status writes have stopped.
	stack.WaitFor(t, ctx, time.Minute, "the relay to end the cut connection (EdgeLinkReady=False)", func() (bool, string) {
		n, err := st.CP.Client().CoreV1().Nodes().Get(ctx, e.name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, c := range n.Status.Conditions {
			if c.Type == nodes.ConditionLinkReady {
				return c.Status == corev1.ConditionFalse, fmt.Sprintf("%s %s", c.Status, c.Message)
			}
		}
		return false, "no EdgeLinkReady condition"
	})
	p, err := apiPod(ctx, crash.Name)
	if err != nil {
		t.Fatal(err)
	}
	_, base := containerID(p)
	t.Logf("link cut; the API has restartCount %d for %s", base, crash.Name)

	// At least two restarts (and as many crashes) happen offline.
	var offline int
	stack.WaitFor(t, ctx, 2*time.Minute, "two restarts during the cut", func() (bool, string) {
		s, err := e.state(ctx)
		if err != nil {
			return false, err.Error()
		}
		c, _ := s.latest(string(crash.UID), "app")
		offline = c.Attempt
		return c.Attempt >= int(base)+2, fmt.Sprintf("latest attempt %d", c.Attempt)
	})
	p, err = apiPod(ctx, crash.Name)
	if err != nil {
		t.Fatal(err)
	}
	if _, n := containerID(p); n != base {
		t.Fatalf("restartCount in the API moved from %d to %d while the link was cut: the cut did not hold", base, n)
	}
	s1, err := e.state(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for n, tk := range before {
		if got := s1.tasks[tk.ID]; got != tk {
			t.Errorf("%s during the cut: task %+v, was %+v", n, got, tk)
		}
	}
	t.Logf("%s offline: the agent restarted %s to attempt %d", time.Since(cutAt).Round(time.Second), crash.Name, offline)

	e.proxy.Refuse(false)
	back := time.Now()
	var agentCount int
	stack.WaitFor(t, ctx, 2*time.Minute, "the API's restartCount equal to the agent's", func() (bool, string) {
		s, err := e.state(ctx)
		if err != nil {
			return false, err.Error()
		}
		c, _ := s.latest(string(crash.UID), "app")
		p, err := apiPod(ctx, crash.Name)
		if err != nil {
			return false, err.Error()
		}
		id, n := containerID(p)
		agentCount = c.Attempt
		return int(n) == c.Attempt && id == c.ID, fmt.Sprintf("API %d (%s), agent %d (%s)", n, id, c.Attempt, c.ID)
	})
	t.Logf("caught up %s after the link returned: restartCount %d", time.Since(back).Round(100*time.Millisecond), agentCount)
	if err := st.WaitNodeReady(ctx, e.name, true, time.Minute); err != nil {
		t.Error(err)
	}

	// The API's view, update by update: the restart count never went
	// backwards, and the last one is the agent's.
	wait.For(t, 30*time.Second, "the watch to deliver the agent's restartCount", func() bool {
		ups := rec.of(crash.Name)
		return len(ups) > 0 && ups[len(ups)-1].Restarts >= int32(agentCount)
	})
	ups := rec.of(crash.Name)
	last := int32(-1)
	var seq []int32
	for _, u := range ups {
		if len(u.ID) == 0 {
			continue // before the first container status
		}
		seq = append(seq, u.Restarts)
		if u.Restarts < last {
			t.Errorf("restartCount went backwards in the API: %v", seq)
			break
		}
		last = u.Restarts
	}
	t.Logf("restartCount in the API, update by update: %v", seq)
	if last < int32(agentCount) {
		t.Errorf("last restartCount the watch saw is %d, the agent's is %d", last, agentCount)
	}
	// The steady pods ran throughout: same tasks, never restarted.
	s2, err := e.state(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for n, tk := range before {
		if got := s2.tasks[tk.ID]; got != tk {
			t.Errorf("%s after the cut: task %+v, was %+v", n, got, tk)
		}
		for _, u := range rec.of(n) {
			if u.Restarts != 0 || (u.ID != "" && u.ID != "containerd://"+tk.ID) {
				t.Errorf("%s: the API saw restartCount %d, container %s (ran %s)", n, u.Restarts, u.ID, tk.ID)
			}
		}
	}
}
