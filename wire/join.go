package wire

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
)

// HTTP paths the relay serves. Join is plain JSON over HTTPS, since it runs
// once per node and benefits from being readable with curl.
const (
	// PathJoinCA serves the relay's CA, signed with a bootstrap token's
	// secret, so a joining agent can trust the relay without a CA file
	// (the kubeadm cluster-info idea). Query: ?token-id=ID.
	PathJoinCA = "/v1/join/ca"
	// PathJoin exchanges a bootstrap token and a CSR for a node certificate.
	PathJoin = "/v1/join"
	// PathConnect is the WebSocket endpoint; it requires the node certificate.
	PathConnect = "/v1/connect"
)

// MaxJoinBody bounds join requests and responses.
const MaxJoinBody = 64 << 10

// JoinCA is the answer of PathJoinCA.
type JoinCA struct {
	CA string `json:"ca"` // PEM
	// Signature is hex HMAC-SHA256 of CA keyed with the token's secret.
	Signature string `json:"signature"`
}

// JoinRequest is posted to PathJoin with "Authorization: Bearer ID.SECRET".
type JoinRequest struct {
	NodeName string `json:"nodeName"`
	CSR      string `json:"csr"` // PEM certificate request
}

// JoinResponse carries the node's client certificate.
type JoinResponse struct {
	NodeName    string `json:"nodeName"`
	Certificate string `json:"certificate"` // PEM
	CA          string `json:"ca"`          // PEM
}

// JoinError is the body of every failed join call.
type JoinError struct {
	Reason string `json:"reason"`
}

// CASignature signs a CA bundle with a bootstrap token's secret.
func CASignature(tokenSecret string, caPEM []byte) string {
	m := hmac.New(sha256.New, []byte(tokenSecret))
	m.Write(caPEM)
	return hex.EncodeToString(m.Sum(nil))
}

// CheckCASignature reports whether sig is CASignature(tokenSecret, caPEM),
// in constant time.
func CheckCASignature(tokenSecret string, caPEM []byte, sig string) bool {
	want, err := hex.DecodeString(sig)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, []byte(tokenSecret))
	m.Write(caPEM)
	return hmac.Equal(m.Sum(nil), want)
}

// ParseToken splits a bootstrap token "ID.SECRET" (6 and 16 characters of
// [a-z0-9], the kubeadm format) into its parts.
func ParseToken(tok string) (id, secret string, err error) {
	if len(tok) != 23 || tok[6] != '.' {
		return "", "", errBadToken
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if i == 6 {
			continue
		}
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return "", "", errBadToken
		}
	}
	return tok[:6], tok[7:], nil
}

var errBadToken = errors.New(`bootstrap token must look like "abcdef.0123456789abcdef" (6 and 16 characters of a-z and 0-9)`)
