package store

import (
	"fmt"
	"strconv"

	bolt "go.etcd.io/bbolt"
)

// Schema versions and their compatibility.
//
// The meta bucket holds two numbers: "schema", the schema of the agent
// that last opened the file, and "reader", the oldest schema that can
// read it. A migration takes schema Version-1 to Version (Up) and back
// (Down), and keeps to one rule unless it is marked Breaking:
//
//   - Up only adds: buckets, keys in a bucket, or fields in a record that
//     the previous schema's code does not look at and its writes do not
//     break. A schema N agent can therefore open a file of schema N+1
//     (reader N) as it is, and ignores what N+1 added.
//   - Up is idempotent and derives what it adds from data N also has (or
//     treats it as a cache it may rebuild), because an N agent that ran
//     in between changed that data without keeping N+1's additions
//     current. An N agent opening an N+1 file sets schema back to N for
//     that reason, so the N+1 agent runs Up again when it next opens it.
//   - Down removes what Up added. No agent runs it by itself (the older
//     agent does not have the newer one's code); Migrate does, for a
//     downgrade by more than one version.
//
// So an upgrade that is rolled back (agent/slots) finds a store the
// previous agent can open: one version up or down works without any
// step; further, or past a Breaking migration, Open refuses with a
// message saying so.
//
// Compatibility starts with the agent that has this code: agents before
// it refuse any schema above 1. The schema therefore stays 1 until a
// release that can read schema 2 has been the one to roll back to.

// Migration takes the schema from Version-1 to Version and back.
type Migration struct {
	Version int
	Up      func(tx *bolt.Tx) error
	Down    func(tx *bolt.Tx) error
	// Breaking marks a migration the previous schema cannot read past:
	// Up changes what it reads. The file's reader becomes Version.
	Breaking bool
}

var (
	keyReader = []byte("reader")

	// migrations are the store's, in order: migrations[i].Version == i+2.
	// There are none yet: schema 1 is the first.
	migrations []Migration
)

// checkMigrations validates a list against the schema it leads to.
func checkMigrations(schema int, ms []Migration) error {
	if len(ms) != schema-1 {
		return fmt.Errorf("store: schema %d needs %d migrations, have %d", schema, schema-1, len(ms))
	}
	for i, m := range ms {
		if m.Version != i+2 || m.Up == nil || m.Down == nil {
			return fmt.Errorf("store: migration %d of %d: version %d, up %t, down %t", i+1, len(ms), m.Version, m.Up != nil, m.Down != nil)
		}
	}
	return nil
}

// readerOf is the oldest schema that can read a file at schema.
func readerOf(schema int, ms []Migration) int {
	if schema <= 1 {
		return 1
	}
	if ms[schema-2].Breaking {
		return schema
	}
	return schema - 1
}

// migrate brings the file to schema in tx: Up migrations from the
// stored schema; nothing for a newer file this schema can read (see
// above), whose schema is set to this one; an error for one it cannot.
// It returns the schema found (0 for a new file).
func migrate(tx *bolt.Tx, schema int, ms []Migration) (found int, err error) {
	meta := tx.Bucket(bucketMeta)
	found, err = metaInt(meta, keySchema)
	if err != nil {
		return 0, err
	}
	switch {
	case found == 0: // a new file
	case found < schema:
		for _, m := range ms[found-1 : schema-1] {
			if err := m.Up(tx); err != nil {
				return found, fmt.Errorf("migrating from schema %d to %d: %w", m.Version-1, m.Version, err)
			}
		}
	case found > schema:
		reader, err := metaInt(meta, keyReader)
		if err != nil {
			return found, err
		}
		if reader == 0 { // no reader recorded: only its own schema
			reader = found
		}
		if reader > schema {
			return found, fmt.Errorf("written by a newer agent (schema %d, readable from schema %d; this agent knows %d): upgrade outpost-agent or use a fresh --state-dir", found, reader, schema)
		}
	}
	if err := meta.Put(keySchema, []byte(strconv.Itoa(schema))); err != nil {
		return found, err
	}
	return found, meta.Put(keyReader, []byte(strconv.Itoa(readerOf(schema, ms))))
}

// metaInt reads a positive number from meta; 0 when absent.
func metaInt(meta *bolt.Bucket, key []byte) (int, error) {
	v := meta.Get(key)
	if v == nil {
		return 0, nil
	}
	n, err := strconv.Atoi(string(v))
	if err != nil || n < 1 {
		return 0, fmt.Errorf("meta %s is %.20q, not a schema number", key, v)
	}
	return n, nil
}

// Migrate takes the store in stateDir to schema target with the Down
// migrations this agent has, for a downgrade by more than one version;
// a target above this agent's schema is an error. The store must not be
// open (stop the agent first).
func Migrate(stateDir string, target int) error {
	return migrateDown(stateDir, target, schemaVersion, migrations)
}

func migrateDown(stateDir string, target, schema int, ms []Migration) error {
	if target < 1 || target > schema {
		return fmt.Errorf("store: schema %d: this agent knows 1 to %d", target, schema)
	}
	s, err := open(stateDir, schema, ms)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.db.Update(func(tx *bolt.Tx) error {
		for v := schema; v > target; v-- {
			if err := ms[v-2].Down(tx); err != nil {
				return fmt.Errorf("store: migrating from schema %d down to %d: %w", v, v-1, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(keySchema, []byte(strconv.Itoa(target))); err != nil {
			return err
		}
		return meta.Put(keyReader, []byte(strconv.Itoa(readerOf(target, ms))))
	})
}
