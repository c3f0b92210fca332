package nodes

import (
	"encoding/json"
	"errors"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// A status write is a strategic merge patch of the Node's status
// subresource, as the kubelet makes it: it carries only what the relay
// owns, so whatever else is in the status (images, volumes, conditions
// other writers add) stays as stored, and no resourceVersion, so a write
// by someone else meanwhile is no conflict. It carries the Node's UID,
// which may not change: a Node deleted and created again under the same
// name since the relay last wrote it refuses the patch (see uidChanged).
//
// What it sets: each condition Status builds, merged by type (a condition
// of another type stays); the addresses, capacity and allocatable whole
// (replaced, not merged: strategic merge by address type would keep an
// address removed, or lose one of two of the same type; a resource no
// longer reported goes); the node info; and the kubelet endpoint when
// PointKubelet set one. A condition's lastTransitionTime is written only
// when its status differs from the stored one (or there is none);
// otherwise the stored time stays.

// condState is what a session keeps of one condition of the Node as
// stored after its last write: its type and status, interned.
type condState struct {
	Type   corev1.NodeConditionType
	Status corev1.ConditionStatus
}

// nodeState is what a session keeps of the Node between writes: its UID,
// for the patch's precondition and the Lease's owner, and its conditions'
// types and statuses, to tell which ones a write changes.
type nodeState struct {
	uid   types.UID
	conds []condState
}

// stateOf is what a session keeps of n, as returned by a write.
func stateOf(n *corev1.Node) *nodeState {
	s := &nodeState{uid: n.UID, conds: make([]condState, len(n.Status.Conditions))}
	for i, c := range n.Status.Conditions {
		s.conds[i] = condState{Type: intern(c.Type), Status: intern(c.Status)}
	}
	return s
}

// status is the stored status of the condition of type t, or "".
func (s *nodeState) status(t corev1.NodeConditionType) corev1.ConditionStatus {
	for _, c := range s.conds {
		if c.Type == t {
			return c.Status
		}
	}
	return ""
}

// statusPatch is the body of a status write.
type statusPatch struct {
	Metadata struct {
		UID types.UID `json:"uid"`
	} `json:"metadata"`
	Status struct {
		Conditions      []patchCondition            `json:"conditions"`
		Addresses       []any                       `json:"addresses"`
		Capacity        map[string]any              `json:"capacity"`
		Allocatable     map[string]any              `json:"allocatable"`
		NodeInfo        corev1.NodeSystemInfo       `json:"nodeInfo"`
		DaemonEndpoints *corev1.NodeDaemonEndpoints `json:"daemonEndpoints,omitempty"`
	} `json:"status"`
}

// patchCondition is a NodeCondition whose transition time may be left
// out (a zero metav1.Time would be written as null, which deletes it).
type patchCondition struct {
	Type               corev1.NodeConditionType `json:"type"`
	Status             corev1.ConditionStatus   `json:"status"`
	LastHeartbeatTime  metav1.Time              `json:"lastHeartbeatTime"`
	LastTransitionTime *metav1.Time             `json:"lastTransitionTime,omitempty"`
	Reason             string                   `json:"reason,omitempty"`
	Message            string                   `json:"message,omitempty"`
}

// replace is the strategic merge patch directive that replaces a list or
// map as a whole.
var replace = map[string]string{"$patch": "replace"}

// statusPatchFor is the status write for st (built by Status and
// PointKubelet) onto the Node prev says is stored.
func statusPatchFor(now metav1.Time, prev *nodeState, st *corev1.NodeStatus) ([]byte, error) {
	var p statusPatch
	p.Metadata.UID = prev.uid
	for _, c := range st.Conditions {
		pc := patchCondition{Type: c.Type, Status: c.Status, LastHeartbeatTime: now, Reason: c.Reason, Message: c.Message}
		if prev.status(c.Type) != c.Status {
			pc.LastTransitionTime = &now
		}
		p.Status.Conditions = append(p.Status.Conditions, pc)
	}
	p.Status.Addresses = make([]any, 0, len(st.Addresses)+1)
	for _, a := range st.Addresses {
		p.Status.Addresses = append(p.Status.Addresses, a)
	}
	p.Status.Addresses = append(p.Status.Addresses, replace)
	p.Status.Capacity = replaceList(st.Capacity)
	p.Status.Allocatable = replaceList(st.Allocatable)
	p.Status.NodeInfo = st.NodeInfo
	if st.DaemonEndpoints.KubeletEndpoint.Port != 0 {
		p.Status.DaemonEndpoints = &st.DaemonEndpoints
	}
	return json.Marshal(&p)
}

// replaceList is l as a map that replaces the stored one whole.
func replaceList(l corev1.ResourceList) map[string]any {
	m := make(map[string]any, len(l)+1)
	for k, v := range l {
		m[string(k)] = v
	}
	m["$patch"] = "replace"
	return m
}

// uidChanged reports whether err is the API server's refusal of a status
// patch whose UID is not the stored Node's: the Node was deleted and
// created again since.
func uidChanged(err error) bool {
	var st apierrors.APIStatus
	if !apierrors.IsInvalid(err) || !errors.As(err, &st) || st.Status().Details == nil {
		return false
	}
	for _, c := range st.Status().Details.Causes {
		if c.Field == "metadata.uid" {
			return true
		}
	}
	return false
}
