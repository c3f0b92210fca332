package store

import (
	"net"

	bolt "go.etcd.io/bbolt"
)

var keyPodCIDR = []byte("podCIDR")

// PodCIDR is the node's pod CIDR last learned from the relay ("" if
// none), so the pod network comes back after a reboot without the link.
func (s *Store) PodCIDR() (string, error) {
	var v string
	err := s.db.View(func(tx *bolt.Tx) error {
		v = string(tx.Bucket(bucketMeta).Get(keyPodCIDR))
		return nil
	})
	return v, err
}

// SavePodCIDR records the node's pod CIDR; an invalid one is refused.
func (s *Store) SavePodCIDR(cidr string) error {
	if _, _, err := net.ParseCIDR(cidr); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyPodCIDR, []byte(cidr))
	})
}
