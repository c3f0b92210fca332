package tunnel

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"outpost.dev/wire"
)

// pair joins a relay-side and an agent-side Mux through real frame
// encoding; frames the agent side sends are also recorded.
func pair(t *testing.T) (relay, agent *Mux, fromAgent func() []wire.Frame) {
	t.Helper()
	var mu sync.Mutex
	var rec []wire.Frame
	deliver := func(to **Mux, record bool) Send {
		return func(ty wire.Type, body wire.Body) error {
			b, err := wire.Encode(ty, 0, body)
			if err != nil {
				return err
			}
			f, err := wire.Decode(b)
			if err != nil {
				return err
			}
			if record {
				mu.Lock()
				rec = append(rec, f)
				mu.Unlock()
			}
			if f.Type == wire.TypeTunnelOpen {
				var o wire.TunnelOpen
				if err := f.DecodeBody(&o); err != nil {
					return err
				}
				_, err := (*to).Accept(&o)
				return err
			}
			ok, err := (*to).Handle(f)
			if !ok || err != nil {
				t.Errorf("frame %s not handled: %v", f.Type, err)
			}
			return nil
		}
	}
	relay = New(deliver(&agent, false), 4, wire.ChanStdin, wire.ChanStdout, wire.ChanStderr)
	agent = New(deliver(&relay, true), 4, wire.ChanStdin)
	return relay, agent, func() []wire.Frame {
		mu.Lock()
		defer mu.Unlock()
		return append([]wire.Frame(nil), rec...)
	}
}

