// Package upgrade is the agent's side of an upgrade from the cluster: it
// takes the relay's offer (wire.UpgradeOffer), checks its ed25519
// signature against the key pinned in the agent's configuration (never
// one from the cloud), pulls the artifact over the link in bounded
// windows into one partial file in its state directory, resuming from
// that file's size after a dropped link, checks its SHA-256, and only
// then hands it to an Installer (the gateway's A/B slots), switches to it
// on trial and reports every step durably through the outbox.
//
// A tampered artifact (a signature that does not verify, bytes whose
// digest differs, more bytes than offered) is refused before anything
// touches a slot; the partial file is removed. After the switch the new
// agent, once connected to a relay, declares itself healthy (Connected),
// as soon as the Installer lets it (ErrNotReady until the gateway's own
// condition holds); one that never does is rolled back by the gateway's
// launcher, which the next agent reports.
//
// Nothing here runs a shell or imports k8s.io.
package upgrade

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"outpost.dev/wire"
)

// Installer is the gateway's A/B slot store (agent/slots implements it).
type Installer interface {
	// Install writes the artifact read from r into the inactive slot,
	// checking it against digest, and names that slot.
	Install(r io.Reader, version string, digest [32]byte) (slot string, err error)
	// Switch makes slot the one the launcher starts next, on trial: it
	// rolls back by itself unless MarkHealthy is called within deadline.
	Switch(slot string, deadline time.Duration) error
	// MarkHealthy ends the trial of the running slot: it is kept. It
	// returns ErrNotReady while the agent has not yet shown it works as
	// a node (the gateway's own condition, e.g. its Node written Ready);
	// the caller then calls Connected again once it has.
	MarkHealthy() error
	// State says what runs now.
	State() State
}

// ErrNotReady is MarkHealthy's answer before the running agent has met
// the gateway's condition for keeping it: not a failure, the trial goes on.
var ErrNotReady = errors.New("upgrade: the running agent is not Ready yet")

// State is what the Installer says runs now.
type State struct {
	// Version is the version of the running slot.
	Version string
	// Trial is set while the running slot is on trial (switched to, not
	// yet marked healthy).
	Trial bool
	// RolledBack is the version the launcher rolled back from, if the
	// last trial failed, and Reason why.
	RolledBack string
	Reason     string
}

// Link sends frames on the current connection (the Send method of agent/link.Link).
type Link interface {
	Send(t wire.Type, seq uint64, body wire.Body) error
}

// Outbox keeps durable reports until the relay acks them
// (the Append method of agent/outbox.Outbox).
type Outbox interface {
	Append(key string, t wire.Type, body wire.Body) (uint64, error)
}

// Config is what a Manager needs; all fields but Log and MaxSize are
// required.
type Config struct {
	// Dir holds the partial download and the record of a switch; it is
	// created if missing (the agent's state directory + "/upgrade").
	Dir string
	// PublicKey is the pinned signing key (agent/config upgradePublicKey).
	PublicKey ed25519.PublicKey
	Installer Installer
	Link      Link
	Outbox    Outbox
	// MaxSize bounds the artifact, at most wire.MaxUpgradeSize (default).
	MaxSize int64
	Log     *slog.Logger
}

// Files in Dir. Their names are fixed: nothing from the cloud names a
// file.
const (
	partFile     = "download.part"
	offerFile    = "download.offer"
	switchedFile = "switched.offer"
	// reportKey coalesces the upgrade's reports in the outbox (last wins).
	reportKey = "upgrade"
	// window is what one chunk request asks for.
	window = wire.MaxUpgradeWindow
	// events bounds the frames waiting for the manager's goroutine: an
	// honest relay sends at most window/chunk chunks per request.
	events = 2*window/wire.MaxUpgradeChunk + 8
	// recheck is how often a download that could not ask (the link's
	// queue was full) asks again, and stallAfter how long a window may
	// bring nothing before it is asked for again.
	recheck    = 10 * time.Second
	stallAfter = time.Minute
)

// Manager runs upgrades. Create it with New, call Run once, feed it the
// link's frames with Frame and its connects with Connected.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	events chan event

	// The rest belongs to Run's goroutine.
	cur     *download
	offered bool // an offer came on the current connection
}

type event struct {
	frame        *wire.Frame
	connected    bool
	disconnected bool
}

// download is the artifact being fetched.
type download struct {
	offer   wire.UpgradeOffer
	f       *os.File
	offset  int64 // bytes in the partial file
	asked   int64 // end of the window asked for; 0: nothing asked
	lastRep int64 // offset of the last progress report
	// moved is when the download last asked or got bytes.
	moved time.Time
}

