// Package slots is the gateway side of an agent upgrade: two slots for
// agent binaries and a pointer file saying which one runs, so that a new
// agent is tried and, if it does not come up, left by itself.
//
// The layout under the slots directory (DefaultDir unless the launcher was
// built with another):
//
//	a/outpost-agent   an agent binary (0755), or nothing yet
//	b/outpost-agent
//	pointer           the current slot, the trial, each slot's version and digest, the last rollback
//	pointer.good      a copy of the pointer as it was last outside a trial
//	lock              taken (flock) around every read-modify-write of the pointer
//
// Slot Packaged is /usr/bin/outpost-agent, installed by the .deb or the
// image: with no pointer file it is what runs, so a gateway that never
// upgrades behaves as before slots existed.
//
// The life of an upgrade: Install writes the new binary into the slot
// that is not running (a temporary file, its digest checked, fsynced,
// renamed); Switch makes it current on trial (the old slot becomes
// Previous); the agent restarts with ExitRestart and the launcher
// (package boot) starts the new slot, counting its launches; the new
// agent calls MarkHealthy once it is connected and its Node reported
// Ready, which ends the trial. A trial slot launched MaxBoots times
// without becoming healthy, or not healthy by its deadline, is rolled
// back by the launcher (Rollback): Previous is current again and the
// reason is kept for State.
//
// Every pointer write is a new file (temporary name, fsync, rename, fsync
// of the directory), so a power cut leaves the old pointer or the new
// one. A pointer that cannot be read all the same (a damaged disk) is
// replaced by pointer.good, and without that by the packaged agent.
//
// Names inside the directory are fixed; nothing from the cloud becomes a
// path. Every access goes through an os.Root of the directory with
// symlinks refused, so nothing is read or written outside it.
package slots

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

const (
	// DefaultDir is where the slots live on a gateway.
	DefaultDir = "/var/lib/outpost/slots"
	// PackagedPath is the agent the package or image installed.
	PackagedPath = "/usr/bin/outpost-agent"
	// Binary is an agent's file name inside its slot.
	Binary = "outpost-agent"
	// MaxBinarySize bounds an installed binary: wire.MaxUpgradeSize, the
	// bound the relay, the AgentUpgrade CRD and the agent's download hold
	// an artifact to (TestMaxBinarySizeIsTheWireBound). It is spelled out
	// here, not imported, so the launcher links nothing of the protocol.
	MaxBinarySize = 256 << 20

	pointerName = "pointer"
	goodName    = "pointer.good"
	lockName    = "lock"

	// EnvDir and EnvSlot are set by the launcher for the agent it starts:
	// the slots directory and the slot running ("a", "b", "packaged").
	EnvDir  = "OUTPOST_SLOTS_DIR"
	EnvSlot = "OUTPOST_SLOT"

	// ExitRestart is the exit status with which an agent asks to be
	// started again (after a Switch): the service manager restarts it
	// (systemd's Restart=on-failure, busybox init's respawn), and the
	// launcher starts the current slot.
	ExitRestart = 75
)

// ErrTrial is returned by Install and Switch while a trial runs.
var ErrTrial = errors.New("an upgrade is on trial: wait until it is healthy or rolled back")

// Slots is an open slots directory.
type Slots struct {
	dir  string
	mu   sync.Mutex
	root *os.Root // opened by openRoot
	// Now is the clock for deadlines and rollback times.
	Now func() time.Time
	// MaxSize bounds Install (MaxBinarySize unless set).
	MaxSize int64
	// Packaged is slot Packaged's binary (PackagedPath unless set).
	Packaged string
	// crash, in tests, stops a write after the named step as a power cut
	// would: what it wrote so far stays, nothing after it happens.
	crash func(step string) error
}

// Open returns the slots in dir. The directory is made (0700) by the
// first write that needs it (an Install); until then the slots read as
// a gateway that never upgraded: the packaged agent, no trial.
func Open(dir string) (*Slots, error) {
	if fi, err := os.Lstat(dir); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("slots: %s is not a directory", dir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("slots: %w", err)
	}
	return &Slots{dir: dir, Now: time.Now, MaxSize: MaxBinarySize, Packaged: PackagedPath}, nil
}

