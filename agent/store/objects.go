package store

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"outpost.dev/wire"
)

// MaxObjects bounds the downstream objects (pods and what they reference)
// the store keeps, so a misbehaving relay cannot fill the gateway's disk.
const MaxObjects = 4096

var bucketObjects = []byte("objects")

// ErrFull is returned when applying a sync would exceed MaxObjects.
var ErrFull = errors.New("object store full")

func objectKey(k wire.Kind, uid string) []byte {
	return append([]byte{byte(k)}, uid...)
}

// ApplySync writes a downstream sync in one fsynced transaction: every
// upsert and delete, or none. It returns what changed; an upsert of the
// version already held is not a change.
func (s *Store) ApplySync(sy *wire.Sync) (changed []wire.ObjectRef, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketObjects)
		changed = changed[:0]
		held := b.Stats().KeyN
		for _, d := range sy.Deletes {
			k := objectKey(d.Kind, d.UID)
			if b.Get(k) != nil {
				if err := b.Delete(k); err != nil {
					return err
				}
				held--
				changed = append(changed, d)
			}
		}
		for i := range sy.Upserts {
			o := &sy.Upserts[i]
			k := objectKey(o.Kind, o.UID)
			if old := b.Get(k); old != nil {
				var prev wire.Object
				if wire.Unmarshal(old, &prev) == nil && prev.Version == o.Version {
					continue
				}
			} else if held >= MaxObjects {
				return fmt.Errorf("%w: %d objects held (limit %d); %s %s/%s not stored",
					ErrFull, held, MaxObjects, o.Kind, o.Namespace, o.Name)
			} else {
				held++
			}
			v, err := wire.Marshal(o)
			if err != nil {
				return fmt.Errorf("store %s %s/%s: %w", o.Kind, o.Namespace, o.Name, err)
			}
			if err := b.Put(k, v); err != nil {
				return err
			}
			changed = append(changed, wire.ObjectRef{Kind: o.Kind, UID: o.UID})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return changed, nil
}

// ObjectVersions lists every object held with its version, for the hello.
func (s *Store) ObjectVersions() ([]wire.ObjectVersion, error) {
	var vs []wire.ObjectVersion
	err := s.eachObject(0, func(o *wire.Object) {
		vs = append(vs, wire.ObjectVersion{Kind: o.Kind, UID: o.UID, Version: o.Version})
	})
	return vs, err
}

// Objects returns every object of kind k held.
func (s *Store) Objects(k wire.Kind) ([]wire.Object, error) {
	var objs []wire.Object
	err := s.eachObject(k, func(o *wire.Object) { objs = append(objs, *o) })
	return objs, err
}

// Object returns one object, or ok=false.
func (s *Store) Object(k wire.Kind, uid string) (o wire.Object, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketObjects).Get(objectKey(k, uid))
		if v == nil {
			return nil
		}
		ok = true
		return wire.Unmarshal(v, &o)
	})
	return o, ok, err
}

// eachObject calls fn for every object of kind k (0: all kinds). An entry
// that no longer decodes (written by a newer agent, or damaged) is an
// error, not silently skipped.
func (s *Store) eachObject(k wire.Kind, fn func(*wire.Object)) error {
	return s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketObjects).Cursor()
		var key, v []byte
		if k == 0 {
			key, v = c.First()
		} else {
			key, v = c.Seek([]byte{byte(k)})
		}
		for ; key != nil; key, v = c.Next() {
			if k != 0 && key[0] != byte(k) {
				break
			}
			var o wire.Object
			if err := wire.Unmarshal(v, &o); err != nil {
				return fmt.Errorf("stored object %x: %w", key, err)
			}
			fn(&o)
		}
		return nil
	})
}
