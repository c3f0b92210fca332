// Package nodes owns the Kubernetes objects that say an edge node exists and
// is alive: the Node (labels, capacity, node info, addresses, conditions)
// and its Lease in kube-node-lease.
//
// It translates what an agent reports into those objects and writes them
// through client-go. A Session makes the writes for one agent connection
// off the connection's read loop, so a slow API server never stalls it,
// and renews the Lease while the connection is alive; it has no goroutine
// of its own (a timer or a report queues it for the Writer's few workers,
// see Writer). On
// disconnect it sets the EdgeLinkReady condition False (unless a newer
// connection wrote since) and stops renewing: the node lifecycle
// controller marks the node Unknown after its grace period, and an agent
// that reconnects meanwhile (to this or another relay replica) keeps its
// node Ready.
package nodes

import (
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"outpost.dev/wire"
)

// Labels the relay sets on every edge Node.
const (
	// EdgeRoleLabel marks a Node as an Outpost edge node. The relay writes
	// only Nodes that carry it, so it never takes over a kubelet's Node.
	EdgeRoleLabel = "node-role.kubernetes.io/edge"
	// BoardLabel is the board definition the agent runs with.
	BoardLabel = "outpost.dev/board"
	// LeaseNamespace holds node heartbeats, as for kubelets.
	LeaseNamespace = corev1.NamespaceNodeLease
)

// Condition reasons and messages the relay writes.
const (
	ReasonReady  = "OutpostAgentReady"
	MessageReady = "outpost agent connected"
)

// ErrNotEdge is returned when a Node of the agent's name exists but is not
// an Outpost edge node. It is permanent: retrying cannot fix it.
var ErrNotEdge = errors.New("node exists and is not an Outpost edge node")

// Report is what an agent says about its node, from a Hello or a
// NodeStatus.
type Report struct {
	AgentVersion string
	Info         wire.NodeInfo
	Conditions   []wire.Condition
	// Link is the agent's outbox and link figures (NodeStatus only).
	Link *wire.LinkStats
	// Session names the connection, in the EdgeLinkReady condition, so a
	// connection that ends marks the node disconnected only if no newer
	// connection wrote since.
	Session string
	// KubeletPort, if set, is the port this replica serves this node's
	// kubelet API on alone; it replaces WriterConfig.KubeletPort.
	KubeletPort int32
}

// CheckName reports whether name can be an edge node's name: a DNS-1123
// subdomain, as every Node name, and at most 63 characters, since it is
// also the node's kubernetes.io/hostname label.
func CheckName(name string) error {
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("node name %q is not valid: %s", name, strings.Join(errs, "; "))
	}
	if len(name) > validation.LabelValueMaxLength {
		return fmt.Errorf("node name %q is %d characters: at most %d, since it is also the kubernetes.io/hostname label",
			name, len(name), validation.LabelValueMaxLength)
	}
	return nil
}

// IsEdge reports whether node is an Outpost edge node.
func IsEdge(node *corev1.Node) bool {
	_, ok := node.Labels[EdgeRoleLabel]
	return ok
}

// CheckInfo reports agent facts that cannot go into a Node: the values that
// become labels must be valid label values. The relay checks before
// writing so the agent hears why, instead of the API server refusing every
// write.
func CheckInfo(info *wire.NodeInfo) error {
	for _, l := range []struct{ what, v string }{
		{"arch", info.Arch}, {"os", info.OS}, {"board", info.Board},
	} {
		if errs := validation.IsValidLabelValue(l.v); len(errs) > 0 {
			return fmt.Errorf("node %s %q is not a valid label value: %s", l.what, l.v, strings.Join(errs, "; "))
		}
	}
	return nil
}

// Labels returns the labels the relay owns on node name.
func Labels(name string, info *wire.NodeInfo) map[string]string {
	return map[string]string{
		EdgeRoleLabel:          "",
		corev1.LabelArchStable: info.Arch,
		corev1.LabelOSStable:   info.OS,
		corev1.LabelHostname:   name,
		BoardLabel:             info.Board,
	}
}

// addressTypes are the node address types Kubernetes knows; others an
// agent sends are dropped.
var addressTypes = map[string]corev1.NodeAddressType{
	string(corev1.NodeInternalIP):  corev1.NodeInternalIP,
	string(corev1.NodeExternalIP):  corev1.NodeExternalIP,
	string(corev1.NodeHostName):    corev1.NodeHostName,
	string(corev1.NodeInternalDNS): corev1.NodeInternalDNS,
	string(corev1.NodeExternalDNS): corev1.NodeExternalDNS,
}

