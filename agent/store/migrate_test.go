package store

import (
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"outpost.dev/wire"
)

// The test schemas: 2 adds a bucket counting the objects of each kind (a
// derived index, as the rule for compatible migrations wants), 3 adds a
// key to meta, 4 is breaking.
var (
	bucketKinds = []byte("test-kinds")
	keyTest3    = []byte("test-3")

	countKinds = Migration{Version: 2,
		Up: func(tx *bolt.Tx) error {
			// Idempotent: rebuilt from the objects bucket every time.
			_ = tx.DeleteBucket(bucketKinds)
			kb, err := tx.CreateBucket(bucketKinds)
			if err != nil {
				return err
			}
			counts := map[byte]uint64{}
			if err := tx.Bucket(bucketObjects).ForEach(func(k, _ []byte) error { counts[k[0]]++; return nil }); err != nil {
				return err
			}
			for kind, n := range counts {
				if err := kb.Put([]byte{kind}, binary.BigEndian.AppendUint64(nil, n)); err != nil {
					return err
				}
			}
			return nil
		},
		Down: func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketKinds) },
	}
	addKey3 = Migration{Version: 3,
		Up:   func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyTest3, []byte("x")) },
		Down: func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyTest3) },
	}
	breaking4 = Migration{Version: 4, Breaking: true,
		Up:   func(tx *bolt.Tx) error { return nil },
		Down: func(tx *bolt.Tx) error { return nil },
	}
	schemas = map[int][]Migration{1: nil, 2: {countKinds}, 3: {countKinds, addKey3}, 4: {countKinds, addKey3, breaking4}}
)

// agentAt opens dir as an agent of the given schema would.
func agentAt(t *testing.T, dir string, schema int) (*Store, error) {
	t.Helper()
	return open(dir, schema, schemas[schema])
}

func putObject(t *testing.T, s *Store, kind wire.Kind, uid string) {
	t.Helper()
	o := pod(uid, "1")
	o.Kind, o.Name = kind, uid
	if _, err := s.ApplySync(&wire.Sync{Upserts: []wire.Object{o}}); err != nil {
		t.Fatal(err)
	}
}

