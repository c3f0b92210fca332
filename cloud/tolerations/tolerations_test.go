package tolerations

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"outpost.dev/cloud/asnode"
	"outpost.dev/cloud/nodes"
	"outpost.dev/test/wait"
)

func secs(n int64) *int64 { return &n }

// defaults are what the DefaultTolerationSeconds admission plugin adds.
func defaults(n int64) []corev1.Toleration {
	return []corev1.Toleration{
		{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: secs(n)},
		{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: secs(n)},
	}
}

func forever() []corev1.Toleration {
	t := defaults(0)
	t[0].TolerationSeconds, t[1].TolerationSeconds = nil, nil
	return t
}

func pod(tols []corev1.Toleration, ann map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", ResourceVersion: "42", Annotations: ann},
		Spec:       corev1.PodSpec{NodeName: "gw-1", Tolerations: tols},
	}
}

type patched struct {
	Metadata struct {
		ResourceVersion string             `json:"resourceVersion"`
		Annotations     map[string]*string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		Tolerations []corev1.Toleration `json:"tolerations"`
	} `json:"spec"`
}

func TestPlan(t *testing.T) {
	rec := "node.kubernetes.io/not-ready=300,node.kubernetes.io/unreachable=300"
	other := corev1.Toleration{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "edge", Effect: corev1.TaintEffectNoExecute, TolerationSeconds: secs(60)}
	noSchedule := corev1.Toleration{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}
	wildcard := corev1.Toleration{Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: secs(30)}
	terminating := pod(defaults(300), nil)
	terminating.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	done := pod(defaults(300), nil)
	done.Status.Phase = corev1.PodSucceeded

	tests := []struct {
		name       string
		pod        *corev1.Pod
		nodeOptOut bool
		action     string // "" means no patch
		want       []corev1.Toleration
		annotation *string // nil: not in the patch; "" removed
	}{
		{name: "defaults become forever", pod: pod(defaults(300), nil), action: "keep", want: forever(), annotation: &rec},
		{name: "already forever", pod: pod(forever(), map[string]string{Original: rec})},
		{name: "no tolerations at all", pod: pod(nil, nil)},
		{name: "other tolerations untouched", pod: pod(append([]corev1.Toleration{other, noSchedule}, defaults(300)...), nil),
			action: "keep", want: append([]corev1.Toleration{other, noSchedule}, forever()...), annotation: &rec},
		{name: "a wildcard NoExecute toleration matches first, so it goes too", pod: pod(append([]corev1.Toleration{wildcard}, defaults(300)...), nil),
			action: "keep", want: append([]corev1.Toleration{{Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute}}, forever()...),
			annotation: ptr("*=30," + rec)},
		{name: "Equal with no value matches the taint", pod: pod([]corev1.Toleration{{Key: corev1.TaintNodeUnreachable, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: secs(5)}}, nil),
			action: "keep", want: []corev1.Toleration{{Key: corev1.TaintNodeUnreachable, Effect: corev1.TaintEffectNoExecute}}, annotation: ptr("node.kubernetes.io/unreachable=5")},
		{name: "pod opted out", pod: pod(defaults(300), map[string]string{OptOut: "true"})},
		{name: "node opted out", pod: pod(defaults(300), nil), nodeOptOut: true},
		{name: "opted out later: seconds restored", pod: pod(forever(), map[string]string{OptOut: "true", Original: rec}),
			action: "restore", want: defaults(300), annotation: ptr("")},
		{name: "node opted out later", pod: pod(append(forever(), other), map[string]string{Original: "node.kubernetes.io/not-ready=120,node.kubernetes.io/unreachable=300"}),
			nodeOptOut: true, action: "restore",
			want: append([]corev1.Toleration{defaults(120)[0], defaults(300)[1]}, other), annotation: ptr("")},
		{name: "opt-out value other than true is ignored", pod: pod(defaults(300), map[string]string{OptOut: "yes"}), action: "keep", want: forever(), annotation: &rec},
		{name: "terminating pod left alone", pod: terminating},
		{name: "finished pod left alone", pod: done},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, action := Plan(tt.pod, tt.nodeOptOut)
			if action != tt.action {
				t.Fatalf("action %q, want %q (patch %s)", action, tt.action, b)
			}
			if tt.action == "" {
				if b != nil {
					t.Fatalf("patch %s", b)
				}
				return
			}
			var p patched
			if err := json.Unmarshal(b, &p); err != nil {
				t.Fatal(err)
			}
			if p.Metadata.ResourceVersion != "42" {
				t.Errorf("resourceVersion %q: the patch must apply to the version looked at only", p.Metadata.ResourceVersion)
			}
			if got, want := fmt.Sprint(tolStrings(p.Spec.Tolerations)), fmt.Sprint(tolStrings(tt.want)); got != want {
				t.Errorf("tolerations\n got %s\nwant %s", got, want)
			}
			a, in := p.Metadata.Annotations[Original]
			switch {
			case tt.annotation == nil && in:
				t.Errorf("annotation in patch: %v", a)
			case tt.annotation != nil && *tt.annotation == "" && (!in || a != nil):
				t.Errorf("annotation not removed: %s", b)
			case tt.annotation != nil && *tt.annotation != "" && (a == nil || *a != *tt.annotation):
				t.Errorf("annotation %v, want %q", a, *tt.annotation)
			}
		})
	}
}

