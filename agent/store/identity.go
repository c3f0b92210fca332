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
	// NextKeyPEM and NextCertPEM are a pair renewed on the link that has
	// not connected yet (both or neither); PromoteNext makes it the
	// node's pair once it has.
	NextKeyPEM, NextCertPEM []byte
}

var (
	keyNode   = []byte("node")
	keyServer = []byte("server")
	keyKey    = []byte("key")
	keyCert   = []byte("cert")
	keyCA     = []byte("ca")
	keyNextK  = []byte("next-key")
	keyNextC  = []byte("next-cert")
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
		// A join's pair replaces any renewed one.
		if err := b.Delete(keyNextK); err != nil {
			return err
		}
		return b.Delete(keyNextC)
	})
}

// SaveNext stores a renewed key and certificate next to the current pair,
// in one transaction that is on disk (fsynced) when it returns.
func (s *Store) SaveNext(keyPEM, certPEM []byte) error {
	if len(keyPEM) == 0 || len(certPEM) == 0 {
		return errors.New("save renewed certificate: key or certificate missing")
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIdentity)
		if len(b.Get(keyCert)) == 0 {
			return ErrNotJoined
		}
		if err := b.Put(keyNextK, keyPEM); err != nil {
			return fmt.Errorf("save renewed certificate: %w", err)
		}
		return b.Put(keyNextC, certPEM)
	})
}

// PromoteNext makes the renewed pair the node's pair, dropping the one it
// replaced. Without a renewed pair it does nothing.
func (s *Store) PromoteNext() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIdentity)
		k, c := b.Get(keyNextK), b.Get(keyNextC)
		if len(k) == 0 || len(c) == 0 {
			return nil
		}
		// Copies: the values must outlive the deletes below.
		k, c = append([]byte(nil), k...), append([]byte(nil), c...)
		for _, kv := range [][2][]byte{{keyKey, k}, {keyCert, c}} {
			if err := b.Put(kv[0], kv[1]); err != nil {
				return fmt.Errorf("promote renewed certificate: %w", err)
			}
		}
		if err := b.Delete(keyNextK); err != nil {
			return err
		}
		return b.Delete(keyNextC)
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
		if k, c := get(keyNextK), get(keyNextC); len(k) > 0 && len(c) > 0 {
			id.NextKeyPEM, id.NextCertPEM = k, c
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
