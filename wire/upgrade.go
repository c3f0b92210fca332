package wire

import (
	"crypto/ed25519"
	"errors"
	"fmt"
)

// Agent upgrades. The relay offers the agent a new version of itself
// (UpgradeOffer: version, size, SHA-256 and an ed25519 signature made by
// whoever published it); the agent checks the signature against the key
// pinned in its own configuration, then pulls the artifact in chunks
// (UpgradeChunkRequest → UpgradeChunk), at most MaxUpgradeWindow bytes
// asked for at a time, so a download never holds up the link's other
// frames by more than one chunk. After a dropped link it asks again from
// the size of its partial file. It reports each step (UpgradeReport,
// durable: it carries a Seq and waits in the agent's outbox for its ack).

// Upgrade limits.
const (
	// MaxUpgradeSize bounds one agent artifact.
	MaxUpgradeSize = 256 << 20
	// MaxUpgradeChunk bounds the data of one UpgradeChunk.
	MaxUpgradeChunk = 32 << 10
	// MaxUpgradeWindow bounds the bytes one UpgradeChunkRequest asks for.
	MaxUpgradeWindow = 256 << 10
	// MaxUpgradeTrialSeconds bounds the trial deadline of an offer.
	MaxUpgradeTrialSeconds = 3600
)

// UpgradeSignatureContext prefixes the message an upgrade's signature
// covers, so a signature made for anything else never verifies as one.
const UpgradeSignatureContext = "outpost-agent-upgrade-v1\x00"

// UpgradeSignedMessage is what an artifact's ed25519 signature covers:
// the context, the version, a NUL, and the SHA-256 of the artifact.
func UpgradeSignedMessage(version string, digest [32]byte) []byte {
	m := make([]byte, 0, len(UpgradeSignatureContext)+len(version)+1+32)
	m = append(m, UpgradeSignatureContext...)
	m = append(m, version...)
	m = append(m, 0)
	return append(m, digest[:]...)
}

