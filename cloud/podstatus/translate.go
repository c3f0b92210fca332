// Package podstatus writes what agents report about their pods back to the
// API server, as a kubelet's status manager does: the pod's status
// subresource (phase, conditions, container states, IPs, start time), and,
// once every container of a deleting pod has stopped, the final delete
// with grace 0 and the pod's UID as precondition.
//
// Reports are durable on the agent (TypePodStatus, numbered by Frame.Seq)
// until acked; a Session acks a report only after its write succeeded, or
// after deciding it can never be written (a pod of another node, a stale
// UID, a status the API server refuses), so one bad report cannot hold back
// every later ack. Per connection, reports coalesce by pod UID (last wins)
// in a bounded queue; across connections a Writer bounds concurrent writes
// and their rate, so thousands of pods do not flood the API server.
package podstatus

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/wire"
)

// Status returns the status pod should have after the agent's report rep,
// computed at now. It starts from the stored status, so fields the agent
// does not own (qosClass, nominatedNodeName, resource claims, conditions
// of other writers such as DisruptionTarget or readiness gates) survive,
// and it keeps what a kubelet keeps:
//   - a terminal phase (Succeeded, Failed) is final;
//   - startTime, once set, never changes;
//   - a condition's lastTransitionTime moves only when its status changes;
//   - container statuses are kept only for containers of the spec, in the
//     spec's order.
func Status(rep *wire.PodStatus, pod *corev1.Pod, now metav1.Time) corev1.PodStatus {
	prev := &pod.Status
	st := *prev.DeepCopy()

	st.Phase = corev1.PodPhase(rep.Phase)
	if terminal(prev.Phase) && !terminal(st.Phase) {
		st.Phase = prev.Phase
	}
	st.Reason, st.Message = rep.Reason, rep.Message

	st.HostIP, st.HostIPs = rep.HostIP, nil
	if rep.HostIP != "" {
		st.HostIPs = []corev1.HostIP{{IP: rep.HostIP}}
	}
	st.PodIP, st.PodIPs = rep.PodIP, nil
	for _, ip := range rep.PodIPs {
		st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: ip})
	}
	if len(st.PodIPs) == 0 && rep.PodIP != "" {
		st.PodIPs = []corev1.PodIP{{IP: rep.PodIP}}
	}
	if st.StartTime == nil && rep.StartTime > 0 {
		t := metav1.Unix(rep.StartTime, 0)
		st.StartTime = &t
	}
	if st.QOSClass == "" {
		st.QOSClass = QOSClass(&pod.Spec)
	}

	st.Conditions = conditions(rep.Conditions, pod, now)
	st.InitContainerStatuses = containerStatuses(rep.InitContainers, pod.Spec.InitContainers, prev.InitContainerStatuses)
	st.ContainerStatuses = containerStatuses(rep.Containers, pod.Spec.Containers, prev.ContainerStatuses)
	ephemeral := make([]corev1.Container, len(pod.Spec.EphemeralContainers))
	for i := range pod.Spec.EphemeralContainers {
		ephemeral[i] = corev1.Container(pod.Spec.EphemeralContainers[i].EphemeralContainerCommon)
	}
	st.EphemeralContainerStatuses = containerStatuses(rep.EphemeralContainers, ephemeral, prev.EphemeralContainerStatuses)
	return st
}

func terminal(p corev1.PodPhase) bool { return p == corev1.PodSucceeded || p == corev1.PodFailed }

// conditions merges the agent's conditions over the stored ones. Ready is
// False while a readiness gate of the pod is not True, as the kubelet
// computes it.
func conditions(rep []wire.Condition, pod *corev1.Pod, now metav1.Time) []corev1.PodCondition {
	prev := pod.Status.Conditions
	out := slices.Clone(prev)
	for _, c := range rep {
		nc := corev1.PodCondition{
			Type:    corev1.PodConditionType(c.Type),
			Status:  corev1.ConditionStatus(c.Status),
			Reason:  c.Reason,
			Message: c.Message,
		}
		if nc.Type == corev1.PodReady && nc.Status == corev1.ConditionTrue {
			if gate := unreadyGate(pod); gate != "" {
				nc.Status, nc.Reason = corev1.ConditionFalse, "ReadinessGatesNotReady"
				nc.Message = "corresponding condition of pod readiness gate \"" + gate + "\" does not exist or is not True"
			}
		}
		i := slices.IndexFunc(out, func(p corev1.PodCondition) bool { return p.Type == nc.Type })
		if i >= 0 && out[i].Status == nc.Status && !out[i].LastTransitionTime.IsZero() {
			nc.LastTransitionTime = out[i].LastTransitionTime
			nc.LastProbeTime = out[i].LastProbeTime
		} else {
			nc.LastTransitionTime = now
		}
		if i >= 0 {
			out[i] = nc
		} else {
			out = append(out, nc)
		}
	}
	return out
}

