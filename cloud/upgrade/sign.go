package upgrade

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"

	"crypto/x509"

	"outpost.dev/wire"
)

// Sign is the publisher's signature of an artifact: ed25519 over
// wire.UpgradeSignedMessage(version, digest). The relay signs nothing;
// agents verify it with the key pinned in their configuration.
func Sign(key ed25519.PrivateKey, version string, digest [32]byte) []byte {
	return ed25519.Sign(key, wire.UpgradeSignedMessage(version, digest))
}

// Signed is what goes into an AgentUpgrade's artifact entry.
type Signed struct {
	Size      int64
	SHA256    string // hex
	Signature string // base64
}

// SignArtifact reads the artifact from r (at most wire.MaxUpgradeSize
// bytes) and signs it for version.
func SignArtifact(key ed25519.PrivateKey, version string, r io.Reader) (Signed, error) {
	if err := wire.CheckUpgradeVersion(version); err != nil {
		return Signed{}, err
	}
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(r, wire.MaxUpgradeSize+1))
	if err != nil {
		return Signed{}, err
	}
	if n == 0 || n > wire.MaxUpgradeSize {
		return Signed{}, fmt.Errorf("artifact of %d bytes: must be 1..%d", n, wire.MaxUpgradeSize)
	}
	var d [32]byte
	h.Sum(d[:0])
	return Signed{Size: n, SHA256: hex.EncodeToString(d[:]), Signature: base64.StdEncoding.EncodeToString(Sign(key, version, d))}, nil
}

// MarshalKey encodes a signing key as PKCS #8 PEM.
func MarshalKey(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKey reads a PKCS #8 PEM ed25519 signing key.
func ParseKey(b []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, errors.New("signing key: want a PKCS #8 PEM PRIVATE KEY (outpost-relay upgrade keygen writes one)")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, errors.New("signing key: not an ed25519 key")
	}
	return ek, nil
}

// PublicKeyString is the agents' upgradePublicKey for key.
func PublicKeyString(key ed25519.PrivateKey) string {
	return base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey))
}
