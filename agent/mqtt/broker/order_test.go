package broker_test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"outpost.dev/agent/mqtt"
	"outpost.dev/agent/mqtt/broker"
	"outpost.dev/test/wait"
)

// session is one app connection's view of a topic: every value it got, in
// order.
type session struct {
	name  string
	mu    sync.Mutex
	seen  []int
	probe string // the last probe message received
}

func (s *session) add(v int) {
	s.mu.Lock()
	s.seen = append(s.seen, v)
	s.mu.Unlock()
}

func (s *session) last() (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.seen) == 0 {
		return 0, false
	}
	return s.seen[len(s.seen)-1], true
}

// TestRetainedNeverStale: while the agent publishes a retained topic with
// increasing values, apps connect and subscribe (exact and wildcard
// filters, and again on the same connection). Whatever reaches an app,
// retained after its SUBACK or live, its values for the topic never go
// back, and once the agent stops every app's last value is the last one
// published: an app never keeps an older retained value that arrived
// after a newer live one.
func TestRetainedNeverStale(t *testing.T) {
	c, err := broker.Start(mqtt.Config{Node: "gw", Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	conn := c.(*broker.Conn)
	const tp = "outpost/gw/devices/default/air/status"
	filters := []string{tp, "outpost/gw/devices/#", "outpost/+/devices/+/+/status", "#"}

	var published atomic.Int64
	stop := make(chan struct{})
	pubDone := make(chan struct{})
	if err := conn.Publish(tp, []byte("1"), true); err != nil {
		t.Fatal(err)
	}
	published.Store(1)
	go func() {
		defer close(pubDone)
		for v := int64(2); ; v++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := conn.Publish(tp, []byte(strconv.FormatInt(v, 10)), true); err != nil {
				t.Error(err)
				return
			}
			published.Store(v)
		}
	}()

	var (
		smu      sync.Mutex
		sessions []*session
		clients  []paho.Client
	)
	defer func() {
		for _, cl := range clients {
			cl.Disconnect(0)
		}
	}()
	// 28 apps at once, under the broker's 32.
	const workers, rounds = 4, 7
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				s := &session{name: fmt.Sprintf("w%d-r%d", w, r)}
				o := paho.NewClientOptions().AddBroker("tcp://" + conn.Addr()).SetClientID(s.name).
					SetConnectTimeout(5 * time.Second).SetAutoReconnect(false)
				cl := paho.NewClient(o)
				if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
					t.Errorf("%s: connect: %v", s.name, tok.Error())
					return
				}
				smu.Lock()
				sessions, clients = append(sessions, s), append(clients, cl)
				smu.Unlock()
				h := func(_ paho.Client, m paho.Message) {
					if m.Topic() == "probe" {
						s.mu.Lock()
						s.probe = string(m.Payload())
						s.mu.Unlock()
					}
					if m.Topic() != tp {
						return
					}
					v, err := strconv.Atoi(string(m.Payload()))
					if err != nil {
						t.Errorf("%s: payload %q", s.name, m.Payload())
						return
					}
					s.add(v)
				}
				// The same filter twice: the second SUBSCRIBE sends the
				// retained message again.
				f := filters[(w+r)%len(filters)]
				if tok := cl.Subscribe("probe", 0, h); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
					t.Errorf("%s: subscribe probe: %v", s.name, tok.Error())
					return
				}
				for range 2 {
					if tok := cl.Subscribe(f, byte(r%2), h); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
						t.Errorf("%s: subscribe %s: %v", s.name, f, tok.Error())
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-pubDone

	// A message on a full client queue is dropped; once every app has had
	// a probe published after the last value, its queue has room for the
	// final value.
	smu.Lock()
	defer smu.Unlock()
	wait.State(t, t.Context(), 10*time.Second, "every app to get a probe", func() (bool, string) {
		if err := conn.Publish("probe", []byte("p"), false); err != nil {
			return false, err.Error()
		}
		for _, s := range sessions {
			s.mu.Lock()
			p := s.probe
			s.mu.Unlock()
			if p == "" {
				return false, s.name + " has none"
			}
		}
		return true, ""
	})
	final := int(published.Load()) + 1
	if err := conn.Publish(tp, []byte(strconv.Itoa(final)), true); err != nil {
		t.Fatal(err)
	}
	wait.State(t, t.Context(), 10*time.Second, "every app's last value to be the last published", func() (bool, string) {
		for _, s := range sessions {
			if v, _ := s.last(); v != final {
				return false, fmt.Sprintf("%s's last value is %d, the last published %d", s.name, v, final)
			}
		}
		return true, ""
	})
	for _, s := range sessions {
		s.mu.Lock()
		for i := 1; i < len(s.seen); i++ {
			if s.seen[i] < s.seen[i-1] {
				t.Errorf("%s got %d after %d (values %v)", s.name, s.seen[i], s.seen[i-1], s.seen[max(0, i-5):min(len(s.seen), i+5)])
				break
			}
		}
		s.mu.Unlock()
	}
}

// TestRetainedOnceAndNotShared: a subscriber gets the agent's retained
// message once, with the retain flag, before the next live one; a shared
// subscription gets no retained message, only live ones. (The shared
// filter comes in one SUBSCRIBE with an exact one on another retained
// topic: once that topic's retained message is in, the retained pass is
// over.)
func TestRetainedOnceAndNotShared(t *testing.T) {
	c, err := broker.Start(mqtt.Config{Node: "gw", Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	conn := c.(*broker.Conn)
	const tp, other = "outpost/gw/devices/default/air/reported", "outpost/gw/status"
	if err := conn.Publish(other, []byte("online"), true); err != nil {
		t.Fatal(err)
	}
	for i, f := range []string{tp, "outpost/gw/#", "$share/apps/outpost/gw/#"} {
		t.Run(f, func(t *testing.T) {
			if err := conn.Publish(tp, []byte("old"), true); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var got []string
			var others int
			o := paho.NewClientOptions().AddBroker("tcp://" + conn.Addr()).SetClientID("app-" + strconv.Itoa(i))
			cl := paho.NewClient(o)
			if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatal(tok.Error())
			}
			defer cl.Disconnect(0)
			if tok := cl.SubscribeMultiple(map[string]byte{f: 1, other: 1}, func(_ paho.Client, m paho.Message) {
				mu.Lock()
				defer mu.Unlock()
				if m.Topic() == other {
					others++
					return
				}
				got = append(got, fmt.Sprintf("%s retained=%v", m.Payload(), m.Retained()))
			}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatal(tok.Error())
			}
			wait.For(t, 10*time.Second, "the retained message of "+other, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return others > 0
			})
			if err := conn.Publish(tp, []byte("new"), true); err != nil {
				t.Fatal(err)
			}
			wait.For(t, 10*time.Second, "the live message", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(got) > 0 && got[len(got)-1] == "new retained=false"
			})
			want := []string{"old retained=true", "new retained=false"}
			if strings.HasPrefix(f, "$share/") {
				want = want[1:]
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(got, want) {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}