func unreadyGate(pod *corev1.Pod) string {
	for _, g := range pod.Spec.ReadinessGates {
		ok := false
		for _, c := range pod.Status.Conditions {
			if c.Type == g.ConditionType {
				ok = c.Status == corev1.ConditionTrue
			}
		}
		if !ok {
			return string(g.ConditionType)
		}
	}
	return ""
}

// containerStatuses translates the agent's container statuses, in the
// order of spec, dropping names the spec does not have. A container the
// agent does not mention keeps its stored status.
func containerStatuses(rep []wire.ContainerStatus, spec []corev1.Container, prev []corev1.ContainerStatus) []corev1.ContainerStatus {
	if len(rep) == 0 && len(prev) == 0 {
		return nil
	}
	var out []corev1.ContainerStatus
	for _, c := range spec {
		if i := slices.IndexFunc(rep, func(r wire.ContainerStatus) bool { return r.Name == c.Name }); i >= 0 {
			out = append(out, ContainerStatus(&rep[i]))
			continue
		}
		if i := slices.IndexFunc(prev, func(p corev1.ContainerStatus) bool { return p.Name == c.Name }); i >= 0 {
			out = append(out, prev[i])
		}
	}
	return out
}

// ContainerStatus translates one container's status.
func ContainerStatus(r *wire.ContainerStatus) corev1.ContainerStatus {
	started := r.Started
	return corev1.ContainerStatus{
		Name:                 r.Name,
		Image:                r.Image,
		ImageID:              r.ImageID,
		ContainerID:          r.ContainerID,
		Ready:                r.Ready,
		Started:              &started,
		RestartCount:         r.RestartCount,
		State:                state(&r.State, r.ContainerID),
		LastTerminationState: state(&r.LastState, ""),
	}
}

func state(s *wire.ContainerState, id string) corev1.ContainerState {
	switch s.Kind {
	case wire.StateWaiting:
		return corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: s.Reason, Message: s.Message}}
	case wire.StateRunning:
		return corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: msTime(s.StartedAt)}}
	case wire.StateTerminated:
		return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: s.ExitCode, Signal: s.Signal, Reason: s.Reason, Message: s.Message,
			StartedAt: msTime(s.StartedAt), FinishedAt: msTime(s.FinishedAt), ContainerID: id,
		}}
	}
	return corev1.ContainerState{}
}

func msTime(ms int64) metav1.Time {
	if ms <= 0 {
		return metav1.Time{}
	}
	return metav1.NewTime(timeFromMillis(ms))
}

// QOSClass computes a pod's QoS class as the kubelet's qos package does
// (the API server sets it at create; this is for pods that lack it):
// BestEffort without requests or limits for cpu and memory, Guaranteed
// when every container limits cpu and memory and requests equal limits,
// Burstable otherwise.
func QOSClass(spec *corev1.PodSpec) corev1.PodQOSClass {
	requests, limits := corev1.ResourceList{}, corev1.ResourceList{}
	guaranteed := true
	for _, c := range append(slices.Clone(spec.Containers), spec.InitContainers...) {
		for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, hasReq := c.Resources.Requests[name]
			lim, hasLim := c.Resources.Limits[name]
			if hasReq && !req.IsZero() {
				add(requests, name, req)
			}
			if hasLim && !lim.IsZero() {
				add(limits, name, lim)
			} else {
				guaranteed = false
			}
			if hasReq && hasLim && req.Cmp(lim) != 0 {
				guaranteed = false
			}
		}
	}
	if len(requests) == 0 && len(limits) == 0 {
		return corev1.PodQOSBestEffort
	}
	if guaranteed && len(limits) == 2 {
		return corev1.PodQOSGuaranteed
	}
	return corev1.PodQOSBurstable
}

func add(l corev1.ResourceList, name corev1.ResourceName, q resource.Quantity) {
	cur := l[name]
	cur.Add(q)
	l[name] = cur
}
