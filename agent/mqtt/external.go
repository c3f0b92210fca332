package mqtt

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// ErrNotConnected is returned by Publish while an external broker is
// unreachable; the message is dropped.
var ErrNotConnected = errors.New("mqtt: not connected to the broker")

// external is a paho connection to a broker the agent does not run. It
// connects in the background with backoff and logs one line per state
// change, never one per attempt.
type external struct {
	c    paho.Client
	url  string
	node string
	log  *slog.Logger
	stop chan struct{}
	once sync.Once

	mu        sync.Mutex
	subs      map[string]Handler
	onConnect []func()
	lastState string
	attempts  int // first-connection attempts that failed
}

func dialExternal(cfg Config) (Conn, error) {
	u, err := brokerURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	e := &external{url: u.Redacted(), node: cfg.Node, log: cfg.Log, stop: make(chan struct{}), subs: map[string]Handler{}}
	o := paho.NewClientOptions().AddBroker(u.String()).
		SetClientID("outpost-agent-"+cfg.Node).
		SetCleanSession(true).
		SetAutoReconnect(true).
		SetConnectRetry(false).
		SetMaxReconnectInterval(time.Minute).
		SetConnectTimeout(10*time.Second).
		SetKeepAlive(30*time.Second).
		SetOrderMatters(false).
		SetWill(StatusTopic(cfg.Node), "offline", 1, true).
		SetOnConnectHandler(func(paho.Client) { e.connected() }).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			e.state("lost", "MQTT broker connection lost; reconnecting with backoff (up to 1m)", err)
		})
	if cfg.Username != "" {
		o.SetUsername(cfg.Username).SetPassword(cfg.Password)
	}
	if u.Scheme == "ssl" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			if tc, err = LoadCA(cfg.CAFile); err != nil {
				return nil, err
			}
		}
		o.SetTLSConfig(tc)
	}
	e.c = paho.NewClient(o)
	go e.connectLoop()
	return e, nil
}

// connectLoop makes the first connection; paho's auto-reconnect takes over
// once it succeeded.
func (e *external) connectLoop() {
	var backoff time.Duration
	for {
		t := e.c.Connect()
		var err error
		if !t.WaitTimeout(15 * time.Second) {
			err = errors.New("timed out")
		} else {
			err = t.Error()
		}
		if err == nil {
			return
		}
		backoff = nextBackoff(backoff)
		e.mu.Lock()
		e.attempts++
		e.mu.Unlock()
		e.state("down", fmt.Sprintf("MQTT broker unreachable; retrying with backoff (up to 1m), next in %s", backoff.Round(time.Second)), err)
		select {
		case <-e.stop:
			return
		case <-time.After(backoff):
		}
	}
}

// state logs a state change once: repeats of the same state and error
// are quiet.
func (e *external) state(state, msg string, err error) {
	key := state
	if err != nil {
		key += ": " + err.Error()
	}
	e.mu.Lock()
	same := e.lastState == key
	e.lastState = key
	e.mu.Unlock()
	if same {
		return
	}
	if err != nil {
		e.log.Warn(msg, "broker", e.url, "err", err)
	} else {
		e.log.Info(msg, "broker", e.url)
	}
}

func (e *external) connected() {
	e.state("up", "MQTT broker connected", nil)
	e.c.Publish(StatusTopic(e.node), 1, true, []byte("online"))
	e.mu.Lock()
	subs := make(map[string]Handler, len(e.subs))
	for f, h := range e.subs {
		subs[f] = h
	}
	fns := append([]func(){}, e.onConnect...)
	e.mu.Unlock()
	for f, h := range subs {
		e.subscribe(f, h)
	}
	// paho calls this on its own goroutine; republishing may be long.
	go func() {
		for _, fn := range fns {
			fn()
		}
	}()
}

func (e *external) subscribe(filter string, h Handler) {
	e.c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) { h(m.Topic(), m.Payload()) })
}

func (e *external) Publish(topic string, payload []byte, retain bool) error {
	if !e.c.IsConnectionOpen() {
		return ErrNotConnected
	}
	e.c.Publish(topic, 0, retain, payload)
	return nil
}

func (e *external) Subscribe(filter string, h Handler) error {
	e.mu.Lock()
	e.subs[filter] = h
	e.mu.Unlock()
	if e.c.IsConnectionOpen() {
		e.subscribe(filter, h)
	}
	return nil
}

func (e *external) OnConnect(fn func()) {
	e.mu.Lock()
	e.onConnect = append(e.onConnect, fn)
	e.mu.Unlock()
	if e.c.IsConnectionOpen() {
		go fn()
	}
}

func (e *external) Close() error {
	e.once.Do(func() {
		close(e.stop)
		if e.c.IsConnectionOpen() {
			e.c.Publish(StatusTopic(e.node), 1, true, []byte("offline")).WaitTimeout(time.Second)
		}
		e.c.Disconnect(250)
	})
	return nil
}
