// Package store is the agent's durable state: one bbolt file under the
// state directory, fsynced on every commit, so what the agent was told
// survives a power cut and a reboot without the cloud.
//
// Each kind of state owns one bucket and a small typed API in its own file
// (identity.go now; pods, devices and the outbox later). Open creates every
// bucket listed in buckets, so adding a kind of state is a new file plus a
// line there. A change to what is stored is a schema migration
// (migrate.go), which keeps the file readable one schema up and down.
package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// FileName is the database's name inside the state directory.
const FileName = "agent.db"

const (
	pidFileName = "agent.pid"
	// lockTimeout bounds the wait for another process's lock: long enough
	// to ride out a restart racing the old process's exit, short enough
	// that a second agent fails at once.
	lockTimeout = time.Second
	// schemaVersion is stored in the meta bucket so a later agent can
	// migrate, and an older one can tell whether it can read the file
	// (migrate.go says how).
	schemaVersion = 1
)

var (
	bucketMeta     = []byte("meta")
	bucketIdentity = []byte("identity")
	keySchema      = []byte("schema")

	// buckets are created by Open. Later kinds of state add theirs here.
	buckets = [][]byte{bucketMeta, bucketIdentity, bucketObjects}
)

// ErrInUse is returned by Open when another process holds the state dir.
var ErrInUse = errors.New("state dir in use")

// inUseError says who holds the state dir; it matches ErrInUse.
type inUseError struct{ msg string }

func (e *inUseError) Error() string        { return e.msg }
func (e *inUseError) Is(target error) bool { return target == ErrInUse }

// Store is the open database. Its methods are safe for concurrent use.
type Store struct {
	db            *bolt.DB
	dir           string
	found, schema int
}

// Open opens or creates <stateDir>/agent.db, migrating it to this
// agent's schema in the same transaction that creates its buckets. A
// second agent on the same state dir gets an error wrapping ErrInUse that
// names the holder's pid.
func Open(stateDir string) (*Store, error) {
	return open(stateDir, schemaVersion, migrations)
}

func open(stateDir string, schema int, ms []Migration) (*Store, error) {
	if err := checkMigrations(schema, ms); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	path := filepath.Join(stateDir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		holder := "another process"
		if b, err := os.ReadFile(filepath.Join(stateDir, pidFileName)); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				holder = fmt.Sprintf("pid %d", pid)
			}
		}
		return nil, &inUseError{fmt.Sprintf("state dir %s is in use by another outpost-agent (%s): stop it first or use another --state-dir", stateDir, holder)}
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	var found int
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range buckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		var err error
		found, err = migrate(tx, schema, ms)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	// Best effort: only used to name the holder in ErrInUse.
	_ = os.WriteFile(filepath.Join(stateDir, pidFileName), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)
	return &Store{db: db, dir: stateDir, found: found, schema: schema}, nil
}

// Schema says which schema the file had when opened (0: new) and which
// it has now.
func (s *Store) Schema() (found, now int) { return s.found, s.schema }

// Dir is the state directory the store lives in.
func (s *Store) Dir() string { return s.dir }

// Close releases the file and its lock.
func (s *Store) Close() error {
	_ = os.Remove(filepath.Join(s.dir, pidFileName))
	return s.db.Close()
}

// Bolt returns the database, for packages that own buckets of their own
// (the outbox) and keep to them.
func (s *Store) Bolt() *bolt.DB { return s.db }