func ptr(s string) *string { return &s }

func tolStrings(ts []corev1.Toleration) []string {
	var out []string
	for _, t := range ts {
		s := "forever"
		if t.TolerationSeconds != nil {
			s = fmt.Sprint(*t.TolerationSeconds)
		}
		out = append(out, fmt.Sprintf("%s/%s/%s/%s/%s", t.Key, t.Operator, t.Value, t.Effect, s))
	}
	return out
}

func TestControllerKeepsAndRestores(t *testing.T) {
	synctest.Test(t, testControllerKeepsAndRestores)
}

func testControllerKeepsAndRestores(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	edge := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gw-1", Labels: map[string]string{EdgeRoleLabel: ""}}}
	kubelet := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker"}}
	onEdge := pod(defaults(300), nil)
	optedOut := pod(defaults(300), map[string]string{OptOut: "true"})
	optedOut.Name = "q"
	onWorker := pod(defaults(300), nil)
	onWorker.Name, onWorker.Spec.NodeName = "w", "worker"
	client := fake.NewClientset(edge, kubelet, onEdge, optedOut, onWorker)
	c, err := New(Config{Client: client, AsNode: asnode.Same{C: client}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()

	get := func(name string) *corev1.Pod {
		p, err := client.CoreV1().Pods("ns").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	eventually(t, "edge pod tolerates forever", func() bool {
		return fmt.Sprint(tolStrings(get("p").Spec.Tolerations)) == fmt.Sprint(tolStrings(forever()))
	})
	if got := get("p").Annotations[Original]; got == "" {
		t.Error("no record of the seconds removed")
	}
	// A pod bound while the node is offline is seen as it is created.
	late := pod(defaults(300), nil)
	late.Name = "late"
	if _, err := client.CoreV1().Pods("ns").Create(ctx, late, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "late pod tolerates forever", func() bool { return get("late").Spec.Tolerations[0].TolerationSeconds == nil })

	synctest.Wait() // the queue is empty and every worker idle: nothing else will change
	if s := get("q").Spec.Tolerations[0].TolerationSeconds; s == nil || *s != 300 {
		t.Error("opted-out pod changed")
	}
	if s := get("w").Spec.Tolerations[0].TolerationSeconds; s == nil || *s != 300 {
		t.Error("kubelet node's pod changed")
	}

	// The node opts out: its pods get their seconds back.
	n, _ := client.CoreV1().Nodes().Get(ctx, "gw-1", metav1.GetOptions{})
	n.Labels[OptOut] = "true"
	if _, err := client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "seconds restored", func() bool {
		p := get("p")
		s := p.Spec.Tolerations[1].TolerationSeconds
		return s != nil && *s == 300 && p.Annotations[Original] == ""
	})
	if got := c.Nodes(); fmt.Sprint(got) != "[gw-1]" {
		t.Errorf("watched nodes %v", got)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
}

// TestControllerWatchesOnlyOfflineNodes: a connected, Ready edge node's
// pods are left alone (no watch: nothing will taint it); when its agent
// disconnects they are patched, and when it is back the watch stops.
func TestControllerWatchesOnlyOfflineNodes(t *testing.T) {
	synctest.Test(t, testControllerWatchesOnlyOfflineNodes)
}

func testControllerWatchesOnlyOfflineNodes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conds := func(link, ready corev1.ConditionStatus) []corev1.NodeCondition {
		return []corev1.NodeCondition{{Type: nodes.ConditionLinkReady, Status: link}, {Type: corev1.NodeReady, Status: ready}}
	}
	edge := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gw-1", Labels: map[string]string{EdgeRoleLabel: ""}},
		Status: corev1.NodeStatus{Conditions: conds(corev1.ConditionTrue, corev1.ConditionTrue)}}
	client := fake.NewClientset(edge, pod(defaults(300), nil))
	c, err := New(Config{Client: client, AsNode: asnode.Same{C: client}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	get := func() *corev1.Pod {
		p, err := client.CoreV1().Pods("ns").Get(ctx, "p", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	setConds := func(link, ready corev1.ConditionStatus) {
		n, _ := client.CoreV1().Nodes().Get(ctx, "gw-1", metav1.GetOptions{})
		n.Status.Conditions = conds(link, ready)
		if _, err := client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	synctest.Wait() // the node's informer delivered it and the controller is idle
	if got := c.Nodes(); len(got) != 0 {
		t.Errorf("online node watched: %v", got)
	}
	if s := get().Spec.Tolerations[0].TolerationSeconds; s == nil || *s != 300 {
		t.Error("online node's pod patched")
	}
	setConds(corev1.ConditionFalse, corev1.ConditionTrue) // the agent disconnected
	eventually(t, "pod tolerates forever once its node is offline", func() bool {
		return fmt.Sprint(tolStrings(get().Spec.Tolerations)) == fmt.Sprint(tolStrings(forever()))
	})
	setConds(corev1.ConditionTrue, corev1.ConditionTrue)
	eventually(t, "watch stopped once the node is back", func() bool { return len(c.Nodes()) == 0 })
	if s := get().Spec.Tolerations[0].TolerationSeconds; s != nil {
		t.Error("tolerations reverted on reconnect")
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	wait.For(t, 10*time.Second, what, cond)
}