// openRoot opens the directory, making it first when create is set; a
// missing one is an error wrapping fs.ErrNotExist otherwise.
func (s *Slots) openRoot(create bool) (*os.Root, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.root != nil {
		return s.root, nil
	}
	if create {
		if err := os.MkdirAll(s.dir, 0o700); err != nil {
			return nil, fmt.Errorf("slots: %w", err)
		}
	}
	fi, err := os.Lstat(s.dir)
	if err != nil {
		return nil, fmt.Errorf("slots: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("slots: %s is not a directory", s.dir)
	}
	root, err := os.OpenRoot(s.dir)
	if err != nil {
		return nil, fmt.Errorf("slots: %w", err)
	}
	s.root = root
	return root, nil
}

// FromEnv opens the slots directory the launcher named in the
// environment, and says which slot this process runs from. ok is false
// when the agent was not started by the launcher (no upgrades then).
func FromEnv() (s *Slots, running Slot, ok bool, err error) {
	dir, slot := os.Getenv(EnvDir), Slot(os.Getenv(EnvSlot))
	if dir == "" || !filepath.IsAbs(dir) || !slot.Valid() {
		return nil, "", false, nil
	}
	s, err = Open(dir)
	if err != nil {
		return nil, "", false, err
	}
	return s, slot, true, nil
}

// Dir is the slots directory.
func (s *Slots) Dir() string { return s.dir }

// Close releases the directory.
func (s *Slots) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.root == nil {
		return nil
	}
	err := s.root.Close()
	s.root = nil
	return err
}

// Path is the agent binary of slot: under the directory for A and B,
// PackagedPath for Packaged.
func (s *Slots) Path(slot Slot) string {
	if slot == Packaged {
		return s.Packaged
	}
	return filepath.Join(s.dir, string(slot), Binary)
}

func (s *Slots) step(name string) error {
	if s.crash != nil {
		return s.crash(name)
	}
	return nil
}

// lock takes the directory's lock until the returned func is called.
func (s *Slots) lock(create bool) (func(), error) {
	root, err := s.openRoot(create)
	if err != nil {
		return nil, err
	}
	f, err := root.OpenFile(lockName, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("slots: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("slots: lock: %w", err)
	}
	return func() { f.Close() }, nil
}

// Update reads the pointer, lets fn change it and writes it back, under
// the lock. fn returning an error writes nothing.
func (s *Slots) Update(fn func(p *Pointer) error) error {
	return s.UpdateLoaded(func(p *Pointer, _ error) error { return fn(p) })
}

// UpdateLoaded is Update telling fn why the pointer file was not used, if
// it was damaged (p is then its known-good copy, or the packaged agent's,
// with the reason, and is written back whatever fn does).
func (s *Slots) UpdateLoaded(fn func(p *Pointer, damaged error) error) error {
	unlock, err := s.lock(false)
	if errors.Is(err, fs.ErrNotExist) {
		// Nothing written yet: make the directory only for a change.
		p := fresh()
		if err := fn(&p, nil); err != nil || p == fresh() {
			return err
		}
		unlock, err = s.lock(true)
	}
	if err != nil {
		return err
	}
	defer unlock()
	p, damaged, err := s.load()
	if err != nil {
		return err
	}
	old := p
	if err := fn(&p, damaged); err != nil {
		return err
	}
	if p == old && damaged == nil {
		return nil
	}
	return s.write(p)
}

// Load returns the pointer: the file's, else (damaged) the last
// known-good copy's, else (none) the packaged agent's. damaged, when
// set, says why the pointer file was not used.
func (s *Slots) Load() (p Pointer, damaged error, err error) {
	unlock, err := s.lock(false)
	if errors.Is(err, fs.ErrNotExist) {
		return fresh(), nil, nil
	}
	if err != nil {
		return Pointer{}, nil, err
	}
	defer unlock()
	return s.load()
}

func (s *Slots) load() (Pointer, error, error) {
	p, err := s.readPointer(pointerName)
	if err == nil {
		return p, nil, nil
	}
	if !errors.Is(err, errPointer) {
		if errors.Is(err, fs.ErrNotExist) {
			return fresh(), nil, nil
		}
		return Pointer{}, nil, err
	}
	damaged := err
	g, err := s.readPointer(goodName)
	if err != nil || g.Trial {
		g = fresh()
	}
	g.Reason = Text(fmt.Sprintf("%v: back to the last known-good slot %s", damaged, g.Current))
	g.RolledBack, g.RolledBackVersion, g.RolledBackAt = "", "", s.Now().Unix()
	return g, damaged, nil
}

func fresh() Pointer { return Pointer{Current: Packaged, Previous: Packaged} }

func (s *Slots) readPointer(name string) (Pointer, error) {
	if fi, err := s.root.Lstat(name); err != nil {
		return Pointer{}, err
	} else if !fi.Mode().IsRegular() {
		return Pointer{}, fmt.Errorf("%w: %s is not a regular file", errPointer, name)
	}
	f, err := s.root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return Pointer{}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxPointerSize+1))
	if err != nil {
		return Pointer{}, err
	}
	return Decode(b)
}