func open(t *testing.T, relay, agent *Mux) (*Stream, *Stream) {
	t.Helper()
	r, err := relay.Open(&wire.TunnelOpen{Kind: wire.TunnelExec, Namespace: "ns", Pod: "p", Container: "c", Command: []string{"cat"}, Stdin: true, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	a := agent.get(r.ID)
	if a == nil {
		t.Fatal("agent did not accept the tunnel")
	}
	return r, a
}

// More than the window passes through, in order, because the reader's
// acknowledgements grant credit; the writer waits while nobody reads.
func TestCreditCarriesMoreThanTheWindow(t *testing.T) {
	relay, agent, _ := pair(t)
	r, a := open(t, relay, agent)
	want := bytes.Repeat([]byte("0123456789abcdef"), 5*wire.TunnelWindow/16+3)
	done := make(chan error, 1)
	go func() {
		_, err := a.Write(wire.ChanStdout, want)
		a.Close(&wire.TunnelClose{Exited: true, ExitCode: 3})
		done <- err
	}()
	// The writer is held at the window until someone reads.
	deadline := time.After(5 * time.Second)
	for {
		a.mu.Lock()
		sent := a.sent
		a.mu.Unlock()
		if sent == wire.TunnelWindow {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("writer sent %d bytes, want it held at the window %d", sent, wire.TunnelWindow)
		case <-time.After(time.Millisecond):
		}
	}
	got, err := io.ReadAll(r.Reader(wire.ChanStdout))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d", len(got), len(want))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-r.Done()
	peer, _ := r.Result()
	if peer == nil || !peer.Exited || peer.ExitCode != 3 {
		t.Fatalf("close = %+v, want exit 3", peer)
	}
	if relay.Len() != 0 || agent.Len() != 0 {
		t.Fatalf("tunnels left: relay %d, agent %d", relay.Len(), agent.Len())
	}
}

// Hostile frames end their tunnel only, with a reason; others keep going.
func TestHostileFramesEndOnlyTheirTunnel(t *testing.T) {
	for _, c := range []struct {
		name string
		d    wire.TunnelData
		want string
	}{
		{"wrong channel", wire.TunnelData{Channel: wire.ChanStdout, Data: []byte("x")}, "does not receive"},
		{"past the window", wire.TunnelData{Data: make([]byte, wire.MaxStreamChunk)}, "more than the window"},
		{"after end", wire.TunnelData{Data: []byte("x")}, "after its end"},
	} {
		t.Run(c.name, func(t *testing.T) {
			relay, agent, fromAgent := pair(t)
			_, a := open(t, relay, agent)
			other, otherA := open(t, relay, agent)
			handle := func(d wire.TunnelData) {
				d.ID = a.ID
				b, _ := wire.Encode(wire.TypeTunnelData, 0, &d)
				f, _ := wire.Decode(b)
				if ok, err := agent.Handle(f); !ok || err != nil {
					t.Fatalf("handle: %v %v", ok, err)
				}
			}
			switch c.name {
			case "past the window":
				for range wire.TunnelWindow/wire.MaxStreamChunk + 1 {
					handle(c.d)
				}
			case "after end":
				handle(wire.TunnelData{EOF: true})
				handle(c.d)
			default:
				handle(c.d)
			}
			<-a.Done()
			if _, err := a.Result(); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("agent side ended with %v, want %q", err, c.want)
			}
			var closed *wire.TunnelClose
			for _, f := range fromAgent() {
				var cl wire.TunnelClose
				if f.Type == wire.TypeTunnelClose && f.DecodeBody(&cl) == nil && cl.ID == a.ID {
					closed = &cl
				}
			}
			if closed == nil || !strings.Contains(closed.Error, c.want) {
				t.Fatalf("close sent to the relay = %+v, want one saying %q", closed, c.want)
			}
			// The other tunnel still carries data.
			if _, err := other.Write(wire.ChanStdin, []byte("still here")); err != nil {
				t.Fatal(err)
			}
			if err := other.CloseWrite(wire.ChanStdin); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(otherA.Reader(wire.ChanStdin))
			if err != nil || string(got) != "still here" {
				t.Fatalf("other tunnel read %q, %v", got, err)
			}
		})
	}
}

func TestUnknownTunnelAndBounds(t *testing.T) {
	relay, agent, fromAgent := pair(t)
	b, _ := wire.Encode(wire.TypeTunnelData, 0, &wire.TunnelData{ID: 99, Data: []byte("x")})
	f, _ := wire.Decode(b)
	if ok, err := agent.Handle(f); !ok || err != nil {
		t.Fatal(ok, err)
	}
	fs := fromAgent()
	var cl wire.TunnelClose
	if len(fs) != 1 || fs[0].Type != wire.TypeTunnelClose || fs[0].DecodeBody(&cl) != nil || cl.ID != 99 || !strings.Contains(cl.Error, "not open") {
		t.Fatalf("answer to data for an unknown tunnel: %+v", fs)
	}
	// An ack for more than was sent ends the tunnel.
	r, a := open(t, relay, agent)
	b, _ = wire.Encode(wire.TypeTunnelAck, 0, &wire.TunnelAck{ID: r.ID, Consumed: 10})
	f, _ = wire.Decode(b)
	if _, err := relay.Handle(f); err != nil {
		t.Fatal(err)
	}
	<-r.Done()
	<-a.Done()
	// The bound on concurrent tunnels.
	for range 4 {
		open(t, relay, agent)
	}
	if _, err := relay.Open(&wire.TunnelOpen{Kind: wire.TunnelPortForward, Namespace: "ns", Pod: "p", Port: 80}); !errors.Is(err, ErrTooMany) {
		t.Fatalf("fifth tunnel: %v, want ErrTooMany", err)
	}
	// Shutdown ends everything, and readers and writers return.
	relay.Shutdown(errors.New("link lost"))
	if _, err := relay.Open(&wire.TunnelOpen{Kind: wire.TunnelPortForward, Namespace: "ns", Pod: "p", Port: 80}); err == nil {
		t.Fatal("open after shutdown succeeded")
	}
}

// FuzzHandle feeds arbitrary frame bodies of the tunnel types to an
// agent-side Mux with open tunnels. Nothing may panic, no tunnel may
// buffer more than the window, and the Mux keeps serving a good tunnel.
func FuzzHandle(f *testing.F) {
	for _, c := range []struct {
		t wire.Type
		b wire.Body
	}{
		{wire.TypeTunnelData, &wire.TunnelData{ID: 1, Data: []byte("x"), EOF: true}},
		{wire.TypeTunnelData, &wire.TunnelData{ID: 1, Channel: wire.ChanStdout, Data: []byte("x")}},
		{wire.TypeTunnelAck, &wire.TunnelAck{ID: 1, Consumed: 1 << 40}},
		{wire.TypeTunnelResize, &wire.TunnelResize{ID: 1, Width: 80, Height: 24}},
		{wire.TypeTunnelClose, &wire.TunnelClose{ID: 2, Exited: true, ExitCode: 1}},
	} {
		b, err := wire.Encode(c.t, 0, c.b)
		if err != nil {
			f.Fatal(err)
		}
		fr, _ := wire.Decode(b)
		f.Add(uint8(c.t), []byte(fr.Body), []byte(fr.Body))
	}
	f.Fuzz(func(t *testing.T, typ uint8, body1, body2 []byte) {
		m := New(func(wire.Type, wire.Body) error { return nil }, 4, wire.ChanStdin)
		var streams []*Stream
		for id := uint32(1); id <= 3; id++ {
			s, err := m.Accept(&wire.TunnelOpen{ID: id})
			if err != nil {
				t.Fatal(err)
			}
			streams = append(streams, s)
		}
		ty := wire.TypeTunnelData + wire.Type(typ%4)
		for _, b := range [][]byte{body1, body2, body1} {
			_, _ = m.Handle(wire.Frame{Type: ty, Body: b})
		}
		for _, s := range streams {
			s.mu.Lock()
			n := 0
			for _, b := range s.buf {
				n += len(b)
			}
			if n > wire.TunnelWindow {
				t.Fatalf("tunnel %d buffers %d bytes", s.ID, n)
			}
			s.mu.Unlock()
		}
		// The Mux still takes a new tunnel.
		if _, err := m.Accept(&wire.TunnelOpen{ID: 4}); err != nil {
			t.Fatalf("a new tunnel after hostile frames: %v", err)
		}
		m.Shutdown(errors.New("done"))
	})
}

// A frame that does not validate (here, data past wire.MaxStreamChunk)
// ends the tunnel it names, saying why; the link is not blamed.
func TestOversizeFrameEndsItsTunnel(t *testing.T) {
	relay, agent, fromAgent := pair(t)
	_, a := open(t, relay, agent)
	body, err := cbor.Marshal(map[int]any{1: a.ID, 3: make([]byte, wire.MaxStreamChunk+1)})
	if err != nil {
		t.Fatal(err)
	}
	ok, err := agent.Handle(wire.Frame{Type: wire.TypeTunnelData, Body: body})
	if !ok || err != nil {
		t.Fatalf("handle: %v %v", ok, err)
	}
	<-a.Done()
	if _, err := a.Result(); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("tunnel ended with %v, want the size limit named", err)
	}
	var cl wire.TunnelClose
	fs := fromAgent()
	if len(fs) == 0 || fs[len(fs)-1].DecodeBody(&cl) != nil || cl.ID != a.ID || !strings.Contains(cl.Error, "limit") {
		t.Fatalf("close sent: %+v", fs)
	}
	// Without a tunnel to name, the error is the caller's to report.
	if _, err := agent.Handle(wire.Frame{Type: wire.TypeTunnelData, Body: []byte{0xff}}); err == nil {
		t.Fatal("a body that names no tunnel was not reported")
	}
}
