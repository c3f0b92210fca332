package wire

import (
	"fmt"
	"time"
)

// Node certificate rotation. An agent whose certificate has passed most
// of its lifetime generates a new key and sends a CertRequest on its live
// link; the relay signs the request for the node the connection's
// certificate names (never a name in the request) and answers with
// CertIssued. The agent stores the new pair and uses it from its next
// connection. A relay that does not know the types answers CodeUnknownType
// and the agent carries on with its certificate; an older agent never
// sends one.

// CertGrace is how long past its NotAfter a node certificate still opens a
// connection, and then only to rotate: the relay accepts nothing else on
// it. Beyond it the node must re-join.
const CertGrace = 90 * 24 * time.Hour

// maxCertDER bounds a DER certificate or request in a rotation message.
// Ours are under 1 KiB; RSA-4096 ones under 2 KiB.
const maxCertDER = 8 << 10

// CertRequest asks the relay for a new node certificate.
type CertRequest struct {
	// CSR is a PKCS #10 certificate request, DER, signed by the new key.
	CSR []byte `cbor:"1,keyasint"`
}

// Validate implements Body.
func (r *CertRequest) Validate() error {
	if len(r.CSR) == 0 || len(r.CSR) > maxCertDER {
		return fmt.Errorf("cert-request: csr is %d bytes (want 1 to %d)", len(r.CSR), maxCertDER)
	}
	return nil
}

// CertIssued carries the certificate signed for a CertRequest.
type CertIssued struct {
	// Certificate is the node's new client certificate, DER.
	Certificate []byte `cbor:"1,keyasint"`
}

// Validate implements Body.
func (c *CertIssued) Validate() error {
	if len(c.Certificate) == 0 || len(c.Certificate) > maxCertDER {
		return fmt.Errorf("cert-issued: certificate is %d bytes (want 1 to %d)", len(c.Certificate), maxCertDER)
	}
	return nil
}
