package bench

import (
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"outpost.dev/cloud/pki"
	"outpost.dev/cloud/pki/mint"
)

// writeChildCA writes ca (its certificate, then its key, in PEM) to a file
// for a benchmark's child process, which mints its agents' certificates
// with it (readChildCA), and returns the file's path.
func writeChildCA(tb testing.TB, ca *pki.CA) string {
	tb.Helper()
	keyPEM, err := mint.KeyPEM(ca.Key)
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), "ca.pem")
	if err := os.WriteFile(path, append(append([]byte{}, ca.CertPEM...), keyPEM...), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// readChildCA reads the CA writeChildCA wrote.
func readChildCA(path string) (*pki.CA, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	certBlock, rest := pem.Decode(raw)
	return pki.Parse(pem.EncodeToMemory(certBlock), rest)
}