// upgradeVersion reports whether v is what a version may look like,
// ^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$: it names files on the agent, so no
// separators and no dots alone. A loop, not that regexp: compiling its
// {0,63} took 60 KB in 861 allocations at every agent's start, kept for
// the process's life.
func upgradeVersion(v string) bool {
	if len(v) == 0 || len(v) > 64 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '+' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// CheckUpgradeVersion reports a version that is not a plain name of at
// most 64 characters (letters, digits, ".", "_", "+", "-", not starting
// with a dot).
func CheckUpgradeVersion(v string) error {
	if !upgradeVersion(v) {
		return fmt.Errorf("version %q: want 1-64 of [A-Za-z0-9._+-], starting with a letter or digit", v)
	}
	return nil
}

// UpgradeOffer (relay → agent) tells the agent to upgrade itself to
// Version. Sent on each connect while the node's upgrade is in flight;
// an agent that holds part of the same artifact resumes it.
type UpgradeOffer struct {
	// Name is the AgentUpgrade the offer comes from; reports carry it back.
	Name    string `cbor:"1,keyasint"`
	Version string `cbor:"2,keyasint"`
	Size    int64  `cbor:"3,keyasint"`
	SHA256  []byte `cbor:"4,keyasint"`
	// Signature is ed25519 over UpgradeSignedMessage(Version, SHA256).
	Signature []byte `cbor:"5,keyasint"`
	// TrialSeconds is how long the new version may run before it must
	// have declared itself healthy; otherwise the gateway rolls back.
	TrialSeconds uint32 `cbor:"6,keyasint"`
}

// Validate implements Body.
func (o *UpgradeOffer) Validate() error {
	if err := checkText("upgrade-offer: name", o.Name, maxNameLen, true); err != nil {
		return err
	}
	if err := CheckUpgradeVersion(o.Version); err != nil {
		return fmt.Errorf("upgrade-offer: %w", err)
	}
	if o.Size <= 0 || o.Size > MaxUpgradeSize {
		return fmt.Errorf("upgrade-offer: size %d out of range (1..%d)", o.Size, MaxUpgradeSize)
	}
	if len(o.SHA256) != 32 {
		return fmt.Errorf("upgrade-offer: sha256 is %d bytes, want 32", len(o.SHA256))
	}
	if len(o.Signature) != ed25519.SignatureSize {
		return fmt.Errorf("upgrade-offer: signature is %d bytes, want %d", len(o.Signature), ed25519.SignatureSize)
	}
	if o.TrialSeconds == 0 || o.TrialSeconds > MaxUpgradeTrialSeconds {
		return fmt.Errorf("upgrade-offer: trial %ds out of range (1..%d)", o.TrialSeconds, MaxUpgradeTrialSeconds)
	}
	return nil
}

// Digest returns SHA256 as an array (Validate checked its length).
func (o *UpgradeOffer) Digest() (d [32]byte) { copy(d[:], o.SHA256); return d }

// UpgradeChunkRequest (agent → relay) asks for Length bytes of the
// artifact of Version from Offset on. The relay answers with UpgradeChunks
// of at most MaxUpgradeChunk bytes each, in order; the agent asks for the
// next window once it has written this one.
type UpgradeChunkRequest struct {
	Version string `cbor:"1,keyasint"`
	Offset  int64  `cbor:"2,keyasint"`
	Length  int64  `cbor:"3,keyasint"`
}

// Validate implements Body.
func (r *UpgradeChunkRequest) Validate() error {
	if err := CheckUpgradeVersion(r.Version); err != nil {
		return fmt.Errorf("upgrade-chunk-request: %w", err)
	}
	if r.Offset < 0 || r.Offset >= MaxUpgradeSize {
		return fmt.Errorf("upgrade-chunk-request: offset %d out of range", r.Offset)
	}
	if r.Length <= 0 || r.Length > MaxUpgradeWindow {
		return fmt.Errorf("upgrade-chunk-request: length %d out of range (1..%d)", r.Length, MaxUpgradeWindow)
	}
	return nil
}

// UpgradeChunk (relay → agent) carries artifact bytes from Offset on, or
// says why the relay cannot serve them (Error, no Data).
type UpgradeChunk struct {
	Version string `cbor:"1,keyasint"`
	Offset  int64  `cbor:"2,keyasint"`
	Data    []byte `cbor:"3,keyasint,omitempty"`
	Error   string `cbor:"4,keyasint,omitempty"`
}

// Validate implements Body.
func (c *UpgradeChunk) Validate() error {
	if err := CheckUpgradeVersion(c.Version); err != nil {
		return fmt.Errorf("upgrade-chunk: %w", err)
	}
	if c.Offset < 0 || c.Offset >= MaxUpgradeSize {
		return fmt.Errorf("upgrade-chunk: offset %d out of range", c.Offset)
	}
	if len(c.Data) > MaxUpgradeChunk {
		return fmt.Errorf("upgrade-chunk: %d bytes (limit %d)", len(c.Data), MaxUpgradeChunk)
	}
	if (len(c.Data) == 0) == (c.Error == "") {
		return errors.New("upgrade-chunk: exactly one of data and error")
	}
	return checkText("upgrade-chunk: error", c.Error, maxTextLen, false)
}

// UpgradePhase is where a node's upgrade stands.
type UpgradePhase string

// Phases an agent reports (Pending is the relay's own: admitted, not yet
// heard of).
const (
	UpgradePending     UpgradePhase = "Pending"
	UpgradeDownloading UpgradePhase = "Downloading"
	UpgradeVerifying   UpgradePhase = "Verifying"
	UpgradeSwitching   UpgradePhase = "Switching"
	UpgradeHealthy     UpgradePhase = "Healthy"
	UpgradeRolledBack  UpgradePhase = "RolledBack"
	UpgradeFailed      UpgradePhase = "Failed"
)

// Terminal reports whether a node in phase p is done with its upgrade
// (it no longer counts as unavailable).
func (p UpgradePhase) Terminal() bool {
	return p == UpgradeHealthy || p == UpgradeRolledBack || p == UpgradeFailed
}

func (p UpgradePhase) valid() bool {
	switch p {
	case UpgradeDownloading, UpgradeVerifying, UpgradeSwitching, UpgradeHealthy, UpgradeRolledBack, UpgradeFailed:
		return true
	}
	return false
}

// UpgradeReport (agent → relay, durable) is a step of the node's upgrade.
type UpgradeReport struct {
	Name    string       `cbor:"1,keyasint"`
	Version string       `cbor:"2,keyasint"`
	Phase   UpgradePhase `cbor:"3,keyasint"`
	// Reason says why, for RolledBack and Failed.
	Reason string `cbor:"4,keyasint,omitempty"`
	// Bytes is how much of the artifact the agent holds (Downloading).
	Bytes int64 `cbor:"5,keyasint,omitempty"`
}

// Validate implements Body.
func (r *UpgradeReport) Validate() error {
	if err := checkText("upgrade-report: name", r.Name, maxNameLen, true); err != nil {
		return err
	}
	if err := CheckUpgradeVersion(r.Version); err != nil {
		return fmt.Errorf("upgrade-report: %w", err)
	}
	if !r.Phase.valid() {
		return fmt.Errorf("upgrade-report: phase %q unknown", r.Phase)
	}
	if r.Bytes < 0 || r.Bytes > MaxUpgradeSize {
		return fmt.Errorf("upgrade-report: bytes %d out of range", r.Bytes)
	}
	return checkText("upgrade-report: reason", r.Reason, maxTextLen, false)
}
