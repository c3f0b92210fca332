package outbox

import (
	"fmt"
	"path/filepath"
	"testing"

	"outpost.dev/wire"
)

// BenchmarkAppend measures one durable (fsynced) report append, coalescing
// over 100 keys as pod statuses would.
func BenchmarkAppend(b *testing.B) {
	db := openDBb(b)
	o, _ := Open(db, Limits{})
	st := status("True")
	i := 0
	for b.Loop() {
		if _, err := o.Append(fmt.Sprint("pod/", i%100), wire.TypeNodeStatus, st); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkReplay measures reading 1,000 queued reports back in order, as
// a reconnect does.
func BenchmarkReplay(b *testing.B) {
	db := openDBb(b)
	o, _ := Open(db, Limits{})
	for i := 0; i < 1000; i++ {
		o.Append("", wire.TypeNodeStatus, status("True"))
	}
	for b.Loop() {
		var after uint64
		n := 0
		for {
			es, err := o.Pending(after, 32)
			if err != nil {
				b.Fatal(err)
			}
			if len(es) == 0 {
				break
			}
			n += len(es)
			after = es[len(es)-1].Seq
		}
		if n != 1000 {
			b.Fatalf("replayed %d", n)
		}
	}
	b.ReportMetric(1000, "reports/op")
}

func openDBb(b *testing.B) *boltDB {
	b.Helper()
	db, err := openBolt(filepath.Join(b.TempDir(), "db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}
