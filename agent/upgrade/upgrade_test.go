package upgrade

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"outpost.dev/wire"
)

// installer is a test double of the A/B slots (agent/slots is the real
// one, behind the Installer interface).
type installer struct {
	mu        sync.Mutex
	state     State
	installed []byte
	version   string
	switched  string
	deadline  time.Duration
	healthy   int
	// switchDone receives a value after each Switch, if set.
	switchDone chan struct{}
}

func (i *installer) Install(r io.Reader, version string, digest [32]byte) (string, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return "", err
	}
	if sha256.Sum256(b) != digest {
		return "", errors.New("digest mismatch")
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.installed, i.version = b, version
	return "B", nil
}

func (i *installer) Switch(slot string, d time.Duration) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.switched, i.deadline = slot, d
	if i.switchDone != nil {
		i.switchDone <- struct{}{}
	}
	return nil
}

func (i *installer) MarkHealthy() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.healthy++
	i.state.Trial = false
	return nil
}

func (i *installer) State() State {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.state
}

func (i *installer) snapshot() (installed []byte, switched string, healthy int) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.installed, i.switched, i.healthy
}

func (i *installer) setState(s State) { i.mu.Lock(); i.state = s; i.mu.Unlock() }

// waitSwitch waits for the Switch after a Switching report.
func (i *installer) waitSwitch(t *testing.T) {
	t.Helper()
	select {
	case <-i.switchDone:
	case <-time.After(10 * time.Second):
		t.Fatal("no Switch")
	}
}

// link records the chunk requests; connected says whether Send works.
type link struct {
	mu        sync.Mutex
	connected bool
	reqs      chan wire.UpgradeChunkRequest
}

func (l *link) Send(t wire.Type, _ uint64, body wire.Body) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.connected {
		return errors.New("not connected")
	}
	if t != wire.TypeUpgradeChunkRequest {
		return errors.New("unexpected frame " + t.String())
	}
	if err := body.Validate(); err != nil {
		return err
	}
	l.reqs <- *body.(*wire.UpgradeChunkRequest)
	return nil
}

func (l *link) set(up bool) { l.mu.Lock(); l.connected = up; l.mu.Unlock() }

// outbox records the reports.
type outbox struct{ reports chan wire.UpgradeReport }

func (o *outbox) Append(key string, t wire.Type, body wire.Body) (uint64, error) {
	if key != reportKey || t != wire.TypeUpgradeReport {
		return 0, errors.New("unexpected report")
	}
	o.reports <- *body.(*wire.UpgradeReport)
	return 1, nil
}

type rig struct {
	t    *testing.T
	m    *Manager
	inst *installer
	link *link
	box  *outbox
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
	dir  string
	stop func()
}

func newRig(t *testing.T, dir string, inst *installer, priv ed25519.PrivateKey) *rig {
	t.Helper()
	r := &rig{t: t, inst: inst, dir: dir, priv: priv, pub: priv.Public().(ed25519.PublicKey),
		link: &link{connected: true, reqs: make(chan wire.UpgradeChunkRequest, 16)},
		box:  &outbox{reports: make(chan wire.UpgradeReport, 64)}}
	m, err := New(Config{Dir: dir, PublicKey: r.pub, Installer: inst, Link: r.link, Outbox: r.box})
	if err != nil {
		t.Fatal(err)
	}
	r.m = m
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	r.stop = func() { cancel(); <-done }
	t.Cleanup(r.stop)
	return r
}

func (r *rig) offer(version string, artifact []byte) *wire.UpgradeOffer {
	d := sha256.Sum256(artifact)
	return &wire.UpgradeOffer{Name: "agent-" + version, Version: version, Size: int64(len(artifact)), SHA256: d[:],
		Signature: ed25519.Sign(r.priv, wire.UpgradeSignedMessage(version, d)), TrialSeconds: 120}
}

func (r *rig) frame(t wire.Type, b wire.Body) {
	r.t.Helper()
	enc, err := wire.Encode(t, 0, b)
	if err != nil {
		r.t.Fatal(err)
	}
	f, err := wire.Decode(enc)
	if err != nil {
		r.t.Fatal(err)
	}
	if !r.m.Frame(f) {
		r.t.Fatalf("%s not taken", t)
	}
}

