package podstatus

import (
	"context"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/cloud/asnode"
	"outpost.dev/wire"
)

// HookFailure is a container's lifecycle hook failure, as an event: Reason
// is FailedPostStartHook or FailedPreStopHook.
type HookFailure struct {
	Container, Reason string
}

// hookReasons maps the agent's terminated-state message prefixes to the
// kubelet's event reasons and messages (without the hook's output, which
// may hold secrets).
var hookReasons = []struct{ prefix, reason, message string }{
	{wire.PostStartHookFailed, "FailedPostStartHook", "PostStartHook failed"},
	{wire.PreStopHookFailed, "FailedPreStopHook", "PreStopHook failed"},
}

// HookFailures lists the hook failures that next newly shows compared
// with prev: a terminated state (current or last) whose message begins
// with wire.PostStartHookFailed or wire.PreStopHookFailed, finished at a
// time prev does not show for that container. A kubelet records an event
// for each; the agent's report is where the relay learns of one.
func HookFailures(prev, next *corev1.PodStatus) []HookFailure {
	seen := map[string]bool{}
	for _, cs := range [][]corev1.ContainerStatus{prev.InitContainerStatuses, prev.ContainerStatuses} {
		for i := range cs {
			for _, k := range hookKills(&cs[i]) {
				seen[cs[i].Name+"|"+k.reason+"|"+k.at.String()] = true
			}
		}
	}
	var out []HookFailure
	for _, cs := range [][]corev1.ContainerStatus{next.InitContainerStatuses, next.ContainerStatuses} {
		for i := range cs {
			for _, k := range hookKills(&cs[i]) {
				if !seen[cs[i].Name+"|"+k.reason+"|"+k.at.String()] {
					out = append(out, HookFailure{Container: cs[i].Name, Reason: k.reason})
					break
				}
			}
		}
	}
	return out
}

type hookKill struct {
	reason string
	at     metav1.Time
}

// hookKills are c's terminated states that a failed hook marked.
func hookKills(c *corev1.ContainerStatus) []hookKill {
	var out []hookKill
	for _, s := range []*corev1.ContainerStateTerminated{c.State.Terminated, c.LastTerminationState.Terminated} {
		if s == nil {
			continue
		}
		for _, h := range hookReasons {
			if strings.HasPrefix(s.Message, h.prefix) {
				out = append(out, hookKill{h.reason, s.FinishedAt})
			}
		}
	}
	return out
}

// hookEvents records a Warning event on pod for each hook failure, with
// the kubelet's reason and message. Events are a courtesy: a failure to
// record one is logged, not retried.
func (w *Writer) hookEvents(ctx context.Context, as asnode.Client, node string, pod *corev1.Pod, fails []HookFailure) {
	for _, f := range fails {
		field := "spec.containers{" + f.Container + "}"
		for _, c := range pod.Spec.InitContainers {
			if c.Name == f.Container {
				field = "spec.initContainers{" + f.Container + "}"
			}
		}
		msg := ""
		for _, h := range hookReasons {
			if h.reason == f.Reason {
				msg = h.message
			}
		}
		now := metav1.NewTime(w.cfg.Now())
		_, err := as.CoreV1().Events(pod.Namespace).Create(ctx, &corev1.Event{
			ObjectMeta: metav1.ObjectMeta{GenerateName: pod.Name + ".", Namespace: pod.Namespace},
			InvolvedObject: corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name,
				UID: pod.UID, ResourceVersion: pod.ResourceVersion, FieldPath: field},
			Reason: f.Reason, Message: msg, Type: corev1.EventTypeWarning,
			Source:         corev1.EventSource{Component: FieldManager, Host: node},
			FirstTimestamp: now, LastTimestamp: now, Count: 1,
		}, metav1.CreateOptions{})
		if err != nil && w.cfg.Log != nil {
			w.cfg.Log.Warn("recording a lifecycle hook event", "pod", pod.Namespace+"/"+pod.Name, "container", f.Container, "reason", f.Reason, "err", err)
		}
	}
}