// Status builds the Node status the relay owns for a report at now, every
// condition's heartbeat and transition time at now: as a new Node's
// status, or as the body of a status patch, which keeps a condition's
// stored transition time when its status did not change (statusPatchFor),
// as the kubelet does, so `kubectl describe node` shows when things
// really changed. The fields the relay does not own (images, volumes,
// others' conditions) are not in it; a patch leaves them as they are.
//
// Ready is True and the pressure conditions False unless the agent reports
// otherwise; conditions the agent reports replace those of the same type.
func Status(now metav1.Time, name string, rep *Report) corev1.NodeStatus {
	info := &rep.Info
	st := corev1.NodeStatus{
		Capacity:    resources(info.Capacity),
		Allocatable: resources(info.Allocatable),
		NodeInfo: corev1.NodeSystemInfo{
			MachineID:               info.MachineID,
			BootID:                  info.BootID,
			KernelVersion:           info.KernelVersion,
			OSImage:                 info.OSImage,
			ContainerRuntimeVersion: info.ContainerRuntime,
			KubeletVersion:          rep.AgentVersion, // what `kubectl get nodes` shows as VERSION
			OperatingSystem:         info.OS,
			Architecture:            info.Arch,
		},
		Addresses: addresses(name, info),
	}
	conds := []corev1.NodeCondition{
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: ReasonReady, Message: MessageReady},
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "OutpostNoMemoryPressure", Message: "agent reports no memory pressure"},
		{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "OutpostNoDiskPressure", Message: "agent reports no disk pressure"},
		{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "OutpostNoPIDPressure", Message: "agent reports no PID pressure"},
		linkReady(rep.Session),
	}
	if c, ok := outboxCondition(rep.Link); ok {
		conds = append(conds, c)
	}
	for _, c := range rep.Conditions {
		nc := corev1.NodeCondition{
			Type:    corev1.NodeConditionType(c.Type),
			Status:  corev1.ConditionStatus(c.Status),
			Reason:  c.Reason,
			Message: c.Message,
		}
		replaced := false
		for i := range conds {
			if conds[i].Type == nc.Type {
				conds[i], replaced = nc, true
				break
			}
		}
		if !replaced {
			conds = append(conds, nc)
		}
	}
	for i := range conds {
		c := &conds[i]
		c.LastHeartbeatTime = now
		c.LastTransitionTime = now
	}
	st.Conditions = conds
	return st
}

func resources(r wire.Resources) corev1.ResourceList {
	l := corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewMilliQuantity(r.CPUMillis, resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(r.MemoryBytes, resource.BinarySI),
		corev1.ResourcePods:   *resource.NewQuantity(r.Pods, resource.DecimalSI),
	}
	if r.EphemeralStorage > 0 {
		l[corev1.ResourceEphemeralStorage] = *resource.NewQuantity(r.EphemeralStorage, resource.BinarySI)
	}
	return l
}

// addresses keeps the known, distinct addresses of the report, and adds a
// Hostname address when the agent sent none (the API server refuses
// duplicates, and consumers expect a Hostname).
func addresses(name string, info *wire.NodeInfo) []corev1.NodeAddress {
	var out []corev1.NodeAddress
	seen := map[corev1.NodeAddress]bool{}
	hasHost := false
	for _, a := range info.Addresses {
		t, ok := addressTypes[a.Type]
		if !ok {
			continue
		}
		na := corev1.NodeAddress{Type: t, Address: a.Address}
		if seen[na] {
			continue
		}
		seen[na] = true
		hasHost = hasHost || t == corev1.NodeHostName
		out = append(out, na)
	}
	if !hasHost {
		host := info.Hostname
		if host == "" {
			host = name
		}
		out = append(out, corev1.NodeAddress{Type: corev1.NodeHostName, Address: host})
	}
	return out
}

// PointKubelet makes st say that the node's kubelet API is at address and
// port: the relay replica that holds the agent's connection serves it. The
// address goes first among the InternalIPs, so the API server (with
// --kubelet-preferred-address-types starting with InternalIP, as kubeadm
// and k3s set it) dials the relay; the agent's own addresses follow. An
// empty address or a zero port changes nothing.
func PointKubelet(st *corev1.NodeStatus, address string, port int32) {
	if address == "" || port == 0 {
		return
	}
	relay := corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: address}
	out := []corev1.NodeAddress{relay}
	for _, a := range st.Addresses {
		if a != relay {
			out = append(out, a)
		}
	}
	st.Addresses = out
	st.DaemonEndpoints.KubeletEndpoint.Port = port
}