func (r *rig) request() wire.UpgradeChunkRequest {
	r.t.Helper()
	select {
	case q := <-r.link.reqs:
		return q
	case <-time.After(10 * time.Second):
		r.t.Fatal("no chunk request")
	}
	panic("unreachable")
}

// serve answers one request from data, in chunks of at most chunk bytes.
func (r *rig) serve(q wire.UpgradeChunkRequest, data []byte) {
	end := min(q.Offset+q.Length, int64(len(data)))
	for off := q.Offset; off < end; off += wire.MaxUpgradeChunk {
		r.frame(wire.TypeUpgradeChunk, &wire.UpgradeChunk{Version: q.Version, Offset: off, Data: data[off:min(off+wire.MaxUpgradeChunk, end)]})
	}
}

// until returns the reports up to the first one in phase.
func (r *rig) until(phase wire.UpgradePhase) []wire.UpgradeReport {
	r.t.Helper()
	var seen []wire.UpgradeReport
	for {
		select {
		case rep := <-r.box.reports:
			seen = append(seen, rep)
			if rep.Phase == phase {
				return seen
			}
		case <-time.After(10 * time.Second):
			r.t.Fatalf("no %s report; got %+v", phase, seen)
		}
	}
}

func key(t *testing.T) ed25519.PrivateKey {
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

func artifact(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>9)
	}
	return b
}

func phases(rs []wire.UpgradeReport) string {
	var s []string
	for _, r := range rs {
		s = append(s, string(r.Phase))
	}
	return strings.Join(s, ",")
}

func TestUpgradeDownloadsVerifiesInstallsAndSwitches(t *testing.T) {
	inst := &installer{state: State{Version: "1.0.0"}, switchDone: make(chan struct{}, 1)}
	r := newRig(t, t.TempDir(), inst, key(t))
	data := artifact(3*wire.MaxUpgradeWindow + 1234)
	r.frame(wire.TypeUpgradeOffer, r.offer("1.1.0", data))
	for {
		q := r.request()
		if q.Length > wire.MaxUpgradeWindow {
			t.Fatalf("window of %d", q.Length)
		}
		r.serve(q, data)
		if q.Offset+q.Length == int64(len(data)) {
			break
		}
	}
	got := r.until(wire.UpgradeSwitching)
	if p := phases(got); !strings.HasPrefix(p, "Downloading") || !strings.HasSuffix(p, "Verifying,Switching") {
		t.Fatalf("reports %s", p)
	}
	inst.waitSwitch(t)
	installed, slot, _ := inst.snapshot()
	if !bytes.Equal(installed, data) || slot != "B" || inst.deadline != 120*time.Second {
		t.Fatalf("installed %d bytes, switched to %q for %s", len(installed), slot, inst.deadline)
	}
	if _, err := os.Stat(filepath.Join(r.dir, partFile)); !os.IsNotExist(err) {
		t.Fatalf("partial file left after install: %v", err)
	}
	// Offered again before the launcher restarted it (a relay that has
	// not seen the Switching report yet): nothing is fetched again.
	r.frame(wire.TypeUpgradeOffer, r.offer("1.1.0", data))
	r.frame(wire.TypeUpgradeOffer, r.offer("1.2.0", artifact(10))) // a marker behind it
	if q := r.request(); q.Version != "1.2.0" {
		t.Fatalf("fetching %s again after switching to it", q.Version)
	}
	r.stop()
	os.Remove(filepath.Join(r.dir, offerFile))
	os.Remove(filepath.Join(r.dir, partFile))

	// The launcher starts the new version on trial; once connected it
	// declares itself healthy.
	inst.setState(State{Version: "1.1.0", Trial: true})
	r2 := newRig(t, r.dir, inst, r.priv)
	r2.m.Connected()
	rep := r2.until(wire.UpgradeHealthy)
	if rep[len(rep)-1].Name != "agent-1.1.0" {
		t.Fatalf("healthy report %+v", rep)
	}
	if _, _, healthy := inst.snapshot(); healthy != 1 {
		t.Fatalf("MarkHealthy called %d times", healthy)
	}
}

