package nodes

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"outpost.dev/cloud/asnode"
	"outpost.dev/wire"
)

// Conditions the relay adds to every edge Node, beside the kubelet's.
const (
	// ConditionLinkReady says whether the agent is connected to a relay
	// replica: True while it is, False from when its connection ended.
	ConditionLinkReady corev1.NodeConditionType = "EdgeLinkReady"
	// ConditionOutboxHealthy shows the agent's outbox as it last reported
	// it: reports and bytes waiting, its bound, drops, last sync. False
	// when it is at least 90% full.
	ConditionOutboxHealthy corev1.NodeConditionType = "OutboxHealthy"

	ReasonConnected    = "AgentConnected"
	ReasonDisconnected = "AgentDisconnected"
	ReasonOutboxOK     = "OutboxOK"
	ReasonOutboxFull   = "OutboxNearlyFull"
)

// sessionMark introduces the connection's name in EdgeLinkReady's message.
const sessionMark = "relay session "

func linkReady(session string) corev1.NodeCondition {
	msg := "agent connected to a relay"
	if session != "" {
		msg += " (" + sessionMark + session + ")"
	}
	return corev1.NodeCondition{Type: ConditionLinkReady, Status: corev1.ConditionTrue, Reason: ReasonConnected, Message: msg}
}

// outboxCondition builds OutboxHealthy from the agent's figures; without
// figures (a hello) it keeps the one in prev, if any.
func outboxCondition(l *wire.LinkStats, prev *corev1.NodeStatus) (corev1.NodeCondition, bool) {
	if l == nil {
		if prev != nil {
			for _, c := range prev.Conditions {
				if c.Type == ConditionOutboxHealthy {
					return c, true
				}
			}
		}
		return corev1.NodeCondition{}, false
	}
	c := corev1.NodeCondition{Type: ConditionOutboxHealthy, Status: corev1.ConditionTrue, Reason: ReasonOutboxOK}
	limit := ""
	if l.OutboxMaxBytes > 0 {
		limit = fmt.Sprintf(" of %d", l.OutboxMaxBytes)
		if l.OutboxBytes*10 >= l.OutboxMaxBytes*9 {
			c.Status, c.Reason = corev1.ConditionFalse, ReasonOutboxFull
		}
	}
	c.Message = fmt.Sprintf("outbox: %d reports, %d bytes%s, %d dropped; as of %s", l.OutboxReports, l.OutboxBytes, limit,
		l.OutboxDropped, time.Unix(l.At, 0).UTC().Format(time.RFC3339))
	if l.LastSync > 0 {
		c.Message += "; last sync " + time.Unix(l.LastSync, 0).UTC().Format(time.RFC3339)
	}
	return c, true
}

// MarkDisconnected sets EdgeLinkReady=False on Node name, saying the agent
// has been disconnected since at. It changes nothing unless the condition
// still names session: a newer connection of the agent, to this replica
// or another, wrote since, and its word stands. The write is a status
// update with the read resourceVersion, so a concurrent write makes it
// read again and check anew. as is the client acting as the node.
func (w *Writer) MarkDisconnected(ctx context.Context, as asnode.Client, name, session string, at time.Time) (bool, error) {
	api := as.CoreV1().Nodes()
	wrote := false
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		wrote = false
		n, err := api.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if !IsEdge(n) {
			return nil
		}
		i := condIndex(n.Status.Conditions, ConditionLinkReady)
		if i < 0 || n.Status.Conditions[i].Status != corev1.ConditionTrue ||
			!strings.Contains(n.Status.Conditions[i].Message, sessionMark+session+")") {
			return nil
		}
		upd := n.DeepCopy()
		t := metav1.NewTime(at)
		upd.Status.Conditions[i] = corev1.NodeCondition{
			Type: ConditionLinkReady, Status: corev1.ConditionFalse, Reason: ReasonDisconnected,
			Message:           "agent disconnected since " + at.UTC().Format(time.RFC3339),
			LastHeartbeatTime: t, LastTransitionTime: t,
		}
		if _, err := api.UpdateStatus(ctx, upd, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
			if !apierrors.IsConflict(err) {
				w.failures.WithLabelValues("node_status").Inc()
			}
			return err
		}
		wrote = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("mark node %q disconnected: %w", name, err)
	}
	return wrote, nil
}

func condIndex(cs []corev1.NodeCondition, t corev1.NodeConditionType) int {
	for i := range cs {
		if cs[i].Type == t {
			return i
		}
	}
	return -1
}
