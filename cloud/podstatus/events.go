package podstatus

import (
	"context"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/cloud/asnode"
	"outpost.dev/wire"
)

// HookFailures names the containers that newly show a postStart hook
// failure in next compared with prev: a terminated state (current or
// last) whose message begins with wire.PostStartHookFailed, finished at a
// time prev does not show for that container. A kubelet records a
// FailedPostStartHook event for each; the agent's report is where the
// relay learns of one.
func HookFailures(prev, next *corev1.PodStatus) []string {
	seen := map[string]bool{}
	for _, cs := range [][]corev1.ContainerStatus{prev.InitContainerStatuses, prev.ContainerStatuses} {
		for i := range cs {
			for _, t := range hookKills(&cs[i]) {
				seen[cs[i].Name+"|"+t.String()] = true
			}
		}
	}
	var out []string
	for _, cs := range [][]corev1.ContainerStatus{next.InitContainerStatuses, next.ContainerStatuses} {
		for i := range cs {
			for _, t := range hookKills(&cs[i]) {
				if !seen[cs[i].Name+"|"+t.String()] {
					out = append(out, cs[i].Name)
					break
				}
			}
		}
	}
	return out
}

// hookKills are the finish times of c's terminated states that a failed
// postStart hook ended.
func hookKills(c *corev1.ContainerStatus) []metav1.Time {
	var out []metav1.Time
	for _, s := range []*corev1.ContainerStateTerminated{c.State.Terminated, c.LastTerminationState.Terminated} {
		if s != nil && strings.HasPrefix(s.Message, wire.PostStartHookFailed) {
			out = append(out, s.FinishedAt)
		}
	}
	return out
}

// hookEvents records a Warning FailedPostStartHook event on pod for each
// container named, as the kubelet does ("PostStartHook failed", without
// the hook's output, which may hold secrets). Events are a courtesy: a
// failure is logged, not retried.
func (w *Writer) hookEvents(ctx context.Context, as asnode.Client, node string, pod *corev1.Pod, names []string) {
	for _, name := range names {
		field := "spec.containers{" + name + "}"
		for _, c := range pod.Spec.InitContainers {
			if c.Name == name {
				field = "spec.initContainers{" + name + "}"
			}
		}
		now := metav1.NewTime(w.cfg.Now())
		_, err := as.CoreV1().Events(pod.Namespace).Create(ctx, &corev1.Event{
			ObjectMeta: metav1.ObjectMeta{GenerateName: pod.Name + ".", Namespace: pod.Namespace},
			InvolvedObject: corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name,
				UID: pod.UID, ResourceVersion: pod.ResourceVersion, FieldPath: field},
			Reason: "FailedPostStartHook", Message: "PostStartHook failed", Type: corev1.EventTypeWarning,
			Source:         corev1.EventSource{Component: FieldManager, Host: node},
			FirstTimestamp: now, LastTimestamp: now, Count: 1,
		}, metav1.CreateOptions{})
		if err != nil && w.cfg.Log != nil {
			w.cfg.Log.Warn("recording a FailedPostStartHook event", "pod", pod.Namespace+"/"+pod.Name, "container", name, "err", err)
		}
	}
}
