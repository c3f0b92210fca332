// Package outbox is the agent's durable queue of upstream reports: pod
// status, node status, twin reports. A report is written to bbolt (fsynced)
// with a sequence number before it is sent, and deleted only when the relay
// acknowledges it, which the relay does only after its API write succeeded.
// So a report survives a lost link, a relay restart and a reboot.
//
// Reports about one object coalesce: a newer report with the same key
// replaces the older one, which is the last-wins rule status needs and what
// keeps the queue small during a long outage. Reports without a key (time
// series) are bounded: when the queue is full the oldest of them is dropped
// and counted, never an object's latest status.
package outbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/fxamacker/cbor/v2"
	bolt "go.etcd.io/bbolt"

	"outpost.dev/wire"
)

var (
	bucketEntries = []byte("outbox")      // seq → entry
	bucketKeys    = []byte("outbox-keys") // key → seq, for coalescing
	bucketMeta    = []byte("outbox-meta")
	keyNextSeq    = []byte("next-seq")
	keyDropped    = []byte("dropped")
)

// ErrFull is returned when a keyed report does not fit: the queue holds
// only keyed reports (latest states) and none may be dropped.
var ErrFull = errors.New("outbox full")

// Limits bound the queue.
type Limits struct {
	MaxEntries int // default 4096
	MaxBytes   int // default 8 MiB
}

// Entry is one queued report.
type Entry struct {
	Seq  uint64
	Key  string // "" for a time-series report
	Type wire.Type
	Body []byte // the CBOR body, as wire.Marshal made it
}

type record struct {
	Key  string    `cbor:"1,keyasint,omitempty"`
	Type wire.Type `cbor:"2,keyasint"`
	Body []byte    `cbor:"3,keyasint"`
}

// Outbox is the queue. Its methods are safe for concurrent use.
type Outbox struct {
	db     *bolt.DB
	limits Limits

	mu      sync.Mutex
	entries int
	bytes   int
	notify  chan struct{}
}

// Open opens the outbox's buckets in db, creating them if needed.
func Open(db *bolt.DB, limits Limits) (*Outbox, error) {
	if limits.MaxEntries <= 0 {
		limits.MaxEntries = 4096
	}
	if limits.MaxBytes <= 0 {
		limits.MaxBytes = 8 << 20
	}
	o := &Outbox{db: db, limits: limits, notify: make(chan struct{}, 1)}
	err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketEntries, bucketKeys, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketEntries).ForEach(func(_, v []byte) error {
			o.entries++
			o.bytes += len(v)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	return o, nil
}

// Notify receives a value after an Append; sends coalesce.
func (o *Outbox) Notify() <-chan struct{} { return o.notify }

// Append queues a report of type t and returns its sequence number. A
// report with a non-empty key replaces any queued report with that key.
func (o *Outbox) Append(key string, t wire.Type, body wire.Body) (uint64, error) {
	raw, err := wire.Marshal(body)
	if err != nil {
		return 0, fmt.Errorf("outbox: %s: %w", t, err)
	}
	v, err := cbor.Marshal(record{Key: key, Type: t, Body: raw})
	if err != nil {
		return 0, err
	}
	if len(v) > o.limits.MaxBytes || len(raw) > wire.MaxFrameSize-64 {
		return 0, fmt.Errorf("outbox: %s report of %d bytes is larger than a frame", t, len(raw))
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	var seq uint64
	entries, size := o.entries, o.bytes
	err = o.db.Update(func(tx *bolt.Tx) error {
		eb, kb, mb := tx.Bucket(bucketEntries), tx.Bucket(bucketKeys), tx.Bucket(bucketMeta)
		if key != "" {
			if old := kb.Get([]byte(key)); old != nil {
				if prev := eb.Get(old); prev != nil {
					entries--
					size -= len(prev)
					if err := eb.Delete(old); err != nil {
						return err
					}
				}
			}
		}
		// Make room by dropping the oldest time-series reports. Keys are
		// collected first: deleting under a moving bbolt cursor skips items.
		var drop [][]byte
		c := eb.Cursor()
		for k, val := c.First(); k != nil && (entries+1 > o.limits.MaxEntries || size+len(v) > o.limits.MaxBytes); k, val = c.Next() {
			var r record
			if cbor.Unmarshal(val, &r) == nil && r.Key != "" {
				continue
			}
			entries--
			size -= len(val)
			drop = append(drop, append([]byte(nil), k...))
		}
		for _, k := range drop {
			if err := eb.Delete(k); err != nil {
				return err
			}
		}
		dropped := uint64(len(drop))
		if entries+1 > o.limits.MaxEntries || size+len(v) > o.limits.MaxBytes {
			return fmt.Errorf("%w: %d reports, %d bytes queued (limits %d, %d) while the relay is unreachable",
				ErrFull, entries, size, o.limits.MaxEntries, o.limits.MaxBytes)
		}
		if dropped > 0 {
			if err := mb.Put(keyDropped, u64(getU64(mb.Get(keyDropped))+dropped)); err != nil {
				return err
			}
		}
		seq = getU64(mb.Get(keyNextSeq))
		if seq == 0 {
			seq = 1 // durable reports are numbered from 1
		}
		if err := mb.Put(keyNextSeq, u64(seq+1)); err != nil {
			return err
		}
		if key != "" {
			if err := kb.Put([]byte(key), u64(seq)); err != nil {
				return err
			}
		}
		entries++
		size += len(v)
		return eb.Put(u64(seq), v)
	})
	if err != nil {
		return 0, err
	}
	o.entries, o.bytes = entries, size
	select {
	case o.notify <- struct{}{}:
	default:
	}
	return seq, nil
}

// Pending returns up to max queued reports with a sequence number above
// after, in order.
func (o *Outbox) Pending(after uint64, max int) ([]Entry, error) {
	var out []Entry
	err := o.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEntries).Cursor()
		for k, v := c.Seek(u64(after + 1)); k != nil && len(out) < max; k, v = c.Next() {
			var r record
			if err := cbor.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("outbox entry %d: %w", getU64(k), err)
			}
			out = append(out, Entry{Seq: getU64(k), Key: r.Key, Type: r.Type, Body: r.Body})
		}
		return nil
	})
	return out, err
}

// Ack deletes every report with a sequence number up to seq: the relay
// acks the highest number it has made durable.
func (o *Outbox) Ack(seq uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	entries, size := o.entries, o.bytes
	err := o.db.Update(func(tx *bolt.Tx) error {
		eb, kb := tx.Bucket(bucketEntries), tx.Bucket(bucketKeys)
		c := eb.Cursor()
		for k, v := c.First(); k != nil && getU64(k) <= seq; k, v = c.First() {
			var r record
			if cbor.Unmarshal(v, &r) == nil && r.Key != "" {
				if cur := kb.Get([]byte(r.Key)); cur != nil && getU64(cur) == getU64(k) {
					if err := kb.Delete([]byte(r.Key)); err != nil {
						return err
					}
				}
			}
			entries--
			size -= len(v)
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		o.entries, o.bytes = entries, size
	}
	return err
}

// Stats are the queue's depth and its counted drops.
type Stats struct {
	Entries, Bytes int
	Dropped        uint64
}

// Stats returns the current figures.
func (o *Outbox) Stats() Stats {
	o.mu.Lock()
	s := Stats{Entries: o.entries, Bytes: o.bytes}
	o.mu.Unlock()
	_ = o.db.View(func(tx *bolt.Tx) error {
		s.Dropped = getU64(tx.Bucket(bucketMeta).Get(keyDropped))
		return nil
	})
	return s
}

func u64(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

func getU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}
