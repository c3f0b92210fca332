package nodes

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

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
// figures (a hello) there is none, and a status patch leaves the stored
// one as it is.
func outboxCondition(l *wire.LinkStats) (corev1.NodeCondition, bool) {
	if l == nil {
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
// or another, wrote since, and its word stands. as is the client acting
// as the node.
//
// The write is a JSON patch of the status subresource that tests, with
// the replacement, that the condition at that index is still the one
// session wrote (type, status True, message naming the session) and that
// the Node's UID is still the one read: the API server applies it to the
// Node as stored at the time of the write, so a newer connection's write
// in between makes it fail (422) rather than be overwritten, and the Node
// is read again and checked anew.
func (w *Writer) MarkDisconnected(ctx context.Context, as asnode.Client, name, session string, at time.Time) (bool, error) {
	return w.markDisconnected(ctx, as, name, session, at, nil)
}

// markDisconnectedTries bounds the reads of a Node whose EdgeLinkReady
// condition keeps changing between the read and the write.
const markDisconnectedTries = 5

// markDisconnected is MarkDisconnected; last, if not nil, is the Node as
// the session last wrote it, and the first write is tried from it,
// without a read.
func (w *Writer) markDisconnected(ctx context.Context, as asnode.Client, name, session string, at time.Time, last *nodeState) (bool, error) {
	api := as.CoreV1().Nodes()
	// write patches condition i of the Node of UID uid; done says the
	// outcome is final, and false with no error that a test op failed
	// (the Node changed since it was read), so read it again.
	write := func(uid types.UID, i int) (done, marked bool, err error) {
		body, err := disconnectPatch(uid, i, session, at)
		if err == nil {
			_, err = api.Patch(ctx, name, types.JSONPatchType, body, metav1.PatchOptions{FieldManager: FieldManager}, "status")
		}
		switch {
		case err == nil:
			return true, true, nil
		case apierrors.IsNotFound(err):
			return true, false, nil
		case apierrors.IsInvalid(err):
			return false, false, nil
		}
		w.count("node_status", err)
		return true, false, fmt.Errorf("mark node %q disconnected: %w", name, err)
	}
	if last != nil {
		if i := slices.IndexFunc(last.conds, func(c condState) bool { return c.Type == ConditionLinkReady }); i >= 0 {
			if done, marked, err := write(last.uid, i); done {
				return marked, err
			}
		}
	}
	for range markDisconnectedTries {
		n, err := api.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("mark node %q disconnected: %w", name, err)
		}
		if !IsEdge(n) {
			return false, nil
		}
		i := condIndex(n.Status.Conditions, ConditionLinkReady)
		if i < 0 || n.Status.Conditions[i].Status != corev1.ConditionTrue ||
			n.Status.Conditions[i].Message != linkReady(session).Message {
			return false, nil
		}
		if done, marked, err := write(n.UID, i); done {
			return marked, err
		}
		// Changed between the read and the write: read it again.
	}
	w.failures.WithLabelValues("node_status").Inc()
	return false, fmt.Errorf("mark node %q disconnected: its %s condition changed at every one of %d tries", name, ConditionLinkReady, markDisconnectedTries)
}

// disconnectPatch is the JSON patch that replaces condition i, if it is
// still the EdgeLinkReady=True that session wrote on the Node of UID
// uid, by EdgeLinkReady=False since at.
func disconnectPatch(uid types.UID, i int, session string, at time.Time) ([]byte, error) {
	t := metav1.NewTime(at)
	path := "/status/conditions/" + strconv.Itoa(i)
	type op struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value any    `json:"value"`
	}
	var ops []op
	if uid != "" { // the API server gives every Node one; fakes may not
		ops = append(ops, op{"test", "/metadata/uid", uid})
	}
	return json.Marshal(append(ops, []op{
		{"test", path + "/type", ConditionLinkReady},
		{"test", path + "/status", corev1.ConditionTrue},
		{"test", path + "/message", linkReady(session).Message},
		{"replace", path, corev1.NodeCondition{
			Type: ConditionLinkReady, Status: corev1.ConditionFalse, Reason: ReasonDisconnected,
			Message:           "agent disconnected since " + at.UTC().Format(time.RFC3339),
			LastHeartbeatTime: t, LastTransitionTime: t,
		}},
	}...))
}

func condIndex(cs []corev1.NodeCondition, t corev1.NodeConditionType) int {
	for i := range cs {
		if cs[i].Type == t {
			return i
		}
	}
	return -1
}
