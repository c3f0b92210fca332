// Package relay is the cloud end of the Outpost link: an HTTPS server that
// accepts agent WebSocket connections on wire.PathConnect, serves the join
// endpoints, and reports its health and metrics.
//
// The relay is stateless. A node's identity is the common name of its
// client certificate, verified against the relay CA and accepted only while
// the node's identity record in the API server lists it (cloud/identity:
// revoked, replaced and deleted nodes are refused by every replica, and
// their live links closed); everything it knows about a node comes from the
// node's hello and the API server, so any replica can serve any agent and
// a restart loses nothing.
//
// To run one in-process (tests, benchmarks):
//
//	asNode, _ := asnode.New(restConfig)
//	srv, _ := relay.New(relay.Config{Client: client, AsNode: asNode, CA: ca, Log: log})
//	hs := httptest.NewUnstartedServer(srv)
//	hs.Listener = srv.Listener(hs.Listener) // agent links are served by the poller
//	hs.TLS = srv.TLSConfig(servingCert)
//	hs.StartTLS()
//	defer srv.Close() // closes agent connections; then hs.Close()
//
// Agent links (wire.PathConnect) cost no goroutine while idle: once the
// upgrade is answered, the connection is served by a few epoll loops
// (cloud/linkpoll), so the listener the server is served on must be
// wrapped by Server.Listener and its TLS configuration come from
// Server.TLSConfig (the poller runs the links' TLS 1.3 record layer once
// they are adopted). Linux only, as linkpoll.
package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"outpost.dev/cloud/asnode"
	"outpost.dev/cloud/devices"
	"outpost.dev/cloud/identity"
	"outpost.dev/cloud/join"
	"outpost.dev/cloud/linkpoll"
	"outpost.dev/cloud/nodes"
	"outpost.dev/cloud/pki"
	"outpost.dev/cloud/podstatus"
	"outpost.dev/cloud/upgrade"
	"outpost.dev/wire"
)

// Defaults for Config fields left zero.
const (
	DefaultHeartbeatInterval = 10 * time.Second
	DefaultLeaseDuration     = 40 * time.Second
	DefaultNodeCertValidity  = 30 * 24 * time.Hour
	// MinNodeCertValidity is the shortest NodeCertValidity. A node
	// certificate starts five minutes before it is issued (for clocks
	// that are behind), so at the agents' default renewal point, 75 % of
	// its lifetime, one valid for less than 100 s would be due for
	// renewal the moment it is issued. Agents that renew earlier
	// (certRotateAt) need longer ones: cloud/README.md has the rule.
	MinNodeCertValidity = 2 * time.Minute
	DefaultHelloTimeout = 10 * time.Second
	// DefaultMaxHandshakes and DefaultHandshakeRetryAfter: see
	// Config.MaxHandshakes.
	DefaultMaxHandshakes       = 64
	DefaultHandshakeRetryAfter = 2 * time.Second
	DefaultNamespace           = "outpost-system"
	// readyCacheFor is how long a /readyz answer is reused, so probes
	// from many sources cost the API server one request per period.
	readyCacheFor = 5 * time.Second
)