func TestUpgradeRefusesTamperedArtifactsBeforeInstall(t *testing.T) {
	data := artifact(100_000)
	for _, c := range []struct {
		name   string
		tamper func(r *rig, o *wire.UpgradeOffer) []byte // what the relay serves
		want   string
	}{
		{"bad signature", func(r *rig, o *wire.UpgradeOffer) []byte {
			o.Signature[0] ^= 1
			return data
		}, "signature"},
		{"signed by another key", func(r *rig, o *wire.UpgradeOffer) []byte {
			o.Signature = ed25519.Sign(key(t), wire.UpgradeSignedMessage(o.Version, o.Digest()))
			return data
		}, "signature"},
		{"signature for another version", func(r *rig, o *wire.UpgradeOffer) []byte {
			o.Signature = ed25519.Sign(r.priv, wire.UpgradeSignedMessage("9.9.9", o.Digest()))
			return data
		}, "signature"},
		{"wrong bytes", func(r *rig, o *wire.UpgradeOffer) []byte {
			bad := bytes.Clone(data)
			bad[50_000] ^= 0xff
			return bad
		}, "sha256"},
	} {
		t.Run(c.name, func(t *testing.T) {
			inst := &installer{state: State{Version: "1.0.0"}}
			r := newRig(t, t.TempDir(), inst, key(t))
			o := r.offer("1.1.0", data)
			served := c.tamper(r, o)
			r.frame(wire.TypeUpgradeOffer, o)
			if c.want == "signature" {
				rep := r.until(wire.UpgradeFailed)
				if len(rep) != 1 || !strings.Contains(rep[0].Reason, c.want) {
					t.Fatalf("reports %+v", rep)
				}
				select {
				case q := <-r.link.reqs:
					t.Fatalf("asked for bytes of an unsigned artifact: %+v", q)
				default:
				}
			} else {
				for {
					q := r.request()
					r.serve(q, served)
					if q.Offset+q.Length == int64(len(served)) {
						break
					}
				}
				rep := r.until(wire.UpgradeFailed)
				if !strings.Contains(rep[len(rep)-1].Reason, c.want) {
					t.Fatalf("reports %+v", rep)
				}
			}
			if installed, slot, _ := inst.snapshot(); installed != nil || slot != "" {
				t.Fatal("a tampered artifact reached the installer")
			}
			if _, err := os.Stat(filepath.Join(r.dir, partFile)); !os.IsNotExist(err) {
				t.Fatalf("partial file kept: %v", err)
			}
		})
	}
}

func TestUpgradeResumesFromPartialFileAfterLinkDrop(t *testing.T) {
	inst := &installer{state: State{Version: "1.0.0"}, switchDone: make(chan struct{}, 1)}
	dir := t.TempDir()
	priv := key(t)
	r := newRig(t, dir, inst, priv)
	data := artifact(2*wire.MaxUpgradeWindow + 5000)
	o := r.offer("1.1.0", data)
	r.frame(wire.TypeUpgradeOffer, o)
	// The first window arrives whole (the agent asks for the next: it
	// wrote it), half of the second, then the link drops.
	r.serve(r.request(), data)
	q := r.request()
	half := wire.UpgradeChunkRequest{Version: q.Version, Offset: q.Offset, Length: q.Length / 2}
	r.serve(half, data)
	r.link.set(false)
	r.m.Disconnected()
	// A chunk of the lost window arriving late is ignored.
	r.frame(wire.TypeUpgradeChunk, &wire.UpgradeChunk{Version: "1.1.0", Offset: half.Offset + half.Length, Data: data[half.Offset+half.Length : half.Offset+half.Length+10]})
	r.stop() // and the agent restarts meanwhile

	r2 := newRig(t, dir, inst, priv)
	r2.m.Connected()
	r2.frame(wire.TypeUpgradeOffer, o) // the relay offers again on connect
	rep := r2.until(wire.UpgradeDownloading)
	// Whatever of the half window was written before the stop is kept.
	held := rep[0].Bytes
	if held < wire.MaxUpgradeWindow || held > half.Offset+half.Length {
		t.Fatalf("resumed holding %d bytes, want %d..%d", held, wire.MaxUpgradeWindow, half.Offset+half.Length)
	}
	q = r2.request()
	if q.Offset != held {
		t.Fatalf("asked from %d after the drop, want %d", q.Offset, held)
	}
	for {
		r2.serve(q, data)
		if q.Offset+q.Length == int64(len(data)) {
			break
		}
		q = r2.request()
	}
	r2.until(wire.UpgradeSwitching)
	inst.waitSwitch(t)
	if installed, _, _ := inst.snapshot(); !bytes.Equal(installed, data) {
		t.Fatal("installed artifact differs from the published one")
	}
}

