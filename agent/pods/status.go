package pods

import (
	"fmt"
	"strings"

	"outpost.dev/agent/runtime/containerd"
	"outpost.dev/wire"
)

// status computes the pod's status from its containers, as a kubelet does.
func (w *worker) status(o *wire.Object, recs map[string][]*rec, deleting bool) *wire.PodStatus {
	pod := o.Pod
	st := &wire.PodStatus{UID: o.UID, Namespace: o.Namespace, Name: o.Name,
		HostIP: w.r.getHostIP(), PodIP: w.podIP(pod), PodIPs: w.podIPs(pod), StartTime: w.startTime}
	initDone, initFailed := true, false
	initialized := isInitialized(pod, recs)
	var notInit, notReady []string
	for i := range pod.InitContainers {
		c := &pod.InitContainers[i]
		cs := w.containerStatus(c, recs, true, initDone)
		st.InitContainers = append(st.InitContainers, cs)
		x := latest(recs, c.Name)
		if c.Sidecar {
			// A sidecar counts in the pod's readiness like a regular
			// container, and has done its part of initialization once
			// started.
			if !cs.Ready {
				notReady = append(notReady, c.Name)
			}
			if initialized || w.started(c, x) {
				continue
			}
		} else if initialized || (x != nil && x.exited() && x.exitCode == 0) {
			continue
		}
		if initDone && !c.Sidecar && x != nil && x.exited() && pod.RestartPolicy == "Never" {
			initFailed = true
		}
		initDone = false
		notInit = append(notInit, c.Name)
	}
	var pending, running, stopped, succeeded int
	for i := range pod.Containers {
		c := &pod.Containers[i]
		cs := w.containerStatus(c, recs, false, initDone)
		st.Containers = append(st.Containers, cs)
		if !cs.Ready {
			notReady = append(notReady, c.Name)
		}
		x := latest(recs, c.Name)
		switch {
		case x != nil && x.state == containerd.StateCreated && len(recs[c.Name]) > 1:
			// Restarting: counted by the attempt before, as a kubelet
			// counts a waiting container that has terminated before.
			stopped++
			if prev := recs[c.Name][1]; prev.exited() && prev.exitCode == 0 {
				succeeded++
			}
		case x == nil || x.state == containerd.StateCreated:
			pending++
		case x.running():
			running++
		default:
			stopped++
			if x.exitCode == 0 {
				succeeded++
			}
		}
	}
	for i := range pod.EphemeralContainers {
		cs := w.containerStatus(&pod.EphemeralContainers[i].Container, recs, false, true)
		cs.Ready = false // as a kubelet reports them
		st.EphemeralContainers = append(st.EphemeralContainers, cs)
	}
	switch {
	case initFailed:
		st.Phase = "Failed"
	case !initDone:
		st.Phase = "Pending"
	case pending > 0:
		st.Phase = "Pending" // a container has not started yet, as a kubelet says
	case running > 0:
		st.Phase = "Running"
	case pod.RestartPolicy == "Always":
		st.Phase = "Running"
	case stopped == succeeded:
		st.Phase = "Succeeded"
	case pod.RestartPolicy == "Never":
		st.Phase = "Failed"
	default:
		st.Phase = "Running" // OnFailure: restarting
	}
	if w.exceeded {
		st.Phase, st.Reason, st.Message = "Failed", "DeadlineExceeded", "Pod was active on the node longer than the specified deadline"
	}
	if pod.Finished != "" {
		st.Phase = pod.Finished // final in the API (reported while it is deleted)
	}
	cond := func(t string, ok bool, reason, msg string) wire.Condition {
		if ok {
			return wire.Condition{Type: t, Status: "True"}
		}
		return wire.Condition{Type: t, Status: "False", Reason: reason, Message: msg}
	}
	ready := len(notReady) == 0 && st.Phase == "Running"
	readyMsg := fmt.Sprintf("containers with unready status: [%s]", strings.Join(notReady, " ")) + w.probeNotes(recs, notReady)
	initReason := "ContainersNotInitialized"
	if st.Phase == "Succeeded" || st.Phase == "Failed" {
		readyReason := "PodCompleted"
		st.Conditions = []wire.Condition{
			{Type: "PodScheduled", Status: "True"},
			cond("Initialized", initDone, initReason, fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(notInit, " "))),
			cond("ContainersReady", false, readyReason, ""),
			cond("Ready", false, readyReason, ""),
		}
	} else {
		st.Conditions = []wire.Condition{
			{Type: "PodScheduled", Status: "True"},
			cond("Initialized", initDone, initReason, fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(notInit, " "))),
			cond("ContainersReady", ready, "ContainersNotReady", readyMsg),
			cond("Ready", ready, "ContainersNotReady", readyMsg),
		}
	}
	if deleting {
		st.Terminated = running == 0
		for _, xs := range recs {
			for _, x := range xs {
				if x.running() {
					st.Terminated = false
				}
			}
		}
	}
	return st
}

