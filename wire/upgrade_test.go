package wire

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"regexp"
	"strings"
	"testing"
)

func sampleOffer() *UpgradeOffer {
	d := sha256.Sum256([]byte("agent"))
	return &UpgradeOffer{Name: "agent-1.2", Version: "1.2.0", Size: 5, SHA256: d[:], Signature: make([]byte, ed25519.SignatureSize), TrialSeconds: 300}
}

// TestUpgradeFramesRefuseHostileInput: oversize, offsets past the end,
// negative sizes, versions that would name other files.
func TestUpgradeFramesRefuseHostileInput(t *testing.T) {
	for _, c := range []struct {
		name string
		b    Body
		want string // "" valid
	}{
		{"offer", sampleOffer(), ""},
		{"offer negative size", func() Body { o := sampleOffer(); o.Size = -1; return o }(), "size"},
		{"offer zero size", func() Body { o := sampleOffer(); o.Size = 0; return o }(), "size"},
		{"offer oversize", func() Body { o := sampleOffer(); o.Size = MaxUpgradeSize + 1; return o }(), "size"},
		{"offer short digest", func() Body { o := sampleOffer(); o.SHA256 = o.SHA256[:31]; return o }(), "sha256"},
		{"offer no signature", func() Body { o := sampleOffer(); o.Signature = nil; return o }(), "signature"},
		{"offer path version", func() Body { o := sampleOffer(); o.Version = "../../bin/sh"; return o }(), "version"},
		{"offer dot version", func() Body { o := sampleOffer(); o.Version = ".."; return o }(), "version"},
		{"offer no trial", func() Body { o := sampleOffer(); o.TrialSeconds = 0; return o }(), "trial"},
		{"offer long trial", func() Body { o := sampleOffer(); o.TrialSeconds = MaxUpgradeTrialSeconds + 1; return o }(), "trial"},
		{"request", &UpgradeChunkRequest{Version: "1", Offset: 0, Length: 1}, ""},
		{"request negative offset", &UpgradeChunkRequest{Version: "1", Offset: -1, Length: 1}, "offset"},
		{"request offset past any artifact", &UpgradeChunkRequest{Version: "1", Offset: MaxUpgradeSize, Length: 1}, "offset"},
		{"request oversize window", &UpgradeChunkRequest{Version: "1", Offset: 0, Length: MaxUpgradeWindow + 1}, "length"},
		{"request negative length", &UpgradeChunkRequest{Version: "1", Offset: 0, Length: -5}, "length"},
		{"chunk", &UpgradeChunk{Version: "1", Offset: 0, Data: []byte{1}}, ""},
		{"chunk oversize", &UpgradeChunk{Version: "1", Offset: 0, Data: make([]byte, MaxUpgradeChunk+1)}, "bytes"},
		{"chunk negative offset", &UpgradeChunk{Version: "1", Offset: -1, Data: []byte{1}}, "offset"},
		{"chunk empty", &UpgradeChunk{Version: "1", Offset: 0}, "exactly one"},
		{"chunk data and error", &UpgradeChunk{Version: "1", Offset: 0, Data: []byte{1}, Error: "x"}, "exactly one"},
		{"report", &UpgradeReport{Name: "u", Version: "1", Phase: UpgradeHealthy}, ""},
		{"report pending", &UpgradeReport{Name: "u", Version: "1", Phase: UpgradePending}, "phase"},
		{"report unknown phase", &UpgradeReport{Name: "u", Version: "1", Phase: "Done"}, "phase"},
		{"report negative bytes", &UpgradeReport{Name: "u", Version: "1", Phase: UpgradeDownloading, Bytes: -1}, "bytes"},
		{"report no name", &UpgradeReport{Version: "1", Phase: UpgradeFailed}, "name"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.b.Validate()
			if c.want == "" {
				if err != nil {
					t.Fatalf("valid %T refused: %v", c.b, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate = %v, want an error about %q", err, c.want)
			}
		})
	}
}

func TestUpgradeFrameRoundTrip(t *testing.T) {
	o := sampleOffer()
	b, err := Encode(TypeUpgradeOffer, 0, o)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	var got UpgradeOffer
	if err := f.DecodeBody(&got); err != nil {
		t.Fatal(err)
	}
	if got.Version != o.Version || !bytes.Equal(got.SHA256, o.SHA256) || got.Digest() != o.Digest() {
		t.Fatalf("round trip: %+v", got)
	}
	// A full chunk fits a frame with room to spare.
	b, err = Encode(TypeUpgradeChunk, 0, &UpgradeChunk{Version: "1.2.0", Offset: MaxUpgradeSize - 1, Data: make([]byte, MaxUpgradeChunk)})
	if err != nil || len(b) > MaxUpgradeChunk+128 {
		t.Fatalf("full chunk: %d bytes, %v", len(b), err)
	}
}

func TestUpgradeSignedMessageBindsVersionAndDigest(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	d := sha256.Sum256([]byte("agent"))
	sig := ed25519.Sign(priv, UpgradeSignedMessage("1.2.0", d))
	if !ed25519.Verify(pub, UpgradeSignedMessage("1.2.0", d), sig) {
		t.Fatal("signature does not verify")
	}
	if ed25519.Verify(pub, UpgradeSignedMessage("1.2.1", d), sig) {
		t.Fatal("signature verifies for another version")
	}
	d[0] ^= 1
	if ed25519.Verify(pub, UpgradeSignedMessage("1.2.0", d), sig) {
		t.Fatal("signature verifies for another digest")
	}
}

// versionPattern is the rule upgradeVersion implements, as a regexp.
var versionPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`)

func TestCheckUpgradeVersion(t *testing.T) {
	for v, ok := range map[string]bool{
		"v1.2.3":                true,
		"0":                     true,
		"v0.1.0-rc.1+build_7":   true,
		strings.Repeat("a", 64): true,
		strings.Repeat("a", 65): false,
		"":                      false,
		".hidden":               false,
		"-v1":                   false,
		"_v1":                   false,
		"+v1":                   false,
		"v1/../x":               false,
		"v1 2":                  false,
		"v1\n":                  false,
		"v1\x00":                false,
		"vé":                    false,
		"v1:2":                  false,
	} {
		if err := CheckUpgradeVersion(v); (err == nil) != ok {
			t.Errorf("CheckUpgradeVersion(%q) = %v, want ok %v", v, err, ok)
		}
		if versionPattern.MatchString(v) != ok {
			t.Errorf("the pattern disagrees on %q", v)
		}
	}
}

// FuzzUpgradeVersion checks upgradeVersion against the regexp it
// replaces on any input.
func FuzzUpgradeVersion(f *testing.F) {
	for _, s := range []string{"v1.2.3", "", ".x", "a/b", strings.Repeat("z", 64), strings.Repeat("z", 65)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if got, want := upgradeVersion(v), versionPattern.MatchString(v); got != want {
			t.Fatalf("upgradeVersion(%q) = %v, the pattern says %v", v, got, want)
		}
	})
}