// kindCount reads schema 2's index; -1 without the bucket.
func kindCount(t *testing.T, s *Store, kind wire.Kind) int {
	t.Helper()
	n := -1
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketKinds); b != nil {
			n = 0
			if v := b.Get([]byte{byte(kind)}); v != nil {
				n = int(binary.BigEndian.Uint64(v))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func meta(t *testing.T, s *Store) (schema, reader int) {
	t.Helper()
	err := s.db.View(func(tx *bolt.Tx) error {
		schema, _ = strconv.Atoi(string(tx.Bucket(bucketMeta).Get(keySchema)))
		reader, _ = strconv.Atoi(string(tx.Bucket(bucketMeta).Get(keyReader)))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return schema, reader
}

// TestMigrateUpAndDown runs one store file through agents of schemas 1
// and 2 in turn, as an upgrade and its rollback do, with data in it.
func TestMigrateUpAndDown(t *testing.T) {
	dir := t.TempDir()
	id := Identity{NodeName: "gw-1", Server: "https://relay:8443", KeyPEM: []byte("k"), CertPEM: []byte("c"), CAPEM: []byte("ca")}

	// Schema 1 writes the identity and two pods.
	s, err := agentAt(t, dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SaveIdentity(id); err != nil {
		t.Fatal(err)
	}
	putObject(t, s, wire.KindPod, "p1")
	putObject(t, s, wire.KindPod, "p2")
	s.Close()

	// Upgrade: schema 2 migrates up at open.
	s, err = agentAt(t, dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	if found, now := s.Schema(); found != 1 || now != 2 {
		t.Fatalf("Schema() = %d, %d; want 1, 2", found, now)
	}
	if n := kindCount(t, s, wire.KindPod); n != 2 {
		t.Fatalf("after Up: %d pods counted, want 2", n)
	}
	if sc, r := meta(t, s); sc != 2 || r != 1 {
		t.Fatalf("after Up: schema %d reader %d, want 2, 1", sc, r)
	}
	putObject(t, s, wire.KindPod, "p3")
	s.Close()

	// Rollback: schema 1 opens the schema 2 file as it is, reads and writes.
	s, err = agentAt(t, dir, 1)
	if err != nil {
		t.Fatalf("schema 1 opening a schema 2 file: %v", err)
	}
	if got, err := s.LoadIdentity(); err != nil || got.NodeName != "gw-1" {
		t.Fatalf("identity after the rollback: %+v, %v", got, err)
	}
	if o, ok, err := s.Object(wire.KindPod, "p3"); err != nil || !ok || o.Name != "p3" {
		t.Fatalf("schema 2's pod read by schema 1: %+v, %v", o, err)
	}
	putObject(t, s, wire.KindPod, "p4") // schema 2's index is now stale
	if sc, _ := meta(t, s); sc != 1 {
		t.Fatalf("schema %d after schema 1 opened the file, want 1 (so 2 migrates again)", sc)
	}
	if n := kindCount(t, s, wire.KindPod); n != 2 {
		t.Fatalf("schema 2's bucket is not schema 1's to change: %d", n)
	}
	s.Close()

	// Upgrade again: Up runs again and counts schema 1's write.
	s, err = agentAt(t, dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	if n := kindCount(t, s, wire.KindPod); n != 4 {
		t.Fatalf("after the second Up: %d pods counted, want 4", n)
	}
	s.Close()

	// Down explicitly (Migrate): schema 2's bucket is gone, the data stays.
	if err := migrateDown(dir, 1, 2, schemas[2]); err != nil {
		t.Fatal(err)
	}
	s, err = agentAt(t, dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n := kindCount(t, s, wire.KindPod); n != -1 {
		t.Fatalf("after Down the bucket holds %d", n)
	}
	if sc, r := meta(t, s); sc != 1 || r != 1 {
		t.Fatalf("after Down: schema %d reader %d", sc, r)
	}
	if o, ok, err := s.Object(wire.KindPod, "p4"); err != nil || !ok || o.Name != "p4" {
		t.Fatalf("data after Down: %+v, %v", o, err)
	}
}

func TestOpenAcrossSchemas(t *testing.T) {
	tests := []struct {
		name           string
		written, agent int
		wantErr        string
		// wantSchema is meta's schema after the open.
		wantSchema int
	}{
		{name: "same", written: 2, agent: 2, wantSchema: 2},
		{name: "one up", written: 1, agent: 2, wantSchema: 2},
		{name: "two up", written: 1, agent: 3, wantSchema: 3},
		{name: "one down", written: 2, agent: 1, wantSchema: 1},
		{name: "one down from 3", written: 3, agent: 2, wantSchema: 2},
		{name: "two down refused", written: 3, agent: 1, wantErr: "written by a newer agent (schema 3, readable from schema 2; this agent knows 1)"},
		{name: "one down past a breaking migration refused", written: 4, agent: 3, wantErr: "readable from schema 4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := agentAt(t, dir, tt.written)
			if err != nil {
				t.Fatal(err)
			}
			putObject(t, s, wire.KindPod, "p1")
			s.Close()
			s, err = agentAt(t, dir, tt.agent)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				// Refused without a change: the newer agent still opens it.
				s, err = agentAt(t, dir, tt.written)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				if sc, _ := meta(t, s); sc != tt.written {
					t.Fatalf("schema %d after a refused open, want %d", sc, tt.written)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if sc, _ := meta(t, s); sc != tt.wantSchema {
				t.Fatalf("schema %d, want %d", sc, tt.wantSchema)
			}
			if o, ok, err := s.Object(wire.KindPod, "p1"); err != nil || !ok || o.Name != "p1" {
				t.Fatalf("data: %+v, %v", o, err)
			}
		})
	}
}

// A failing Up leaves the file as it was: one transaction.
func TestFailedMigrationChangesNothing(t *testing.T) {
	dir := t.TempDir()
	s, err := agentAt(t, dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	putObject(t, s, wire.KindPod, "p1")
	s.Close()
	boom := errors.New("boom")
	failing := Migration{Version: 2,
		Up: func(tx *bolt.Tx) error {
			if _, err := tx.CreateBucket(bucketKinds); err != nil {
				return err
			}
			return boom
		},
		Down: countKinds.Down}
	if _, err := open(dir, 2, []Migration{failing}); !errors.Is(err, boom) || !strings.Contains(err.Error(), "from schema 1 to 2") {
		t.Fatalf("err = %v", err)
	}
	s, err = agentAt(t, dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if sc, _ := meta(t, s); sc != 1 || kindCount(t, s, wire.KindPod) != -1 {
		t.Fatalf("a failed migration left schema %d or its bucket", sc)
	}
}

func TestMigrationListChecked(t *testing.T) {
	for _, tc := range []struct {
		schema int
		ms     []Migration
	}{
		{2, nil},
		{2, []Migration{{Version: 3, Up: countKinds.Up, Down: countKinds.Down}}},
		{2, []Migration{{Version: 2, Up: countKinds.Up}}},
	} {
		if _, err := open(t.TempDir(), tc.schema, tc.ms); err == nil {
			t.Errorf("schema %d with %+v accepted", tc.schema, tc.ms)
		}
	}
	if err := checkMigrations(schemaVersion, migrations); err != nil {
		t.Fatalf("the store's own migrations: %v", err)
	}
	if err := Migrate(t.TempDir(), schemaVersion+1); err == nil {
		t.Fatal("Migrate above this agent's schema accepted")
	}
}