// Config is everything a relay needs. Client, AsNode, CA and Log are
// required.
type Config struct {
	// Client is the relay's own identity: join, the relay CA, creating a
	// new edge Node (which only it may label an edge node), and the
	// readiness check.
	Client kubernetes.Interface
	// AsNode hands out the client acting as a node (package asnode):
	// everything the relay reads and writes on a connected node's behalf
	// goes through it.
	AsNode asnode.Provider
	CA     *pki.CA
	// Namespace is the relay's own namespace, where node identity records
	// live (cloud/identity); "" means DefaultNamespace.
	Namespace string
	// HeartbeatInterval is sent to agents in the HelloAck; a connection
	// silent for three intervals is closed.
	HeartbeatInterval time.Duration
	// LeaseDuration is written into node Leases, renewed every quarter.
	LeaseDuration time.Duration
	// NodeCertValidity is the lifetime of node certificates, issued at
	// join and on the link (agents rotate them; see wire.CertRequest);
	// 0 means DefaultNodeCertValidity, at least MinNodeCertValidity.
	NodeCertValidity time.Duration
	// HelloTimeout bounds the wait for an agent's first frame.
	HelloTimeout time.Duration
	// Version is this relay's version, sent in the HelloAck.
	Version string
	Log     *slog.Logger
	// Registry receives all relay metrics and is served on /metrics. Nil
	// means a new private registry.
	Registry *prometheus.Registry
	// APICheck reports whether the API server is reachable, for /readyz.
	// Nil means asking the API server for its version.
	APICheck func(ctx context.Context) error

	// NodeWriters bounds the Node status and Lease writes in flight at
	// once, all agents together; zero means nodes.DefaultWorkers. Size it
	// to the API budget with nodes.WorkersFor.
	NodeWriters int

	// PodStatusQPS and PodStatusBurst bound the pod status writes of all
	// agents together; zero means podstatus.DefaultQPS and DefaultBurst.
	PodStatusQPS   float32
	PodStatusBurst int

	// KubeletAddress and KubeletPort say where the API server reaches
	// this replica's kubelet API (KubeletHandler): they are written into
	// the Node of each agent connected here, as its first InternalIP and
	// status.daemonEndpoints.kubeletEndpoint.Port. Empty and 0 leave the
	// Node's addresses as the agent reports them.
	KubeletAddress string
	KubeletPort    int32
	// KubeletNodeListen, if set, gives each connected node a kubelet API
	// listener of its own (serving TLS, as KubeletTLSConfig), whose port
	// is written into the node's Node instead of KubeletPort: clients
	// that address a kubelet by IP and port alone (metrics-server) then
	// reach the node they mean. On an error the node keeps the shared
	// listener.
	KubeletNodeListen func() (net.Listener, error)
	// KubeletClientNames and KubeletClientGroups are the client
	// certificate common names and organizations the kubelet API accepts
	// (the API server's --kubelet-client-certificate). Both nil means
	// DefaultKubeletClientName only.
	KubeletClientNames  []string
	KubeletClientGroups []string
	// MaxStreamsPerNode bounds the concurrent log streams of one agent;
	// zero means DefaultMaxStreamsPerNode.
	MaxStreamsPerNode int
	// MaxTunnelsPerNode bounds the concurrent exec, attach and
	// port-forward connections of one agent; zero means
	// DefaultMaxTunnelsPerNode.
	MaxTunnelsPerNode int
	// MaxHandshakes bounds the agent connections between their upgrade
	// request and their hello-ack (identity check, Node and pod sync
	// setup); more are answered 503 with Retry-After: HandshakeRetryAfter
	// (whole seconds), which agents honour with jitter. Connected agents
	// are never affected. Zero means DefaultMaxHandshakes and
	// DefaultHandshakeRetryAfter.
	MaxHandshakes       int
	HandshakeRetryAfter time.Duration

	// Dynamic reads Devices and writes their status (cloud/devices); nil
	// turns the Device API off (agents get no Devices, twin reports are
	// acked and dropped). Install the CRD first (devices.EnsureCRD).
	Dynamic dynamic.Interface
	// DeviceStatus bounds the Device status writes of all agents together
	// (token bucket, queue of Devices waiting); zero fields take the
	// devices package's defaults.
	DeviceStatus devices.WriterConfig

	// Upgrades, if set (and Dynamic), rolls AgentUpgrades out to the
	// agents connected to this replica (cloud/upgrade); the relay fills in
	// Dynamic, Nodes (its edge Node informer) and Log. Install the CRD
	// first (upgrade.EnsureCRD).
	Upgrades *upgrade.Config

	// JoinPerIPRate and JoinPerIPBurst limit the join requests of one
	// client address; zero means join.DefaultPerIPRate and
	// DefaultPerIPBurst.
	JoinPerIPRate  float64
	JoinPerIPBurst int

	// TokenRefreshAfter, if positive, refreshes the service-account
	// tokens of agents' pods at most this long after issue (for tests;
	// see pods.Config).
	TokenRefreshAfter time.Duration
}

// Server is a relay. It is an http.Handler serving every relay endpoint;
// serve it over TLS with TLSConfig.
type Server struct {
	cfg       Config
	log       *slog.Logger
	mux       *http.ServeMux
	nodes     *nodes.Writer
	podStatus *podstatus.Writer
	devices   *devices.Writer // nil without Config.Dynamic
	// deviceHub is the one watch of all Devices, fanned out to the
	// connections by node (nil without Config.Dynamic).
	deviceHub *devices.Hub
	// upgrades rolls AgentUpgrades out (nil without Config.Upgrades).
	upgrades *upgrade.Controller
	metrics  *metrics
	// ids are the node identity records; joinCache's edge Nodes tell a
	// deleted node. Both close revoked links (watchRevocations).
	ids       *identity.Registry
	joinCache *join.Cache

	ctx    context.Context // ends when the relay closes; parent of every connection
	cancel context.CancelFunc
	// wg counts the agent connections until their end is undone, and
	// the goroutines they run work on (offload, rotations).
	wg sync.WaitGroup
	// poller serves the agent links once upgraded.
	poller *linkpoll.Poller
	// handshakes holds a token per connection not yet past its
	// hello-ack (Config.MaxHandshakes).
	handshakes chan struct{}

	mu     sync.Mutex
	conns  map[string]*conn // by node name: one connection per node
	closed bool

	// authCache holds the kubelet API's token and access reviews.
	authCache authCache

	readyMu  sync.Mutex
	readyAt  time.Time
	readyErr error
}

