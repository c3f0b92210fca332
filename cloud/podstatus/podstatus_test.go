package podstatus

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	ktesting "k8s.io/client-go/testing"

	"outpost.dev/wire"
)

var (
	t0  = metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	now = metav1.NewTime(t0.Add(time.Hour))
)

func basePod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "uid-1"},
		Spec: corev1.PodSpec{NodeName: "gw", Containers: []corev1.Container{{Name: "app"}, {Name: "side"}},
			InitContainers: []corev1.Container{{Name: "init"}}},
		Status: corev1.PodStatus{Phase: corev1.PodPending, QOSClass: corev1.PodQOSBurstable, Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: t0},
			{Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: t0},
			{Type: "DisruptionTarget", Status: corev1.ConditionFalse, LastTransitionTime: t0},
		}},
	}
}

func running() *wire.PodStatus {
	return &wire.PodStatus{
		UID: "uid-1", Namespace: "default", Name: "web", Phase: "Running",
		PodIP: "10.1.0.5", HostIP: "192.168.1.5", StartTime: t0.Unix(),
		Conditions: []wire.Condition{
			{Type: "PodScheduled", Status: "True"}, {Type: "Initialized", Status: "True"},
			{Type: "ContainersReady", Status: "True"}, {Type: "Ready", Status: "True"},
		},
		InitContainers: []wire.ContainerStatus{{Name: "init", Image: "busybox", State: wire.ContainerState{
			Kind: wire.StateTerminated, Reason: "Completed", StartedAt: 1000, FinishedAt: 2000}}},
		Containers: []wire.ContainerStatus{
			{Name: "side", Image: "busybox", ContainerID: "containerd://s", State: wire.ContainerState{Kind: wire.StateWaiting, Reason: "CrashLoopBackOff", Message: "back-off 10s"},
				LastState: wire.ContainerState{Kind: wire.StateTerminated, ExitCode: 1, Reason: "Error", FinishedAt: 3000}, RestartCount: 3},
			{Name: "app", Image: "registry.local/app:1", ImageID: "registry.local/app@sha256:ab", ContainerID: "containerd://a",
				Ready: true, Started: true, RestartCount: 2, State: wire.ContainerState{Kind: wire.StateRunning, StartedAt: 5000}},
			{Name: "ghost", Image: "x", State: wire.ContainerState{Kind: wire.StateRunning}},
		},
	}
}

func cond(st corev1.PodStatus, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range st.Conditions {
		if st.Conditions[i].Type == t {
			return &st.Conditions[i]
		}
	}
	return nil
}

