package store

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// ErrNotJoined is returned by LoadIdentity before the first join.
var ErrNotJoined = errors.New("not joined")

// Identity is who the node is and whom it trusts, as written by join.
type Identity struct {
	NodeName string
	// Server is the relay URL the node joined through.
	Server string
	// KeyPEM is the node's private key. It was generated on this gateway
	// and never leaves it.
	KeyPEM  []byte
	CertPEM []byte
	// CAPEM is the CA that signs the relay's serving certificate.
	CAPEM []byte
}

var (
	keyNode   = []byte("node")
	keyServer = []byte("server")
	keyKey    = []byte("key")
	keyCert   = []byte("cert")
	keyCA     = []byte("ca")
)

// SaveIdentity replaces the stored identity in one transaction, so a crash
// never leaves a key with another join's certificate.
func (s *Store) SaveIdentity(id Identity) error {
	if id.NodeName == "" || id.Server == "" || len(id.KeyPEM) == 0 || len(id.CertPEM) == 0 || len(id.CAPEM) == 0 {
		return errors.New("save identity: incomplete identity")
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIdentity)
		for _, kv := range []struct {
			k []byte
			v []byte
		}{
			{keyNode, []byte(id.NodeName)}, {keyServer, []byte(id.Server)},
			{keyKey, id.KeyPEM}, {keyCert, id.CertPEM}, {keyCA, id.CAPEM},
		} {
			if err := b.Put(kv.k, kv.v); err != nil {
				return fmt.Errorf("save identity: %w", err)
			}
		}
		return nil
	})
}

// LoadIdentity returns the stored identity, or ErrNotJoined.
func (s *Store) LoadIdentity() (Identity, error) {
	var id Identity
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIdentity)
		// bbolt's slices are only valid inside the transaction.
		get := func(k []byte) []byte { return append([]byte(nil), b.Get(k)...) }
		id = Identity{
			NodeName: string(get(keyNode)),
			Server:   string(get(keyServer)),
			KeyPEM:   get(keyKey),
			CertPEM:  get(keyCert),
			CAPEM:    get(keyCA),
		}
		return nil
	})
	if err != nil {
		return Identity{}, err
	}
	if id.NodeName == "" || len(id.KeyPEM) == 0 || len(id.CertPEM) == 0 || len(id.CAPEM) == 0 {
		return Identity{}, ErrNotJoined
	}
	return id, nil
}
