package admin

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	agentconfig "outpost.dev/agent/config"
	agentupgrade "outpost.dev/agent/upgrade"
	"outpost.dev/wire"
)

// TestUpgradeKeygenAndSign: what keygen prints is what an agent pins, and
// what sign prints verifies with it there, for that version only.
func TestUpgradeKeygenAndSign(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "upgrade.key")
	var out, errb bytes.Buffer
	if err := Upgrade([]string{"keygen", "--key", key}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	pub, err := agentconfig.ParseUpgradeKey(strings.TrimPrefix(strings.TrimSpace(out.String()), "upgradePublicKey: "))
	if err != nil {
		t.Fatalf("%q: %v", out.String(), err)
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	if err := Upgrade([]string{"keygen", "--key", key}, &out, &errb); err == nil {
		t.Fatal("keygen overwrote a key")
	}
	bin := filepath.Join(dir, "outpost-agent")
	data := []byte("\x7fELF not really")
	os.WriteFile(bin, data, 0o644)
	out.Reset()
	if err := Upgrade([]string{"sign", "--key", key, "--version", "1.4.0", "--arch", "riscv64", "--url", "https://dl.example/a", bin}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	var entries []struct {
		Arch, URL, SHA256, Signature string
		Size                         int64
	}
	if err := yaml.Unmarshal(out.Bytes(), &entries); err != nil || len(entries) != 1 {
		t.Fatalf("%s: %v", out.String(), err)
	}
	e := entries[0]
	sum := sha256.Sum256(data)
	if e.Arch != "riscv64" || e.Size != int64(len(data)) || e.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("entry %+v", e)
	}
	sig, _ := base64.StdEncoding.DecodeString(e.Signature)
	offer := &wire.UpgradeOffer{Name: "u", Version: "1.4.0", Size: e.Size, SHA256: sum[:], Signature: sig, TrialSeconds: 60}
	if err := agentupgrade.Verify(pub, offer); err != nil {
		t.Fatalf("the agent refuses the signature: %v", err)
	}
	offer.Version = "1.4.1"
	if agentupgrade.Verify(pub, offer) == nil {
		t.Fatal("signature verifies for another version")
	}
	for _, args := range [][]string{{}, {"sign"}, {"sign", "--key", key, bin}, {"sign", "--key", key, "--version", "../x", bin}, {"frob"}} {
		if Upgrade(args, &out, &errb) == nil {
			t.Errorf("%q: no error", args)
		}
	}
}
