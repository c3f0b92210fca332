package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func TestIdentity(t *testing.T) {
	full := Identity{
		NodeName: "gw-1", Server: "https://relay:8443",
		KeyPEM: []byte("key"), CertPEM: []byte("cert"), CAPEM: []byte("ca"),
	}
	tests := []struct {
		name    string
		save    *Identity
		wantErr error
		saveErr bool
	}{
		{name: "fresh store is not joined", wantErr: ErrNotJoined},
		{name: "saved identity comes back", save: &full},
		{name: "incomplete identity refused", save: &Identity{NodeName: "gw-1"}, saveErr: true, wantErr: ErrNotJoined},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			if tt.save != nil {
				err := s.SaveIdentity(*tt.save)
				if (err != nil) != tt.saveErr {
					t.Fatalf("SaveIdentity err = %v, want error %v", err, tt.saveErr)
				}
			}
			check := func(s *Store) {
				t.Helper()
				got, err := s.LoadIdentity()
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("LoadIdentity err = %v, want %v", err, tt.wantErr)
				}
				if tt.wantErr == nil && !reflect.DeepEqual(got, *tt.save) {
					t.Fatalf("LoadIdentity = %+v, want %+v", got, *tt.save)
				}
			}
			check(s)
			// The same answer after a close and reopen: it was on disk.
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s, err = Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			check(s)
		})
	}
}

func TestSecondOpenFails(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir)
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open err = %v, want ErrInUse", err)
	}
	want := fmt.Sprintf("in use by another outpost-agent (pid %d)", os.Getpid())
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), dir) {
		t.Errorf("err = %q, want it to name %s and %q", err, dir, want)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s.Close()
}

func TestFilePermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, FileName): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&^want != 0 {
			t.Errorf("%s mode %v, want at most %v: it holds the node's private key", path, fi.Mode().Perm(), want)
		}
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Two schemas ahead: readable only from schemaVersion+1.
	err = s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketMeta).Put(keyReader, []byte(strconv.Itoa(schemaVersion+1))); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keySchema, []byte(strconv.Itoa(schemaVersion+2)))
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "newer agent") {
		t.Fatalf("Open of a newer schema: err = %v", err)
	}
}

// A renewed pair is stored next to the current one, survives a reopen,
// and replaces it only when promoted; a join drops it.
func TestRenewedPair(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SaveNext([]byte("k2"), []byte("c2")); !errors.Is(err, ErrNotJoined) {
		t.Fatalf("renewal before a join: %v", err)
	}
	id := Identity{NodeName: "gw-1", Server: "https://relay:8443", KeyPEM: []byte("k1"), CertPEM: []byte("c1"), CAPEM: []byte("ca")}
	if err := s.SaveIdentity(id); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveNext([]byte("k2"), []byte("c2")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(dir); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, _ := s.LoadIdentity()
	if string(got.KeyPEM) != "k1" || string(got.CertPEM) != "c1" || string(got.NextKeyPEM) != "k2" || string(got.NextCertPEM) != "c2" {
		t.Fatalf("after a reopen: %+v", got)
	}
	if err := s.PromoteNext(); err != nil {
		t.Fatal(err)
	}
	got, _ = s.LoadIdentity()
	if string(got.KeyPEM) != "k2" || string(got.CertPEM) != "c2" || got.NextKeyPEM != nil || got.NextCertPEM != nil {
		t.Fatalf("after promoting: %+v", got)
	}
	if err := s.SaveNext([]byte("k3"), []byte("c3")); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveIdentity(id); err != nil {
		t.Fatal(err)
	}
	if got, _ = s.LoadIdentity(); got.NextCertPEM != nil || string(got.CertPEM) != "c1" {
		t.Fatalf("a join kept the renewed pair: %+v", got)
	}
}