// write replaces the pointer file with p, and pointer.good as well when p
// has no trial.
func (s *Slots) write(p Pointer) error {
	b, err := p.Encode()
	if err != nil {
		return err
	}
	if err := s.replace(pointerName, b); err != nil {
		return err
	}
	if !p.Trial {
		return s.replace(goodName, b)
	}
	return nil
}

// replace writes name's new content as a temporary file, fsyncs it,
// renames it over name and fsyncs the directory.
func (s *Slots) replace(name string, b []byte) error {
	tmp := "." + name + ".tmp"
	_ = s.root.Remove(tmp)
	f, err := s.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("slots: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = s.step("write " + name)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.step("fsync " + name)
	}
	if err == nil {
		err = s.root.Rename(tmp, name)
	}
	if err == nil {
		err = s.step("rename " + name)
	}
	if err == nil {
		err = s.syncDir(".")
	}
	if err != nil {
		return fmt.Errorf("slots: writing %s: %w", name, err)
	}
	return nil
}

func (s *Slots) syncDir(name string) error {
	d, err := s.root.OpenFile(name, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Install writes the binary read from r into the slot that is not
// current, checking it against digest ("sha256:HEX") and the size bound,
// and records version for it. The slot's old binary stays until the new
// one is complete and synced. It returns the slot written; Switch makes
// it current.
func (s *Slots) Install(r io.Reader, version, digest string) (Slot, error) {
	if err := CheckVersion(version); err != nil {
		return "", fmt.Errorf("slots: install: %w", err)
	}
	if err := checkDigest(digest, false); err != nil {
		return "", fmt.Errorf("slots: install: %w", err)
	}
	unlock, err := s.lock(true)
	if err != nil {
		return "", err
	}
	defer unlock()
	p, _, err := s.load()
	if err != nil {
		return "", err
	}
	if p.Trial {
		return "", ErrTrial
	}
	slot := p.Current.Other()
	if err := s.writeBinary(slot, r, digest); err != nil {
		return "", fmt.Errorf("slots: install into %s: %w", slot, err)
	}
	p.Versions[slot.index()], p.Digests[slot.index()] = version, digest
	if p.Previous == slot {
		// What it held is gone: nothing to go back to there.
		p.Previous = p.Current
	}
	if err := s.write(p); err != nil {
		return "", err
	}
	return slot, nil
}

func (s *Slots) writeBinary(slot Slot, r io.Reader, digest string) error {
	dir := string(slot)
	if err := s.root.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if fi, err := s.root.Lstat(dir); err != nil {
		return err
	} else if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", filepath.Join(s.dir, dir))
	}
	tmp, final := dir+"/."+Binary+".tmp", dir+"/"+Binary
	_ = s.root.Remove(tmp)
	f, err := s.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o700)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			_ = s.root.Remove(tmp)
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, s.MaxSize+1))
	if err != nil {
		return err
	}
	if n > s.MaxSize {
		return fmt.Errorf("binary larger than %d bytes", s.MaxSize)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return fmt.Errorf("digest %s, want %s", got, digest)
	}
	if err := s.step("write binary"); err != nil {
		return err
	}
	if err := f.Chmod(0o755); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	ok = true
	if err := f.Close(); err != nil {
		return err
	}
	if err := s.step("fsync binary"); err != nil {
		return err
	}
	if err := s.root.Rename(tmp, final); err != nil {
		return err
	}
	if err := s.step("rename binary"); err != nil {
		return err
	}
	return s.syncDir(dir)
}

// Switch makes slot current on trial for timeout: Previous is the slot
// running now. It takes effect at the next launch (the agent exits with
// ExitRestart).
func (s *Slots) Switch(slot Slot, timeout time.Duration) error {
	if slot != A && slot != B {
		return fmt.Errorf("slots: switch to %q: only a or b", slot)
	}
	if timeout < time.Second || timeout > MaxTrial {
		return fmt.Errorf("slots: switch: a trial of %s: from 1s to %s", timeout, MaxTrial)
	}
	return s.Update(func(p *Pointer) error {
		if p.Trial {
			return ErrTrial
		}
		if p.Current == slot {
			return fmt.Errorf("slots: switch: %s is already current", slot)
		}
		if p.Version(slot) == "" {
			return fmt.Errorf("slots: switch: nothing installed in %s", slot)
		}
		if err := s.CheckBinary(*p, slot); err != nil {
			return fmt.Errorf("slots: switch: %w", err)
		}
		p.Previous, p.Current, p.Trial = p.Current, slot, true
		p.Timeout = int64((timeout + time.Second - 1) / time.Second)
		p.Deadline = s.Now().Unix() + p.Timeout
		p.Boots, p.LastExit = 0, ""
		return nil
	})
}