// New checks cfg and prepares Dir.
func New(cfg Config) (*Manager, error) {
	if cfg.Dir == "" || cfg.Installer == nil || cfg.Link == nil || cfg.Outbox == nil {
		return nil, errors.New("upgrade: Dir, Installer, Link and Outbox are required")
	}
	if len(cfg.PublicKey) != ed25519.PublicKeySize {
		return nil, errors.New("upgrade: no upgradePublicKey pinned in the agent's configuration: upgrades are refused")
	}
	if cfg.MaxSize <= 0 || cfg.MaxSize > wire.MaxUpgradeSize {
		cfg.MaxSize = wire.MaxUpgradeSize
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	return &Manager{cfg: cfg, log: cfg.Log, events: make(chan event, events)}, nil
}

// Frame hands the manager an upgrade frame from the link's reading
// goroutine; it never blocks. It reports whether the frame was an upgrade
// frame.
func (m *Manager) Frame(f wire.Frame) bool {
	switch f.Type {
	case wire.TypeUpgradeOffer, wire.TypeUpgradeChunk:
	default:
		return false
	}
	select {
	case m.events <- event{frame: &f}:
	default:
		// Only a relay sending more than was asked for gets here; the
		// download starts over from the partial file on the next offer.
		m.log.Warn("upgrade frame dropped: more than was asked for", "type", f.Type)
	}
	return true
}

// Connected is called after each hello-ack: a switched-to version that
// runs declares itself healthy, a rolled-back one is reported. Never
// blocks.
func (m *Manager) Connected() { m.signal(event{connected: true}) }

// Disconnected is called when the connection ends: the window asked for
// is lost with it.
func (m *Manager) Disconnected() { m.signal(event{disconnected: true}) }

func (m *Manager) signal(e event) {
	select {
	case m.events <- e:
	default:
		m.log.Warn("upgrade event dropped: queue full")
	}
}

// Run handles events until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	defer m.drop(false)
	tick := time.NewTicker(recheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			// Offered on this connection, but not asking: ask again.
			if d := m.cur; d != nil && m.offered && (d.asked == 0 || time.Since(d.moved) >= stallAfter) {
				if d.asked != 0 {
					m.log.Warn("upgrade download stalled; asking again", "offset", d.offset, "since", d.moved)
				}
				m.ask()
			}
		case e := <-m.events:
			switch {
			case e.connected:
				m.offered = false
				m.afterSwitch()
			case e.disconnected:
				m.offered = false
				if m.cur != nil {
					m.cur.asked = 0
				}
			case e.frame.Type == wire.TypeUpgradeOffer:
				var o wire.UpgradeOffer
				if err := e.frame.DecodeBody(&o); err != nil {
					m.log.Warn("upgrade offer refused", "err", err)
					continue
				}
				m.offer(&o)
			case e.frame.Type == wire.TypeUpgradeChunk:
				var c wire.UpgradeChunk
				if err := e.frame.DecodeBody(&c); err != nil {
					m.log.Warn("upgrade chunk refused", "err", err)
					m.restartWindow()
					continue
				}
				m.chunk(&c)
			}
		}
	}
}

// report queues r durably; the outbox sends it.
func (m *Manager) report(o *wire.UpgradeOffer, phase wire.UpgradePhase, reason string, bytes int64) {
	r := &wire.UpgradeReport{Name: o.Name, Version: o.Version, Phase: phase, Reason: truncate(reason, 1000), Bytes: bytes}
	if _, err := m.cfg.Outbox.Append(reportKey, wire.TypeUpgradeReport, r); err != nil {
		m.log.Error("upgrade report not queued", "phase", phase, "err", err)
	}
	lvl := slog.LevelInfo
	if phase == wire.UpgradeFailed || phase == wire.UpgradeRolledBack {
		lvl = slog.LevelWarn
	}
	m.log.Log(context.Background(), lvl, "upgrade", "name", o.Name, "version", o.Version, "phase", phase, "reason", reason, "bytes", bytes)
}

// Verify checks an offer's signature with the pinned key.
func Verify(key ed25519.PublicKey, o *wire.UpgradeOffer) error {
	if len(key) != ed25519.PublicKeySize {
		return errors.New("no upgrade key pinned")
	}
	if !ed25519.Verify(key, wire.UpgradeSignedMessage(o.Version, o.Digest()), o.Signature) {
		return errors.New("signature does not verify with the pinned upgradePublicKey: artifact refused")
	}
	return nil
}