func TestStatus(t *testing.T) {
	for _, c := range []struct {
		name  string
		pod   func(*corev1.Pod)
		rep   func(*wire.PodStatus)
		check func(t *testing.T, st corev1.PodStatus)
	}{
		{name: "running like a kubelet", check: func(t *testing.T, st corev1.PodStatus) {
			if st.Phase != corev1.PodRunning || st.PodIP != "10.1.0.5" || len(st.PodIPs) != 1 || st.PodIPs[0].IP != "10.1.0.5" ||
				st.HostIP != "192.168.1.5" || len(st.HostIPs) != 1 || st.StartTime == nil || !st.StartTime.Equal(&t0) {
				t.Errorf("status %+v", st)
			}
			if st.QOSClass != corev1.PodQOSBurstable {
				t.Errorf("qos %s: the API server's value must stay", st.QOSClass)
			}
			if len(st.ContainerStatuses) != 2 || st.ContainerStatuses[0].Name != "app" || st.ContainerStatuses[1].Name != "side" {
				t.Fatalf("container statuses not in spec order or with an unknown name: %+v", st.ContainerStatuses)
			}
			app, side := st.ContainerStatuses[0], st.ContainerStatuses[1]
			if !app.Ready || app.Started == nil || !*app.Started || app.RestartCount != 2 || app.ContainerID != "containerd://a" ||
				app.ImageID != "registry.local/app@sha256:ab" || app.Image != "registry.local/app:1" ||
				app.State.Running == nil || !app.State.Running.StartedAt.Time.Equal(time.UnixMilli(5000)) {
				t.Errorf("app %+v", app)
			}
			if side.State.Waiting == nil || side.State.Waiting.Reason != "CrashLoopBackOff" || side.RestartCount != 3 ||
				side.LastTerminationState.Terminated == nil || side.LastTerminationState.Terminated.ExitCode != 1 {
				t.Errorf("side %+v", side)
			}
			if len(st.InitContainerStatuses) != 1 || st.InitContainerStatuses[0].State.Terminated == nil ||
				st.InitContainerStatuses[0].State.Terminated.Reason != "Completed" {
				t.Errorf("init %+v", st.InitContainerStatuses)
			}
			if c := cond(st, corev1.PodScheduled); !c.LastTransitionTime.Equal(&t0) {
				t.Errorf("PodScheduled did not change yet moved: %v", c.LastTransitionTime)
			}
			if c := cond(st, corev1.PodReady); c.Status != corev1.ConditionTrue || !c.LastTransitionTime.Equal(&now) {
				t.Errorf("Ready %+v", c)
			}
			if c := cond(st, corev1.PodInitialized); c == nil || !c.LastTransitionTime.Equal(&now) {
				t.Errorf("Initialized %+v", c)
			}
			if c := cond(st, "DisruptionTarget"); c == nil {
				t.Error("a condition of another writer was lost")
			}
		}},
		{name: "ephemeral containers",
			pod: func(p *corev1.Pod) {
				p.Spec.EphemeralContainers = []corev1.EphemeralContainer{
					{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "dbg-1"}, TargetContainerName: "app"},
					{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "dbg-2"}},
				}
			},
			rep: func(r *wire.PodStatus) {
				r.EphemeralContainers = []wire.ContainerStatus{
					{Name: "dbg-2", Image: "busybox", State: wire.ContainerState{Kind: wire.StateWaiting, Reason: "ErrImagePull"}},
					{Name: "dbg-1", Image: "busybox", ContainerID: "containerd://d", State: wire.ContainerState{Kind: wire.StateRunning, StartedAt: 6000}},
					{Name: "gone", Image: "busybox", State: wire.ContainerState{Kind: wire.StateRunning}},
				}
			},
			check: func(t *testing.T, st corev1.PodStatus) {
				es := st.EphemeralContainerStatuses
				if len(es) != 2 || es[0].Name != "dbg-1" || es[1].Name != "dbg-2" {
					t.Fatalf("ephemeral statuses not in spec order or with an unknown name: %+v", es)
				}
				if es[0].State.Running == nil || es[0].ContainerID != "containerd://d" ||
					es[1].State.Waiting == nil || es[1].State.Waiting.Reason != "ErrImagePull" {
					t.Errorf("ephemeral statuses %+v", es)
				}
				if len(st.ContainerStatuses) != 2 {
					t.Errorf("container statuses %+v", st.ContainerStatuses)
				}
			}},
		{name: "terminal phase is final",
			pod: func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded },
			check: func(t *testing.T, st corev1.PodStatus) {
				if st.Phase != corev1.PodSucceeded {
					t.Errorf("phase %s", st.Phase)
				}
			}},
		{name: "start time never changes",
			pod: func(p *corev1.Pod) { early := metav1.NewTime(t0.Add(-time.Hour)); p.Status.StartTime = &early },
			check: func(t *testing.T, st corev1.PodStatus) {
				if !st.StartTime.Time.Equal(t0.Add(-time.Hour)) {
					t.Errorf("start %v", st.StartTime)
				}
			}},
		{name: "readiness gate holds Ready",
			pod: func(p *corev1.Pod) { p.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: "lb/ready"}} },
			check: func(t *testing.T, st corev1.PodStatus) {
				if c := cond(st, corev1.PodReady); c.Status != corev1.ConditionFalse || c.Reason != "ReadinessGatesNotReady" {
					t.Errorf("Ready %+v", c)
				}
			}},
		{name: "qos computed when missing",
			pod: func(p *corev1.Pod) {
				p.Status.QOSClass = ""
				l := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")}
				for i := range p.Spec.Containers {
					p.Spec.Containers[i].Resources = corev1.ResourceRequirements{Limits: l, Requests: l}
				}
				p.Spec.InitContainers[0].Resources = corev1.ResourceRequirements{Limits: l, Requests: l}
			},
			check: func(t *testing.T, st corev1.PodStatus) {
				if st.QOSClass != corev1.PodQOSGuaranteed {
					t.Errorf("qos %s", st.QOSClass)
				}
			}},
		{name: "no IPs yet", rep: func(r *wire.PodStatus) { r.PodIP, r.HostIP, r.Phase = "", "", "Pending" },
			check: func(t *testing.T, st corev1.PodStatus) {
				if st.PodIP != "" || st.PodIPs != nil || st.HostIPs != nil || st.Phase != corev1.PodPending {
					t.Errorf("%+v", st)
				}
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := basePod()
			if c.pod != nil {
				c.pod(p)
			}
			r := running()
			if c.rep != nil {
				c.rep(r)
			}
			before := p.DeepCopy()
			st := Status(r, p, now)
			c.check(t, st)
			if p.Status.Phase != before.Status.Phase || len(p.Status.Conditions) != len(before.Status.Conditions) {
				t.Error("Status changed its input")
			}
		})
	}
	if q := QOSClass(&corev1.PodSpec{Containers: []corev1.Container{{}}}); q != corev1.PodQOSBestEffort {
		t.Errorf("empty pod: %s", q)
	}
}