// MarkHealthy ends the trial of running, if it is on trial: it is the
// known-good slot from now on. The running agent calls it once it is
// connected and its Node reported Ready.
func (s *Slots) MarkHealthy(running Slot) error {
	return s.Update(func(p *Pointer) error {
		if !p.Trial || p.Current != running {
			return nil
		}
		p.Trial, p.Deadline, p.Timeout, p.Boots, p.LastExit = false, 0, 0, 0, ""
		return nil
	})
}

// Rollback ends a failed trial: Previous is current again, and the slot
// left and reason are recorded. Without a trial it does nothing.
func (s *Slots) Rollback(reason string) error {
	return s.Update(func(p *Pointer) error {
		if !p.Trial {
			return nil
		}
		p.Rollback(reason, s.Now())
		return nil
	})
}

// Rollback ends p's trial as failed: Previous is current again, and the
// slot left, its version, now and reason are recorded.
func (p *Pointer) Rollback(reason string, now time.Time) {
	p.RolledBack, p.RolledBackVersion, p.RolledBackAt, p.Reason = p.Current, p.Version(p.Current), now.Unix(), Text(reason)
	p.Current, p.Previous = p.Previous, p.Current
	p.Trial, p.Deadline, p.Timeout, p.Boots, p.LastExit = false, 0, 0, 0, ""
}

// Leave makes fallback current without a trial because Current cannot
// run (its binary is missing or damaged), recording why as a rollback.
func (p *Pointer) Leave(fallback Slot, reason string, now time.Time) {
	p.Rollback(reason, now)
	p.Current = fallback
	if p.Previous == fallback {
		p.Previous = Packaged
	}
}

// CheckBinary checks slot's binary: a regular file (no symlink) whose
// digest is the one recorded. Packaged is only checked to exist.
func (s *Slots) CheckBinary(p Pointer, slot Slot) error {
	if slot == Packaged {
		fi, err := os.Stat(s.Packaged)
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file", s.Packaged)
		}
		return nil
	}
	root, err := s.openRoot(false)
	if err != nil {
		return fmt.Errorf("slot %s: %w", slot, err)
	}
	name := string(slot) + "/" + Binary
	for _, n := range []string{string(slot), name} {
		fi, err := root.Lstat(n)
		if err != nil {
			return fmt.Errorf("slot %s: %w", slot, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("slot %s: %s is a symlink", slot, n)
		}
	}
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("slot %s: %w", slot, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode()&0o100 == 0 {
		return fmt.Errorf("slot %s: %s is not an executable file", slot, name)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, s.MaxSize+1)); err != nil {
		return fmt.Errorf("slot %s: %w", slot, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != p.Digests[slot.index()] {
		return fmt.Errorf("slot %s: binary does not match its digest (damaged)", slot)
	}
	return nil
}

// State is what the gateway reports about its slots.
type State struct {
	Current, Previous Slot
	// CurrentVersion is the version in Current ("" for Packaged: the
	// running agent knows its own).
	CurrentVersion, PreviousVersion string
	// Trial: Current is on trial until TrialDeadline; Boots launches so far.
	Trial         bool
	TrialDeadline time.Time
	Boots         int
	// The last rollback, if any.
	RolledBack        Slot
	RolledBackVersion string
	RolledBackAt      time.Time
	Reason            string
}

// State reads the pointer for status reports.
func (s *Slots) State() (State, error) {
	p, _, err := s.Load()
	if err != nil {
		return State{}, err
	}
	st := State{
		Current: p.Current, Previous: p.Previous,
		CurrentVersion: p.Version(p.Current), PreviousVersion: p.Version(p.Previous),
		Trial: p.Trial, Boots: p.Boots,
		RolledBack: p.RolledBack, RolledBackVersion: p.RolledBackVersion, Reason: p.Reason,
	}
	if p.Trial {
		st.TrialDeadline = time.Unix(p.Deadline, 0)
	}
	if p.RolledBackAt != 0 {
		st.RolledBackAt = time.Unix(p.RolledBackAt, 0)
	}
	return st, nil
}