// New builds a relay from cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Client == nil || cfg.AsNode == nil || cfg.CA == nil || cfg.Log == nil {
		return nil, errors.New("relay: Client, AsNode, CA and Log are required")
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.HeartbeatInterval < time.Second || cfg.HeartbeatInterval > time.Hour {
		return nil, fmt.Errorf("relay: heartbeat interval %s must be between 1s and 1h (it is sent in whole seconds)", cfg.HeartbeatInterval)
	}
	if cfg.LeaseDuration <= 0 {
		cfg.LeaseDuration = DefaultLeaseDuration
	}
	if cfg.NodeCertValidity <= 0 {
		cfg.NodeCertValidity = DefaultNodeCertValidity
	}
	if cfg.NodeCertValidity < MinNodeCertValidity {
		return nil, fmt.Errorf("relay: node certificate validity %s is under the %s minimum (agents would renew certificates the moment they are issued): raise --node-cert-validity", cfg.NodeCertValidity, MinNodeCertValidity)
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = DefaultHelloTimeout
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.KubeletClientNames == nil && cfg.KubeletClientGroups == nil {
		cfg.KubeletClientNames = []string{DefaultKubeletClientName}
	}
	if cfg.MaxStreamsPerNode <= 0 {
		cfg.MaxStreamsPerNode = DefaultMaxStreamsPerNode
	}
	if cfg.MaxTunnelsPerNode <= 0 {
		cfg.MaxTunnelsPerNode = DefaultMaxTunnelsPerNode
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = DefaultMaxHandshakes
	}
	if cfg.HandshakeRetryAfter < time.Second {
		cfg.HandshakeRetryAfter = DefaultHandshakeRetryAfter
	}
	if cfg.APICheck == nil {
		disc := cfg.Client.Discovery()
		cfg.APICheck = func(ctx context.Context) error {
			done := make(chan error, 1)
			go func() { _, err := disc.ServerVersion(); done <- err }()
			select {
			case err := <-done:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, fmt.Errorf("relay: register metrics: %w", err)
	}
	w, err := nodes.NewWriter(nodes.WriterConfig{
		Client:         cfg.Client,
		LeaseDuration:  cfg.LeaseDuration,
		Log:            cfg.Log,
		Registerer:     cfg.Registry,
		KubeletAddress: cfg.KubeletAddress,
		KubeletPort:    cfg.KubeletPort,
		Workers:        cfg.NodeWriters,
	})
	if err != nil {
		return nil, err
	}
	ps, err := podstatus.NewWriter(podstatus.WriterConfig{
		QPS: cfg.PodStatusQPS, Burst: cfg.PodStatusBurst,
		Log: cfg.Log, Registerer: cfg.Registry,
	})
	if err != nil {
		return nil, err
	}
	poller, err := linkpoll.New(linkpoll.Config{
		MaxMessage: wire.MaxFrameSize,
		MaxQueued:  maxQueued,
		Silent:     3 * cfg.HeartbeatInterval,
		CloseGrace: closeGrace,
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	jc := join.NewCache(cfg.Client)
	ids := identity.New(cfg.Client, cfg.Namespace)
	jh, err := join.New(join.Config{
		Secrets:          jc.Secrets(),
		Nodes:            jc.Nodes(),
		Identities:       ids,
		CA:               cfg.CA,
		NodeCertValidity: cfg.NodeCertValidity,
		Log:              cfg.Log,
		Registerer:       cfg.Registry,
		PerIPRate:        cfg.JoinPerIPRate,
		PerIPBurst:       cfg.JoinPerIPBurst,
	})
	if err != nil {
		cancel()
		poller.Close()
		return nil, err
	}
	var dw *devices.Writer
	if cfg.Dynamic != nil {
		dc := cfg.DeviceStatus
		dc.Dynamic, dc.Log, dc.Registerer = cfg.Dynamic, cfg.Log, cfg.Registry
		if dw, err = devices.NewWriter(dc); err != nil {
			cancel()
			poller.Close()
			return nil, err
		}
	}
	s := &Server{
		handshakes: make(chan struct{}, cfg.MaxHandshakes),
		ids:        ids,
		joinCache:  jc,
		cfg:        cfg,
		log:        cfg.Log,
		mux:        http.NewServeMux(),
		nodes:      w,
		podStatus:  ps,
		devices:    dw,
		metrics:    m,
		ctx:        ctx,
		cancel:     cancel,
		poller:     poller,
		conns:      map[string]*conn{},
	}
	if cfg.Dynamic != nil {
		s.deviceHub = devices.NewHub(ctx, cfg.Dynamic)
	}
	if cfg.Dynamic != nil && cfg.Upgrades != nil {
		uc := *cfg.Upgrades
		uc.Dynamic, uc.Nodes, uc.Log = cfg.Dynamic, s.edgeNodes, cfg.Log
		if s.upgrades, err = upgrade.New(uc); err != nil {
			cancel()
			poller.Close()
			return nil, err
		}
	}
	s.watchRevocations()
	jc.Run(ctx)
	ids.Run(ctx)
	s.mux.Handle(wire.PathJoinCA, jh)
	s.mux.Handle(wire.PathJoin, jh)
	s.mux.HandleFunc("GET "+wire.PathConnect, s.serveConnect)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	s.mux.HandleFunc("GET /readyz", s.serveReady)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// TLSConfig returns the server TLS configuration: serving certificate
// cert, and client certificates verified against the relay CA when given.
// They are optional at the TLS layer because the join endpoints serve nodes
// that have no certificate yet; wire.PathConnect requires one. The check
// is the standard one (verifyNode) but for one rule: a node certificate
// expired less than wire.CertGrace ago passes, and its connection may only
// rotate it (serveExpired).
//
// It is the poller's (linkpoll.Poller.TLSConfig): agent links, which
// must negotiate TLS 1.3 (serveConnect refuses others), are adopted with
// their application traffic secrets; the join endpoints take TLS 1.2 too.
func (s *Server) TLSConfig(cert tls.Certificate) *tls.Config {
	return s.poller.TLSConfig(&tls.Config{
		MinVersion:       tls.VersionTLS12,
		Certificates:     []tls.Certificate{cert},
		ClientAuth:       tls.RequestClientCert,
		VerifyConnection: s.tlsVerify,
		NextProtos:       []string{"http/1.1"}, // WebSocket upgrades need HTTP/1.1
	})
}

// Listener wraps ln, the TCP listener the server is served on (under its
// TLS), so that agent links can be handed to the relay's poller once
// upgraded: every listener serving wire.PathConnect must be wrapped.
func (s *Server) Listener(ln net.Listener) net.Listener { return s.poller.Listener(ln) }

// Connected returns the number of agents connected now.
func (s *Server) Connected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Close closes every agent connection with "going away", so agents
// reconnect (to another replica), waits for their close handshakes (at
// most closeGrace), closes the rest, and waits until everything the
// connections started has stopped. It writes nothing to the API server:
// nodes stay Ready if their agents come back before the node lifecycle
// controller's grace period ends. Close the http.Server (or listener)
// too; agent links are not its to close.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.close(closeGoingAway, "relay shutting down")
	}
	for _, c := range conns {
		<-c.closed // the close frame's grace bounds it
	}
	s.cancel()       // work on the connections still in their hello ends here
	s.poller.Close() // and those connections with it
	s.wg.Wait()
	if s.devices != nil {
		s.devices.Close()
	}
	if s.deviceHub != nil {
		s.deviceHub.Wait()
	}
	if s.upgrades != nil {
		s.upgrades.Close()
	}
	return nil
}

func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	s.readyMu.Lock()
	if time.Since(s.readyAt) > readyCacheFor {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		s.readyErr = s.cfg.APICheck(ctx)
		cancel()
		s.readyAt = time.Now()
	}
	err := s.readyErr
	s.readyMu.Unlock()
	if err != nil {
		http.Error(w, "API server unreachable: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// register makes c the connection of its node, returning the one it
// replaces, if any.
func (s *Server) register(c *conn) (old *conn, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, false
	}
	old = s.conns[c.node]
	s.conns[c.node] = c
	if old == nil {
		s.metrics.connected.Inc()
	}
	return old, true
}

// unregister forgets c unless a newer connection replaced it already.
func (s *Server) unregister(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns[c.node] == c {
		delete(s.conns, c.node)
		s.metrics.connected.Dec()
	}
}

// edgeNodes lists the edge Nodes as the join cache's informer has them,
// for the upgrade controller's selectors.
func (s *Server) edgeNodes() []upgrade.Node {
	objs := s.joinCache.NodeInformer().GetStore().List()
	out := make([]upgrade.Node, 0, len(objs))
	for _, o := range objs {
		if n, ok := o.(*corev1.Node); ok {
			out = append(out, upgrade.Node{Name: n.Name, Labels: n.Labels})
		}
	}
	return out
}
