package twins_test

import (
	"errors"
	"testing"
	"time"

	"outpost.dev/agent/twins"
	"outpost.dev/wire"
)

// stored is a report body as the outbox hands it to its link.
type stored []byte

func (s stored) MarshalCBOR() ([]byte, error) { return s, nil }
func (stored) Validate() error                { return nil }

// sink is a link that records what it is given.
type sink struct {
	frames []wire.Frame
	fail   error
}

func (s *sink) Connected() bool { return true }

func (s *sink) Send(t wire.Type, seq uint64, body wire.Body) error {
	if s.fail != nil {
		return s.fail
	}
	b, err := wire.Encode(t, seq, body)
	if err != nil {
		return err
	}
	f, err := wire.Decode(b)
	if err != nil {
		return err
	}
	s.frames = append(s.frames, f)
	return nil
}

func (s *sink) last(t *testing.T) (wire.TwinReport, int) {
	t.Helper()
	var r wire.TwinReport
	f := s.frames[len(s.frames)-1]
	if err := f.DecodeBody(&r); err != nil {
		t.Fatal(err)
	}
	b, _ := wire.EncodeFrame(f)
	return r, len(b)
}

func storedReport(t *testing.T, dev string, temp float64, connected bool) stored {
	t.Helper()
	conds := []wire.Condition{{Type: "Connected", Status: "True"}, {Type: "Error", Status: "False"}}
	if !connected {
		conds[0] = wire.Condition{Type: "Connected", Status: "False", Reason: "NoAnswer", Message: "nack"}
	}
	b, err := wire.Marshal(&wire.TwinReport{Device: dev, Conditions: conds, Values: []wire.TwinValue{
		{Name: "temperature", Num: temp, At: time.Now().UnixMilli()}, {Name: "extra", Num: 1, At: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	return stored(b)
}

// TestCompactor: reports travel as stored until the connection's initial
// sync is stored; then by link id, listed properties by index, the
// conditions only when they changed on this connection (or the last send
// failed); a Device without a link id, and everything after a disconnect,
// travels by name again; a changed store is read again.
func TestCompactor(t *testing.T) {
	src := newSource()
	dev := &wire.Device{Driver: "ds18b20", Properties: []wire.DeviceProperty{{Name: "humidity"}, {Name: "temperature"}}}
	src.objs["a"] = wire.Object{Kind: wire.KindDevice, UID: "uid-a", Namespace: "default", Name: "a", Version: "1.4", LinkID: 4, Device: dev}
	src.objs["b"] = wire.Object{Kind: wire.KindDevice, UID: "uid-b", Namespace: "default", Name: "b", Version: "1", Device: dev}
	link := &sink{}
	c := twins.NewCompactor(link, src, src.changes, nil)

	check := func(name string, body wire.Body, want func(r wire.TwinReport) bool) {
		t.Helper()
		if err := c.Send(wire.TypeTwinReport, uint64(len(link.frames)+1), body); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if r, n := link.last(t); !want(r) {
			t.Fatalf("%s: sent %+v (%d B)", name, r, n)
		}
	}
	byName := func(dev string) func(wire.TwinReport) bool {
		return func(r wire.TwinReport) bool {
			return r.Device == dev && r.ID == 0 && len(r.Values) == 2 && len(r.Conditions) == 2 && len(r.Short) == 0
		}
	}
	byID := func(conds int) func(wire.TwinReport) bool {
		return func(r wire.TwinReport) bool {
			return r.Device == "" && r.ID == 4 && len(r.Short) == 1 && r.Short[0].Index == 1 && r.Short[0].Num == 21.5 &&
				len(r.Values) == 1 && r.Values[0].Name == "extra" && len(r.Conditions) == conds
		}
	}
	check("before the sync", storedReport(t, "default/a", 21.5, true), byName("default/a"))
	c.Synced()
	check("first by id", storedReport(t, "default/a", 21.5, true), byID(2))
	check("conditions unchanged", storedReport(t, "default/a", 21.5, true), byID(0))
	check("conditions changed", storedReport(t, "default/a", 21.5, false), byID(2))
	check("no link id", storedReport(t, "default/b", 21.5, true), byName("default/b"))
	check("unknown device", storedReport(t, "default/z", 21.5, true), byName("default/z"))

	link.fail = errors.New("queue full")
	if c.Send(wire.TypeTwinReport, 99, storedReport(t, "default/a", 21.5, true)) == nil {
		t.Fatal("send error lost")
	}
	link.fail = nil
	check("after a failed send", storedReport(t, "default/a", 21.5, true), byID(2))

	c.Disconnected()
	check("disconnected", storedReport(t, "default/a", 21.5, true), byName("default/a"))
	c.Synced()
	check("next connection", storedReport(t, "default/a", 21.5, true), byID(2))

	// A new generation with a new id: read again after the change signal.
	src.mu.Lock()
	o := src.objs["a"]
	o.LinkID, o.Version = 9, "2.9"
	src.objs["a"] = o
	src.mu.Unlock()
	src.poke()
	check("new id", storedReport(t, "default/a", 21.5, true), func(r wire.TwinReport) bool { return r.ID == 9 && len(r.Conditions) == 2 })

	if err := c.Send(wire.TypeHeartbeat, 0, nil); err != nil || link.frames[len(link.frames)-1].Type != wire.TypeHeartbeat {
		t.Fatalf("other frames: %v", err)
	}
}

// TestCompactSize: one changed value by link id, conditions unchanged,
// is a small frame; ages are counted from now and never negative.
func TestCompactSize(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	r := &wire.TwinReport{Device: "default/twin-link-d0000", Values: []wire.TwinValue{{Name: "temperature", Num: 21.53, At: now.UnixMilli() - 40}},
		Conditions: []wire.Condition{{Type: "Connected", Status: "True"}, {Type: "Error", Status: "False"}}}
	full, _ := wire.Encode(wire.TypeTwinReport, 200, r)
	c := twins.Compact(r, 1, []string{"temperature"}, false, now)
	short, err := wire.Encode(wire.TypeTwinReport, 200, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("twin report frame: %d B by name, %d B by link id", len(full), len(short))
	if len(short) > 26 || c.Short[0].Age != 40 {
		t.Fatalf("compact report %+v is %d B", c, len(short))
	}
	if c := twins.Compact(r, 1, []string{"temperature"}, true, now.Add(-time.Second)); c.Short[0].Age != 0 || len(c.Conditions) != 2 {
		t.Fatalf("value from the future: %+v", c)
	}
}
