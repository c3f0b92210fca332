package nodes

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"outpost.dev/wire"
)

func TestOutboxCondition(t *testing.T) {
	at := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC).Unix()
	tests := []struct {
		name    string
		link    *wire.LinkStats
		present bool
		status  corev1.ConditionStatus
		reason  string
		msg     string
	}{
		// A hello has no figures: the status patch leaves the stored
		// condition as the last figures made it (TestStatusPatch/KeepsOthers).
		{name: "hello", present: false},
		{name: "draining", link: &wire.LinkStats{At: at, OutboxReports: 12, OutboxBytes: 3000, OutboxMaxBytes: 8 << 20, OutboxDropped: 4, LastSync: at - 60},
			present: true, status: corev1.ConditionTrue, reason: ReasonOutboxOK,
			msg: "outbox: 12 reports, 3000 bytes of 8388608, 4 dropped; as of 2026-05-01T10:00:00Z; last sync 2026-05-01T09:59:00Z"},
		{name: "nearly full", link: &wire.LinkStats{At: at, OutboxReports: 900, OutboxBytes: 950, OutboxMaxBytes: 1000},
			present: true, status: corev1.ConditionFalse, reason: ReasonOutboxFull, msg: "outbox: 900 reports, 950 bytes of 1000, 0 dropped; as of 2026-05-01T10:00:00Z"},
		{name: "no bound known", link: &wire.LinkStats{At: at, OutboxBytes: 1 << 40},
			present: true, status: corev1.ConditionTrue, reason: ReasonOutboxOK, msg: "outbox: 0 reports, 1099511627776 bytes, 0 dropped; as of 2026-05-01T10:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, ok := outboxCondition(tt.link)
			if ok != tt.present {
				t.Fatalf("present %v", ok)
			}
			if !ok {
				return
			}
			if c.Status != tt.status || (tt.reason != "" && c.Reason != tt.reason) || c.Message != tt.msg {
				t.Fatalf("got %s %s %q", c.Status, c.Reason, c.Message)
			}
		})
	}
}

func linkCond(t *testing.T, client kubernetes.Interface, name string) corev1.NodeCondition {
	t.Helper()
	n, err := client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	i := condIndex(n.Status.Conditions, ConditionLinkReady)
	if i < 0 {
		t.Fatalf("no %s in %v", ConditionLinkReady, n.Status.Conditions)
	}
	return n.Status.Conditions[i]
}

// startWritten starts a session and waits until its hello is written.
func startWritten(t *testing.T, w *Writer, name string) *Session {
	t.Helper()
	acks := make(chan uint64, 1)
	s := w.Start(context.Background(), SessionConfig{Client: w.cfg.Client, Name: name, OnAck: func(seq uint64) { acks <- seq }})
	s.Report(1, *report())
	select {
	case <-acks:
	case <-time.After(10 * time.Second):
		t.Fatal("report not written")
	}
	return s
}

func TestStopMarksDisconnected(t *testing.T) {
	var fixed atomic.Pointer[time.Time] // nil: the real clock
	client := fake.NewClientset()
	w, err := NewWriter(WriterConfig{Client: client, LeaseDuration: 40 * time.Second, Now: func() time.Time {
		if t := fixed.Load(); t != nil {
			return *t
		}
		return time.Now()
	}})
	if err != nil {
		t.Fatal(err)
	}
	stopAt := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	s := startWritten(t, w, "gw-1")
	if c := linkCond(t, client, "gw-1"); c.Status != corev1.ConditionTrue || c.Reason != ReasonConnected || !strings.Contains(c.Message, s.id) {
		t.Fatalf("connected: %+v", c)
	}
	fixed.Store(&stopAt)
	s.Stop()
	c := linkCond(t, client, "gw-1")
	if c.Status != corev1.ConditionFalse || c.Reason != ReasonDisconnected || c.Message != "agent disconnected since 2026-05-01T12:00:00Z" ||
		!c.LastTransitionTime.Time.Equal(stopAt) {
		t.Fatalf("after stop: %+v", c)
	}

	// Reconnecting makes it True again, with a new transition time.
	fixed.Store(nil)
	s2 := startWritten(t, w, "gw-1")
	defer s2.Stop()
	if c := linkCond(t, client, "gw-1"); c.Status != corev1.ConditionTrue || !c.LastTransitionTime.After(stopAt) {
		t.Fatalf("after reconnect: %+v", c)
	}
}

// The agent reconnected (here, or to another replica) before the old
// connection ended: the old one's end must not mark it disconnected.
func TestStopAfterNewerConnectionWritesNothing(t *testing.T) {
	w, client := newWriter(t)
	old := startWritten(t, w, "gw-1")
	newer := startWritten(t, w, "gw-1")
	defer newer.Stop()
	old.Stop()
	if c := linkCond(t, client, "gw-1"); c.Status != corev1.ConditionTrue || !strings.Contains(c.Message, newer.id) {
		t.Fatalf("newer connection's condition overwritten: %+v", c)
	}
}

func TestStopBeforeAnyWriteWritesNothing(t *testing.T) {
	w, client := newWriter(t)
	s := w.Start(context.Background(), SessionConfig{Client: w.cfg.Client, Name: "gw-9"})
	s.Stop()
	if l, _ := client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{}); len(l.Items) != 0 {
		t.Fatalf("nodes written: %v", l.Items)
	}
	if ok, err := w.MarkDisconnected(context.Background(), w.cfg.Client, "gw-9", s.id, time.Now()); ok || err != nil {
		t.Fatalf("MarkDisconnected of a missing node: %v %v", ok, err)
	}
}