type acks struct {
	mu   sync.Mutex
	seqs []uint64
	ch   chan uint64
}

func newAcks() *acks { return &acks{ch: make(chan uint64, 64)} }
func (a *acks) done(s uint64) {
	a.mu.Lock()
	a.seqs = append(a.seqs, s)
	a.mu.Unlock()
	a.ch <- s
}

func (a *acks) next(t *testing.T) uint64 {
	t.Helper()
	select {
	case s := <-a.ch:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no done")
	}
	return 0
}

func (a *acks) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case s := <-a.ch:
		t.Fatalf("seq %d done too early", s)
	case <-time.After(d):
	}
}

// TestSessionAcksAfterWrite: a report is done only once the API server
// took it; a failing write is retried and holds it back; reports about
// pods of other nodes or stale UIDs are done without a write.
func TestSessionAcksAfterWrite(t *testing.T) {
	p := basePod()
	other := basePod()
	other.Name, other.UID, other.Spec.NodeName = "other", "uid-2", "gw-2"
	client := fake.NewClientset(p, other)
	var mu sync.Mutex
	failures := 2
	updates := 0
	client.PrependReactor("update", "pods", func(a ktesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "status" {
			return false, nil, nil
		}
		mu.Lock()
		defer mu.Unlock()
		updates++
		if failures > 0 {
			failures--
			return true, nil, apierrors.NewInternalError(errors.New("etcd is slow"))
		}
		return false, nil, nil
	})
	w, err := NewWriter(WriterConfig{Now: func() time.Time { return now.Time }})
	if err != nil {
		t.Fatal(err)
	}
	a := newAcks()
	s := w.Start(context.Background(), SessionConfig{Node: "gw", Client: client, Done: a.done})
	defer s.Stop()

	s.Report(5, running())
	a.none(t, 300*time.Millisecond) // first try failed; retried after a backoff
	if got := a.next(t); got != 5 {
		t.Fatalf("done %d, want 5", got)
	}
	got, _ := client.CoreV1().Pods("default").Get(context.Background(), "web", metav1.GetOptions{})
	if got.Status.Phase != corev1.PodRunning || len(got.Status.ContainerStatuses) != 2 {
		t.Fatalf("pod status not written: %+v", got.Status)
	}

	// The same report again writes nothing.
	mu.Lock()
	n := updates
	mu.Unlock()
	s.Report(6, running())
	if got := a.next(t); got != 6 {
		t.Fatalf("done %d", got)
	}
	mu.Lock()
	if updates != n {
		t.Errorf("an unchanged status was written again")
	}
	mu.Unlock()

	// Another node's pod, a stale UID, a missing pod: done, not written.
	stray := running()
	stray.Name, stray.UID = "other", "uid-2"
	stale := running()
	stale.UID = "uid-old"
	gone := running()
	gone.Name, gone.UID = "gone", "uid-3"
	for i, r := range []*wire.PodStatus{stray, stale, gone} {
		s.Report(uint64(7+i), r)
	}
	for range 3 {
		a.next(t)
	}
	o, _ := client.CoreV1().Pods("default").Get(context.Background(), "other", metav1.GetOptions{})
	if o.Status.Phase != corev1.PodPending {
		t.Errorf("another node's pod was written: %s", o.Status.Phase)
	}
}