func (m *Manager) offer(o *wire.UpgradeOffer) {
	m.offered = true
	if err := Verify(m.cfg.PublicKey, o); err != nil {
		m.report(o, wire.UpgradeFailed, err.Error(), 0)
		return
	}
	if o.Size > m.cfg.MaxSize {
		m.report(o, wire.UpgradeFailed, fmt.Sprintf("artifact of %d bytes exceeds this agent's bound of %d", o.Size, m.cfg.MaxSize), 0)
		return
	}
	if st := m.cfg.Installer.State(); st.Version == o.Version {
		// Running it already; on trial, Connected reports how it ends.
		if !st.Trial {
			m.report(o, wire.UpgradeHealthy, "running "+o.Version+" already", 0)
		}
		return
	}
	if b, err := readBounded(filepath.Join(m.cfg.Dir, switchedFile), 4096); err == nil {
		var sw wire.UpgradeOffer
		if wire.Unmarshal(b, &sw) == nil && sw.Version == o.Version {
			return // switched to it already: the launcher starts it next
		}
	}
	if m.cur != nil && sameOffer(&m.cur.offer, o) {
		m.cur.offer.Name, m.cur.offer.TrialSeconds = o.Name, o.TrialSeconds
		if m.cur.asked == 0 {
			m.ask()
		}
		return
	}
	if m.cur != nil {
		m.drop(true) // another artifact: its partial file goes
	}
	d, err := m.openPartial(o)
	if err != nil {
		m.report(o, wire.UpgradeFailed, "partial file: "+err.Error(), 0)
		return
	}
	m.cur = d
	m.report(o, wire.UpgradeDownloading, "", d.offset)
	d.lastRep = d.offset
	if d.offset == o.Size {
		m.finish()
		return
	}
	m.ask()
}

func sameOffer(a, b *wire.UpgradeOffer) bool {
	return a.Version == b.Version && a.Size == b.Size && bytes.Equal(a.SHA256, b.SHA256)
}

// openPartial opens the partial file, kept if it belongs to the same
// artifact, else started anew.
func (m *Manager) openPartial(o *wire.UpgradeOffer) (*download, error) {
	dir := m.cfg.Dir
	keep := false
	if b, err := readBounded(filepath.Join(dir, offerFile), 4096); err == nil {
		var held wire.UpgradeOffer
		keep = wire.Unmarshal(b, &held) == nil && sameOffer(&held, o)
	}
	flags := os.O_RDWR | os.O_CREATE | syscall.O_NOFOLLOW
	if !keep {
		flags |= os.O_TRUNC
		rec, err := wire.Marshal(o)
		if err != nil {
			return nil, err
		}
		if err := writeFile(filepath.Join(dir, offerFile), rec); err != nil {
			return nil, err
		}
	}
	f, err := os.OpenFile(filepath.Join(dir, partFile), flags, 0o600)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file", partFile)
	}
	off := fi.Size()
	if off > o.Size {
		// More than the artifact: not ours to trust.
		if err := f.Truncate(0); err != nil {
			f.Close()
			return nil, err
		}
		off = 0
	}
	return &download{offer: *o, f: f, offset: off}, nil
}

// ask requests the next window from the current offset.
func (m *Manager) ask() {
	d := m.cur
	n := min(int64(window), d.offer.Size-d.offset)
	if n <= 0 {
		return
	}
	err := m.cfg.Link.Send(wire.TypeUpgradeChunkRequest, 0, &wire.UpgradeChunkRequest{Version: d.offer.Version, Offset: d.offset, Length: n})
	if err != nil {
		// Not connected, or the queue is full: the next offer (each
		// connect brings one) resumes from here.
		d.asked = 0
		m.log.Info("upgrade chunk request not sent; resuming on the next offer", "offset", d.offset, "err", err)
		return
	}
	d.asked = d.offset + n
	d.moved = time.Now()
}

// restartWindow asks again from the current offset (a bad or unexpected
// chunk).
func (m *Manager) restartWindow() {
	if m.cur != nil && m.cur.asked != 0 {
		m.ask()
	}
}

