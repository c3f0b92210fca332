package outbox

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	bolt "go.etcd.io/bbolt"

	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

func openDB(t *testing.T, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func status(ready string) *wire.NodeStatus {
	return &wire.NodeStatus{
		Node: wire.NodeInfo{Arch: "arm64", OS: "linux", Board: "sim",
			Capacity:    wire.Resources{CPUMillis: 1000, MemoryBytes: 1 << 30, Pods: 10},
			Allocatable: wire.Resources{CPUMillis: 1000, MemoryBytes: 1 << 30, Pods: 10}},
		Conditions: []wire.Condition{{Type: "Ready", Status: ready}},
	}
}

func seqs(es []Entry) string {
	s := ""
	for _, e := range es {
		s += fmt.Sprintf("%d:%s ", e.Seq, e.Key)
	}
	return s
}

func TestAppendCoalesceAckReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	db := openDB(t, path)
	o, err := Open(db, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []struct{ key, ready string }{{"pod/a", "False"}, {"pod/b", "False"}, {"pod/a", "True"}, {"", "True"}} {
		if _, err := o.Append(a.key, wire.TypeNodeStatus, status(a.ready)); err != nil {
			t.Fatal(err)
		}
	}
	p, _ := o.Pending(0, 100)
	if got := seqs(p); got != "2:pod/b 3:pod/a 4: " {
		t.Fatalf("pending = %q: pod/a must coalesce to its latest report, order kept", got)
	}
	var st wire.NodeStatus
	if err := wire.Unmarshal(p[1].Body, &st); err != nil || st.Conditions[0].Status != "True" {
		t.Fatalf("coalesced body: %+v %v", st, err)
	}
	if err := o.Ack(3); err != nil {
		t.Fatal(err)
	}
	db.Close()

	// After a restart the unacked report is still there and numbering goes on.
	db = openDB(t, path)
	defer db.Close()
	o, err = Open(db, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if s := o.Stats(); s.Entries != 1 {
		t.Fatalf("after reopen: %+v", s)
	}
	seq, _ := o.Append("pod/a", wire.TypeNodeStatus, status("False"))
	if seq != 5 {
		t.Fatalf("next seq %d, want 5", seq)
	}
	p, _ = o.Pending(0, 100)
	if got := seqs(p); got != "4: 5:pod/a " {
		t.Fatalf("pending = %q", got)
	}
	p, _ = o.Pending(4, 100)
	if got := seqs(p); got != "5:pod/a " {
		t.Fatalf("pending after 4 = %q", got)
	}
}

func TestBoundsDropTimeSeriesFirst(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "db"))
	defer db.Close()
	o, _ := Open(db, Limits{MaxEntries: 4})
	o.Append("pod/a", wire.TypeNodeStatus, status("True"))
	for i := 0; i < 5; i++ {
		if _, err := o.Append("", wire.TypeNodeStatus, status("True")); err != nil {
			t.Fatal(err)
		}
	}
	s := o.Stats()
	if s.Entries != 4 || s.Dropped != 2 {
		t.Fatalf("stats %+v, want 4 entries and 2 counted drops", s)
	}
	p, _ := o.Pending(0, 100)
	if p[0].Key != "pod/a" {
		t.Fatalf("the keyed report was dropped: %s", seqs(p))
	}
	// Only keyed reports left and no room: refused, nothing dropped.
	o2db := openDB(t, filepath.Join(t.TempDir(), "db2"))
	defer o2db.Close()
	o2, _ := Open(o2db, Limits{MaxEntries: 2})
	o2.Append("a", wire.TypeNodeStatus, status("True"))
	o2.Append("b", wire.TypeNodeStatus, status("True"))
	if _, err := o2.Append("c", wire.TypeNodeStatus, status("True")); !errors.Is(err, ErrFull) {
		t.Fatalf("third keyed report: %v, want ErrFull", err)
	}
	if _, err := o2.Append("a", wire.TypeNodeStatus, status("False")); err != nil {
		t.Fatalf("replacing a keyed report when full: %v", err)
	}
}

type fakeLink struct {
	mu      sync.Mutex
	up      bool
	sent    []uint64
	refused int // sends tried while down
}

func (l *fakeLink) Send(t wire.Type, seq uint64, body wire.Body) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.up {
		l.refused++
		return errors.New("not connected")
	}
	if _, err := wire.Encode(t, seq, body); err != nil {
		return err
	}
	l.sent = append(l.sent, seq)
	return nil
}

func (l *fakeLink) Connected() bool { l.mu.Lock(); defer l.mu.Unlock(); return l.up }

func (l *fakeLink) got() string { l.mu.Lock(); defer l.mu.Unlock(); return fmt.Sprint(l.sent) }

func TestSenderReplaysAfterReconnect(t *testing.T) {
	synctest.Test(t, testSenderReplaysAfterReconnect)
}

func testSenderReplaysAfterReconnect(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "db"))
	defer db.Close()
	o, _ := Open(db, Limits{})
	l := &fakeLink{}
	s := NewSender(o, l, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)

	o.Append("a", wire.TypeNodeStatus, status("True"))
	o.Append("b", wire.TypeNodeStatus, status("True"))
	synctest.Wait() // the sender has seen both and is waiting again
	if l.got() != "[]" || l.refused != 0 {
		t.Fatalf("sent %s and tried %d sends while down", l.got(), l.refused)
	}
	l.mu.Lock()
	l.up = true
	l.mu.Unlock()
	s.Connected()
	waitFor(t, func() bool { return l.got() == "[1 2]" }, l.got)
	s.Acked(1)
	// The connection drops and comes back: only the unacked report again.
	s.Connected()
	waitFor(t, func() bool { return l.got() == "[1 2 2]" }, l.got)
	o.Append("c", wire.TypeNodeStatus, status("True"))
	waitFor(t, func() bool { return l.got() == "[1 2 2 3]" }, l.got)
}

func waitFor(t *testing.T, ok func() bool, what func() string) {
	t.Helper()
	wait.State(t, t.Context(), 5*time.Second, "the sends", func() (bool, string) { return ok(), what() })
}

type boltDB = bolt.DB

func openBolt(path string) (*bolt.DB, error) { return bolt.Open(path, 0o600, nil) }