// TestSessionCoalescesAndDeletes: a newer report of a pod replaces a
// queued one (whose seq is done); Terminated on a deleting pod deletes it
// with grace 0 and the UID precondition.
func TestSessionCoalescesAndDeletes(t *testing.T) {
	p := basePod()
	ts := metav1.NewTime(t0.Time)
	p.DeletionTimestamp = &ts
	client := fake.NewClientset(p)
	var deletes []metav1.DeleteOptions
	var mu sync.Mutex
	client.PrependReactor("delete", "pods", func(a ktesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		deletes = append(deletes, a.(ktesting.DeleteAction).GetDeleteOptions())
		mu.Unlock()
		return false, nil, nil
	})
	block, reading := make(chan struct{}), make(chan struct{}, 1)
	client.PrependReactor("get", "pods", func(ktesting.Action) (bool, runtime.Object, error) {
		select {
		case reading <- struct{}{}:
		default:
		}
		<-block
		return false, nil, nil
	})
	w, _ := NewWriter(WriterConfig{})
	a := newAcks()
	s := w.Start(context.Background(), SessionConfig{Node: "gw", Client: client, Done: a.done})
	defer s.Stop()

	s.Report(1, running()) // taken by the writer, which blocks on the read
	select {
	case <-reading:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer never read the pod")
	}
	r2 := running()
	s.Report(2, r2)
	r3 := running()
	r3.Phase, r3.Terminated = "Succeeded", true
	s.Report(3, r3) // replaces 2
	if got := a.next(t); got != 2 {
		t.Fatalf("done %d, want 2 (replaced)", got)
	}
	close(block)
	if got := a.next(t); got != 1 {
		t.Fatalf("done %d, want 1", got)
	}
	if got := a.next(t); got != 3 {
		t.Fatalf("done %d, want 3", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(deletes) != 1 || deletes[0].GracePeriodSeconds == nil || *deletes[0].GracePeriodSeconds != 0 ||
		deletes[0].Preconditions == nil || *deletes[0].Preconditions.UID != "uid-1" {
		t.Fatalf("deletes %+v", deletes)
	}
	if _, err := client.CoreV1().Pods("default").Get(context.Background(), "web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("pod still there: %v", err)
	}
}

// TestSessionInvalidIsDropped: a status the API server refuses is done
// (acked) rather than blocking every later ack.
func TestSessionInvalidIsDropped(t *testing.T) {
	client := fake.NewClientset(basePod())
	client.PrependReactor("update", "pods", func(ktesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewInvalid(schema.GroupKind{Kind: "Pod"}, "web", nil)
	})
	w, _ := NewWriter(WriterConfig{})
	a := newAcks()
	s := w.Start(context.Background(), SessionConfig{Node: "gw", Client: client, Done: a.done})
	defer s.Stop()
	s.Report(4, running())
	if got := a.next(t); got != 4 {
		t.Fatalf("done %d", got)
	}
}

// A pod the Node authorizer does not yet know bound to the node is
// Forbidden for a moment: the read is asked again before the report is
// dropped; one that stays Forbidden is dropped.
func TestWriteRetriesBriefForbidden(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for _, tt := range []struct {
			forbidden int // reads answered Forbidden
			want      Outcome
		}{{0, Written}, {2, Written}, {3, Written}, {4, Dropped}, {100, Dropped}} {
			client := fake.NewClientset(basePod())
			var mu sync.Mutex
			gets := 0
			client.PrependReactor("get", "pods", func(ktesting.Action) (bool, runtime.Object, error) {
				mu.Lock()
				defer mu.Unlock()
				if gets++; gets <= tt.forbidden {
					return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "web", errors.New("no relationship found"))
				}
				return false, nil, nil
			})
			w, _ := NewWriter(WriterConfig{})
			start := time.Now()
			got, err := w.Write(context.Background(), client, "gw", running())
			if got != tt.want {
				t.Errorf("%d Forbidden reads: outcome %v (%v), want %v", tt.forbidden, got, err, tt.want)
			}
			// Three pauses at most: 0.1 + 0.2 + 0.4 s.
			if d := time.Since(start); d > 700*time.Millisecond {
				t.Errorf("%d Forbidden reads: %v spent", tt.forbidden, d)
			}
		}
	})
}

func TestHookFailures(t *testing.T) {
	killed := func(name string, at metav1.Time, msg string) corev1.ContainerStatus {
		return corev1.ContainerStatus{Name: name, LastTerminationState: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "Error", Message: msg, FinishedAt: at}}}
	}
	post := wire.PostStartHookFailed + "Exec lifecycle hook ([false]) failed"
	pre := wire.PreStopHookFailed + "HTTP lifecycle hook (/drain) failed"
	prev := &corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{killed("app", t0, post)}}
	for _, tc := range []struct {
		name string
		next corev1.PodStatus
		want []HookFailure
	}{
		{"same failure again", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{killed("app", t0, post)}}, nil},
		{"a new failure", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{killed("app", now, post)}}, []HookFailure{{"app", "FailedPostStartHook"}}},
		{"a sidecar's", corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{killed("proxy", t0, post)}}, []HookFailure{{"proxy", "FailedPostStartHook"}}},
		{"a preStop's", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{killed("app", now, pre)}}, []HookFailure{{"app", "FailedPreStopHook"}}},
		{"another exit", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{killed("app", now, "Container app failed liveness probe")}}, nil},
	} {
		if got := HookFailures(prev, &tc.next); !slices.Equal(got, tc.want) {
			t.Errorf("%s: HookFailures = %v, want %v", tc.name, got, tc.want)
		}
	}
}