func TestUpgradeRefusesBytesPastTheWindow(t *testing.T) {
	inst := &installer{state: State{Version: "1.0.0"}}
	r := newRig(t, t.TempDir(), inst, key(t))
	data := artifact(1000)
	r.frame(wire.TypeUpgradeOffer, r.offer("1.1.0", data))
	q := r.request()
	if q.Offset != 0 || q.Length != 1000 {
		t.Fatalf("request %+v", q)
	}
	r.frame(wire.TypeUpgradeChunk, &wire.UpgradeChunk{Version: "1.1.0", Offset: 0, Data: artifact(1001)})
	rep := r.until(wire.UpgradeFailed)
	if !strings.Contains(rep[len(rep)-1].Reason, "past") {
		t.Fatalf("reports %+v", rep)
	}
	if installed, _, _ := inst.snapshot(); installed != nil {
		t.Fatal("installed")
	}
}

func TestUpgradeReportsRollbackAndRunningVersion(t *testing.T) {
	dir := t.TempDir()
	priv := key(t)
	inst := &installer{state: State{Version: "1.1.0"}}
	r := newRig(t, dir, inst, priv)
	// Offered the version it runs: healthy at once, nothing fetched.
	r.frame(wire.TypeUpgradeOffer, r.offer("1.1.0", artifact(10)))
	if rep := r.until(wire.UpgradeHealthy); len(rep) != 1 {
		t.Fatalf("reports %+v", rep)
	}
	r.stop()

	// A switch whose trial failed: the launcher rolled back.
	o := r.offer("1.2.0", artifact(10))
	rec, _ := wire.Marshal(o)
	if err := writeFile(filepath.Join(dir, switchedFile), rec); err != nil {
		t.Fatal(err)
	}
	inst.setState(State{Version: "1.1.0", RolledBack: "1.2.0", Reason: "1.2.0 exited 2 during its trial"})
	r2 := newRig(t, dir, inst, priv)
	r2.m.Connected()
	rep := r2.until(wire.UpgradeRolledBack)
	if rep[0].Version != "1.2.0" || !strings.Contains(rep[0].Reason, "exited 2") {
		t.Fatalf("reports %+v", rep)
	}
}

func TestNewRefusesWithoutPinnedKey(t *testing.T) {
	_, err := New(Config{Dir: t.TempDir(), Installer: &installer{}, Link: &link{}, Outbox: &outbox{}})
	if err == nil || !strings.Contains(err.Error(), "upgradePublicKey") {
		t.Fatalf("New without a key: %v", err)
	}
}

// TestUpgradeOfferOfTheVersionOnTrialIsIgnored: a relay that has not yet
// seen the trial's report offers the version again; nothing is fetched.
func TestUpgradeOfferOfTheVersionOnTrialIsIgnored(t *testing.T) {
	inst := &installer{state: State{Version: "1.1.0", Trial: true}}
	r := newRig(t, t.TempDir(), inst, key(t))
	r.frame(wire.TypeUpgradeOffer, r.offer("1.1.0", artifact(10)))
	r.frame(wire.TypeUpgradeOffer, r.offer("1.2.0", artifact(10))) // a marker behind it
	if q := r.request(); q.Version != "1.2.0" {
		t.Fatalf("fetching %s, the version on trial", q.Version)
	}
	if rep := r.until(wire.UpgradeDownloading); len(rep) != 1 || rep[0].Version != "1.2.0" {
		t.Fatalf("reports %+v", rep)
	}
}

// TestUpgradeAsksAgainWhenStalled: a request the link could not take,
// or a window that brings nothing, is asked for again while the offer
// stands.
func TestUpgradeAsksAgainWhenStalled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inst := &installer{state: State{Version: "1.0.0"}}
		r := newRig(t, t.TempDir(), inst, key(t))
		r.link.set(false) // the request does not go out
		data := artifact(1000)
		r.frame(wire.TypeUpgradeOffer, r.offer("1.1.0", data))
		r.until(wire.UpgradeDownloading)
		r.link.set(true)
		time.Sleep(recheck)
		synctest.Wait()
		if q := r.request(); q.Offset != 0 {
			t.Fatalf("asked from %d", q.Offset)
		}
		// The relay sends nothing: a minute later it is asked again.
		time.Sleep(stallAfter + recheck)
		synctest.Wait()
		q := r.request()
		r.serve(q, data)
		r.until(wire.UpgradeSwitching)
	})
}