func ms(t interface{ UnixMilli() int64 }) int64 { return t.UnixMilli() }

// containerStatus is one container's status.
func (w *worker) containerStatus(c *wire.Container, recs map[string][]*rec, init, initDone bool) wire.ContainerStatus {
	cs := wire.ContainerStatus{Name: c.Name, Image: c.Image}
	override, hasOverride := w.waiting[c.Name]
	xs := recs[c.Name]
	if len(xs) == 0 {
		switch {
		case hasOverride:
			cs.State = override
		case !init && !initDone:
			cs.State = wire.ContainerState{Kind: wire.StateWaiting, Reason: "PodInitializing"}
		default:
			cs.State = wire.ContainerState{Kind: wire.StateWaiting, Reason: "ContainerCreating"}
		}
		return cs
	}
	x := xs[0]
	cs.RestartCount = int32(x.attempt)
	cs.ContainerID = "containerd://" + x.c.ID
	cs.ImageID = x.c.Labels[labelImageID]
	terminated := func(x *rec) wire.ContainerState {
		s := wire.ContainerState{Kind: wire.StateTerminated, ExitCode: x.exitCode, Reason: "Completed"}
		switch {
		case x.lost:
			s.Reason, s.Message = "Unknown", "the container's task was gone when the agent looked (the gateway restarted?)"
		case x.oom:
			s.Reason = "OOMKilled"
		case x.exitCode != 0:
			s.Reason = "Error"
		}
		if m := x.c.Labels[labelProbeKill]; m != "" && !x.lost {
			s.Message = m
		}
		if !x.startedAt.IsZero() {
			s.StartedAt = ms(x.startedAt)
		}
		if !x.finishedAt.IsZero() {
			s.FinishedAt = ms(x.finishedAt)
		}
		return s
	}
	switch {
	case x.running():
		cs.State = wire.ContainerState{Kind: wire.StateRunning, StartedAt: ms(x.startedAt)}
		ps := w.probes[x.c.ID]
		switch {
		case ps != nil:
			cs.Started, cs.Ready = ps.started, ps.started && ps.ready
		default:
			cs.Started = c.StartupProbe == nil
			cs.Ready = cs.Started && c.ReadinessProbe == nil
		}
		if init && !c.Sidecar {
			cs.Ready = false
		}
	case x.exited():
		if hasOverride {
			cs.State, cs.LastState = override, terminated(x)
		} else {
			cs.State = terminated(x)
			if init && !c.Sidecar && x.exitCode == 0 {
				cs.Ready = true
			}
		}
	default:
		if hasOverride {
			cs.State = override
		} else {
			cs.State = wire.ContainerState{Kind: wire.StateWaiting, Reason: "ContainerCreating"}
		}
	}
	if cs.LastState.Kind == 0 && len(xs) > 1 && xs[1].exited() {
		cs.LastState = terminated(xs[1])
	}
	return cs
}