func (m *Manager) chunk(c *wire.UpgradeChunk) {
	d := m.cur
	if d == nil || c.Version != d.offer.Version || d.asked == 0 {
		return // for a download given up, or a window lost with its link
	}
	if c.Error != "" {
		o := d.offer
		m.drop(false)
		m.report(&o, wire.UpgradeFailed, "relay: "+c.Error, 0)
		return
	}
	if c.Offset != d.offset {
		// Left over from a window asked for before a reconnect.
		return
	}
	end := c.Offset + int64(len(c.Data))
	if end > d.asked || end > d.offer.Size {
		o := d.offer
		m.drop(true)
		m.report(&o, wire.UpgradeFailed, fmt.Sprintf("relay sent bytes up to %d, past the %d asked for (artifact of %d): refused", end, d.asked, o.Size), 0)
		return
	}
	if _, err := d.f.WriteAt(c.Data, c.Offset); err != nil {
		o := d.offer
		m.drop(true)
		m.report(&o, wire.UpgradeFailed, "writing the partial file: "+err.Error(), 0)
		return
	}
	d.offset = end
	d.moved = time.Now()
	if d.offset == d.offer.Size {
		m.finish()
		return
	}
	if d.offset-d.lastRep >= max(d.offer.Size/8, 1<<20) {
		d.lastRep = d.offset
		m.report(&d.offer, wire.UpgradeDownloading, "", d.offset)
	}
	if d.offset == d.asked {
		m.ask()
	}
}

// finish verifies the whole file, installs and switches.
func (m *Manager) finish() {
	d := m.cur
	o := d.offer
	m.report(&o, wire.UpgradeVerifying, "", d.offset)
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(d.f, 0, o.Size)); err != nil {
		m.drop(true)
		m.report(&o, wire.UpgradeFailed, "reading the partial file: "+err.Error(), 0)
		return
	}
	var sum [32]byte
	h.Sum(sum[:0])
	if sum != o.Digest() {
		m.drop(true)
		m.report(&o, wire.UpgradeFailed, fmt.Sprintf("sha256 of the downloaded artifact is %x, the offer says %x: refused before install", sum, o.SHA256), 0)
		return
	}
	slot, err := m.cfg.Installer.Install(io.NewSectionReader(d.f, 0, o.Size), o.Version, sum)
	if err != nil {
		m.drop(true)
		m.report(&o, wire.UpgradeFailed, "install: "+err.Error(), 0)
		return
	}
	m.drop(true)
	rec, err := wire.Marshal(&o)
	if err == nil {
		err = writeFile(filepath.Join(m.cfg.Dir, switchedFile), rec)
	}
	if err != nil {
		m.report(&o, wire.UpgradeFailed, "recording the switch: "+err.Error(), 0)
		return
	}
	m.report(&o, wire.UpgradeSwitching, "", o.Size)
	if err := m.cfg.Installer.Switch(slot, time.Duration(o.TrialSeconds)*time.Second); err != nil {
		_ = os.Remove(filepath.Join(m.cfg.Dir, switchedFile))
		m.report(&o, wire.UpgradeFailed, "switch: "+err.Error(), 0)
	}
}

// afterSwitch reports how a switch ended, once this agent is connected:
// the new version running on trial marks itself healthy.
func (m *Manager) afterSwitch() {
	path := filepath.Join(m.cfg.Dir, switchedFile)
	b, err := readBounded(path, 4096)
	if err != nil {
		return
	}
	var o wire.UpgradeOffer
	if err := wire.Unmarshal(b, &o); err != nil {
		_ = os.Remove(path)
		return
	}
	st := m.cfg.Installer.State()
	switch {
	case st.Version != o.Version:
		if st.RolledBack == "" && !st.Trial {
			// Switched, not yet restarted into it: wait.
			return
		}
		reason := st.Reason
		if reason == "" {
			reason = "the gateway rolled back to " + st.Version
		}
		m.report(&o, wire.UpgradeRolledBack, reason, 0)
	case st.Trial:
		if err := m.cfg.Installer.MarkHealthy(); errors.Is(err, ErrNotReady) {
			return // Connected is called again once it is
		} else if err != nil {
			m.log.Warn("marking the new version healthy failed; trying again on the next connect", "err", err)
			return
		}
		m.report(&o, wire.UpgradeHealthy, "", 0)
	default:
		m.report(&o, wire.UpgradeHealthy, "", 0)
	}
	_ = os.Remove(path)
}

// drop closes the current download; remove deletes its partial file too.
func (m *Manager) drop(remove bool) {
	if m.cur != nil {
		m.cur.f.Close()
		m.cur = nil
	}
	if remove {
		_ = os.Remove(filepath.Join(m.cfg.Dir, partFile))
		_ = os.Remove(filepath.Join(m.cfg.Dir, offerFile))
	}
}

// readBounded reads a small file of ours, refusing symlinks and anything
// larger than max.
func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, max)
	}
	return b, nil
}

// writeFile replaces path with b atomically (temporary file, fsync,
// rename).
func writeFile(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
