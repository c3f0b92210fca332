package mqtt

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Handler receives one message.
type Handler func(topic string, payload []byte)

// Conn is a connection to a broker, as an ordinary MQTT client.
type Conn interface {
	// Publish sends a message at most once; while an external broker is
	// unreachable messages are dropped (OnConnect republishes state).
	Publish(topic string, payload []byte, retain bool) error
	// Subscribe calls h for every message matching filter, also after
	// reconnects. h must not block for long.
	Subscribe(filter string, h Handler) error
	// OnConnect registers fn, called after every (re)connection; with the
	// embedded broker once, at once.
	OnConnect(fn func())
	// Close publishes offline on the status topic and disconnects (and
	// stops the embedded broker).
	Close() error
}

// Config configures the connection. With URL empty the embedded broker is
// started on Listen; otherwise the agent connects to URL.
type Config struct {
	// Node is the node name, used in topics and the client id.
	Node string
	// Listen is the embedded broker's TCP address (default
	// 127.0.0.1:1883). Username and Password, when set, are required of
	// clients (of the embedded broker) or sent (to an external one).
	Listen             string
	Username, Password string
	// CertFile and KeyFile make the embedded broker speak TLS.
	CertFile, KeyFile string
	// URL is an external broker: tcp://, mqtt://, ssl://, tls:// or
	// mqtts:// HOST:PORT. CAFile is the PEM CA that signed its
	// certificate (default: the system roots).
	URL    string
	CAFile string
	// MaxClients bounds the embedded broker's clients (default 32).
	MaxClients int
	Log        *slog.Logger
}

// DefaultListen is the embedded broker's default address: loopback only.
const DefaultListen = "127.0.0.1:1883"

// StatusTopic is the node status topic.
func StatusTopic(node string) string { return "outpost/" + node + "/status" }

// Broker starts an embedded broker and returns the agent's inline
// connection to it.
type Broker func(cfg Config) (Conn, error)

var (
	mu      sync.Mutex
	broker  Broker
	dialect = map[string]DialectFunc{}
)

// RegisterBroker makes the embedded broker available; the broker package
// calls it from init.
func RegisterBroker(b Broker) {
	mu.Lock()
	defer mu.Unlock()
	if broker != nil {
		panic("mqtt: broker registered twice")
	}
	broker = b
}

// HaveBroker says whether the embedded broker is compiled in.
func HaveBroker() bool {
	mu.Lock()
	defer mu.Unlock()
	return broker != nil
}

// ErrNoBroker is returned by Open when no URL is configured and the
// embedded broker was compiled out.
var ErrNoBroker = errors.New("the embedded MQTT broker is not in this build (built with outpost_no_broker): set mqtt.url to an external broker, or mqtt.enabled: false")

// Open connects as cfg says: to the external broker when cfg.URL is set,
// else to a newly started embedded broker. Connecting to an external
// broker does not wait: it retries in the background with backoff.
func Open(cfg Config) (Conn, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.URL != "" {
		return dialExternal(cfg)
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	mu.Lock()
	b := broker
	mu.Unlock()
	if b == nil {
		return nil, ErrNoBroker
	}
	return b(cfg)
}

// CheckConfig reports settings that cannot work, saying what to do.
func CheckConfig(cfg Config) error {
	if cfg.URL != "" {
		if _, err := brokerURL(cfg.URL); err != nil {
			return err
		}
		if cfg.CertFile != "" || cfg.KeyFile != "" {
			return errors.New("mqtt: certFile and keyFile are for the embedded broker; an external broker (url) takes caFile")
		}
		return nil
	}
	if cfg.CAFile != "" {
		return errors.New("mqtt: caFile is for an external broker (url); the embedded broker takes certFile and keyFile")
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return errors.New("mqtt: certFile and keyFile go together")
	}
	if (cfg.Username == "") != (cfg.Password == "") {
		return errors.New("mqtt: username and password go together")
	}
	if cfg.Listen != "" {
		if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
			return fmt.Errorf("mqtt: listen %q is not HOST:PORT (like %s)", cfg.Listen, DefaultListen)
		}
	}
	return nil
}

// brokerURL checks an external broker URL and names its scheme tcp or
// ssl.
func brokerURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.Port() == "" {
		return nil, fmt.Errorf("mqtt: url %q must look like tcp://HOST:1883 or ssl://HOST:8883", s)
	}
	switch u.Scheme {
	case "tcp", "mqtt":
		u.Scheme = "tcp"
	case "ssl", "tls", "mqtts", "tcps":
		u.Scheme = "ssl"
	default:
		return nil, fmt.Errorf("mqtt: url %q: scheme %q is not tcp, mqtt, ssl, tls or mqtts", s, u.Scheme)
	}
	return u, nil
}

// LoadCA reads a PEM CA bundle for an external broker's certificate.
func LoadCA(path string) (*tls.Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("mqtt: caFile: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("mqtt: caFile %s holds no PEM certificate", path)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// DialectFunc returns a Dialect for a bridge; dialect packages register
// one by name.
type DialectFunc func(b *Bridge) Dialect

// RegisterDialect makes a topic dialect available by name ("kubeedge").
func RegisterDialect(name string, f DialectFunc) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := dialect[name]; dup || name == "" {
		panic("mqtt: bad or duplicate dialect " + name)
	}
	dialect[name] = f
}

// Dialects lists the dialects compiled in.
func Dialects() []string {
	mu.Lock()
	defer mu.Unlock()
	return slices.Sorted(maps.Keys(dialect))
}

func lookupDialect(name string) (DialectFunc, error) {
	mu.Lock()
	defer mu.Unlock()
	f, ok := dialect[name]
	if !ok {
		have := strings.Join(slices.Sorted(maps.Keys(dialect)), ", ")
		if have == "" {
			have = "none"
		}
		return nil, fmt.Errorf("mqtt: topic dialect %q is not in this build (have: %s; was it compiled out with outpost_no_%s?)", name, have, name)
	}
	return f, nil
}

// backoff doubles from 1 s to a minute.
func nextBackoff(d time.Duration) time.Duration { return min(max(2*d, time.Second), time.Minute) }
