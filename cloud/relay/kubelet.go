package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"outpost.dev/wire"
)

// The kubelet API, as far as the relay serves it for edge nodes.
//
// The API server calls a node's kubelet for `kubectl logs` at the node's
// preferred address and status.daemonEndpoints.kubeletEndpoint.Port. Each
// relay replica that holds an agent's connection writes its own kubelet
// address (Config.KubeletAddress, first InternalIP) and port into that
// agent's Node, so the API server dials the replica that can reach the
// agent. The replica authenticates the API server by its client
// certificate, finds the pod's node, and tunnels the request over the
// agent's link as a stream (wire.StreamOpen, StreamData, StreamAck).
// exec, attach and port-forward are served the same way, as tunnels
// (tunnels.go).
//
// Errors are answered with status 400 (the agent refused: unknown
// container, no previous instance), 403 (not the API server) or 500
// (the relay cannot reach the agent), since the API server passes the text
// of those on to kubectl and drops it for others.

// Defaults for the log streams.
const (
	// DefaultMaxStreamsPerNode bounds the concurrent log streams of one
	// agent on a replica.
	DefaultMaxStreamsPerNode = 8
	// DefaultKubeletClientName is the common name of the client
	// certificate kube-apiserver presents to kubelets (kubeadm's
	// apiserver-kubelet-client).
	DefaultKubeletClientName = "kube-apiserver-kubelet-client"
	// streamFirstFrame bounds the wait for the agent's first answer (it
	// sends an empty StreamData once it found the log).
	streamFirstFrame = 30 * time.Second
	// streamQueue bounds the frames of one stream waiting for the HTTP
	// client; the agent's window bounds their bytes.
	streamQueue = 128
)

// KubeletHandler serves the kubelet API paths the API server calls for
// edge nodes. Serve it over TLS with KubeletTLSConfig.
func (s *Server) KubeletHandler() http.Handler { return s.kubeletHandler("") }

// nodeKey carries the node a node's own kubelet listener serves.
type nodeKey struct{}

// kubeletHandler is KubeletHandler for the listener of node alone, or of
// every node connected here for "".
func (s *Server) kubeletHandler(node string) http.Handler {
	h := s.kubeletMux()
	if node == "" {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), nodeKey{}, node)))
	})
}

// serveKubelet starts the node's own kubelet listener when the relay
// gives nodes one (Config.KubeletNodeListen) and returns its port, or 0.
func (c *conn) serveKubelet() int32 {
	if c.s.cfg.KubeletNodeListen == nil {
		return 0
	}
	ln, err := c.s.cfg.KubeletNodeListen()
	if err != nil {
		c.log.Warn("no kubelet API listener of its own for this node; it keeps the shared one, which clients addressing kubelets by IP and port (metrics-server) cannot tell apart", "err", err)
		return 0
	}
	c.kubelet = &http.Server{Handler: c.s.kubeletHandler(c.node), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(c.log.Handler(), slog.LevelDebug)}
	go func() { _ = c.kubelet.Serve(ln) }()
	return int32(ln.Addr().(*net.TCPAddr).Port)
}

// stopKubelet closes the node's own kubelet listener and its requests.
func (c *conn) stopKubelet() {
	if c.kubelet != nil {
		_ = c.kubelet.Close()
	}
}

func (s *Server) kubeletMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", s.serveContainerLogs)
	s.registerTunnels(mux)
	s.registerResource(mux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "the Outpost relay serves only /containerLogs, /exec, /attach, /portForward, /metrics, /metrics/resource and /stats/summary of the kubelet API for edge nodes", http.StatusNotFound)
	})
	return s.kubeletAuth(mux)
}

// KubeletTLSConfig is the kubelet listener's TLS configuration: serving
// certificate cert, and client certificates verified against clientCAs
// (the cluster CA that signed the API server's kubelet client
// certificate, as kube-apiserver --kubelet-client-certificate). A client
// without a certificate may present a bearer token on the paths
// kubeletAuth checks with the API server (kubeletauthz.go).
func KubeletTLSConfig(cert tls.Certificate, clientCAs *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    clientCAs,
	}
}

// kubeletAuth lets through the API server only: a verified client
// certificate whose common name is one of Config.KubeletClientNames or
// whose organization is one of Config.KubeletClientGroups; except on the
// resource usage paths, which any client the API server authorizes for
// nodes/metrics or nodes/stats may call (webhookAuth).
func (s *Server) kubeletAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sub := webhookSubresource(r.URL.Path); sub != "" {
			if s.webhookAuth(w, r, sub) {
				next.ServeHTTP(w, r)
			}
			return
		}
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
			http.Error(w, "a client certificate signed by the cluster CA is required", http.StatusUnauthorized)
			return
		}
		sub := r.TLS.VerifiedChains[0][0].Subject
		ok := slices.Contains(s.cfg.KubeletClientNames, sub.CommonName)
		for _, o := range sub.Organization {
			ok = ok || slices.Contains(s.cfg.KubeletClientGroups, o)
		}
		if !ok {
			s.log.Warn("kubelet API request refused", "remote", r.RemoteAddr, "cn", sub.CommonName, "o", sub.Organization)
			http.Error(w, fmt.Sprintf("client %q (groups %v) may not use the kubelet API of edge nodes", sub.CommonName, sub.Organization), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// logOpen parses the kubelet's containerLogs query into a StreamOpen.
func logOpen(r *http.Request, now time.Time) (*wire.StreamOpen, error) {
	o := &wire.StreamOpen{
		Namespace: r.PathValue("namespace"), Pod: r.PathValue("pod"), Container: r.PathValue("container"),
		TailLines: -1,
	}
	q := r.URL.Query()
	for _, b := range []struct {
		name string
		v    *bool
	}{{"follow", &o.Follow}, {"previous", &o.Previous}, {"timestamps", &o.Timestamps}} {
		if s := q.Get(b.name); s != "" {
			v, err := strconv.ParseBool(s)
			if err != nil {
				return nil, fmt.Errorf("%s=%q: not a boolean", b.name, s)
			}
			*b.v = v
		}
	}
	for _, n := range []struct {
		name string
		v    *int64
	}{{"tailLines", &o.TailLines}, {"limitBytes", &o.LimitBytes}, {"sinceSeconds", &o.SinceSeconds}} {
		if s := q.Get(n.name); s != "" {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil || v < 0 {
				return nil, fmt.Errorf("%s=%q: not a non-negative integer", n.name, s)
			}
			*n.v = v
		}
	}
	if s := q.Get("sinceTime"); s != "" && o.SinceSeconds == 0 {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return nil, fmt.Errorf("sinceTime=%q: not an RFC 3339 time", s)
		}
		// The wire carries seconds before now; round up so nothing after
		// sinceTime is lost.
		o.SinceSeconds = max(1, int64(math.Ceil(now.Sub(t).Seconds())))
	}
	if s := q.Get("stream"); s != "" && s != "All" {
		return nil, fmt.Errorf("stream=%s: edge nodes serve both streams together only (All)", s)
	}
	o.ID = math.MaxUint32 // validated with a placeholder; the stream sets its own
	if err := o.Validate(); err != nil {
		return nil, err
	}
	return o, nil
}

func (s *Server) serveContainerLogs(w http.ResponseWriter, r *http.Request) {
	open, err := logOpen(r, time.Now())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	name := open.Namespace + "/" + open.Pod
	// The pod's node is found among the pod watches of the agents
	// connected here, each made as its node: the relay reads no pod as
	// itself, and a pod of a node connected elsewhere is not its to serve.
	c := s.connOfPod(open.Namespace, open.Pod)
	if c == nil {
		http.Error(w, fmt.Sprintf("pod %s is not bound to an edge node connected to this relay replica (%s): it does not exist, its node is offline, or its node is connected to another replica that has not yet written its address into the Node; try again", name, s.cfg.KubeletAddress), http.StatusInternalServerError)
		return
	}
	node := c.node
	log := s.log.With("node", node, "pod", name, "container", open.Container)
	st, err := c.streams.open()
	if err != nil {
		http.Error(w, fmt.Sprintf("edge node %q: %v", node, err), http.StatusInternalServerError)
		return
	}
	defer c.streams.remove(st.id)
	open.ID = st.id
	if !c.send(wire.TypeStreamOpen, open) {
		http.Error(w, fmt.Sprintf("edge node %q: its connection failed", node), http.StatusInternalServerError)
		return
	}
	s.metrics.streams.Inc()
	defer s.metrics.streams.Dec()
	log.Debug("log stream opened", "stream", st.id, "follow", open.Follow, "previous", open.Previous, "tail", open.TailLines)

	cancelStream := func() { c.send(wire.TypeStreamAck, &wire.StreamAck{ID: st.id, Cancel: true}) }
	first := time.NewTimer(streamFirstFrame)
	defer first.Stop()
	flusher := http.NewResponseController(w)
	wrote := false
	var consumed, granted uint64
	for {
		select {
		case d := <-st.data:
			if !wrote {
				first.Stop()
				if d.EOF && d.Error != "" && len(d.Data) == 0 {
					http.Error(w, d.Error, http.StatusBadRequest)
					return
				}
				w.Header().Set("Content-Type", "text/plain")
				w.WriteHeader(http.StatusOK)
				_ = flusher.Flush() // kubectl sees the stream open even before data
				wrote = true
			}
			if len(d.Data) > 0 {
				if _, err := w.Write(d.Data); err != nil {
					cancelStream()
					return
				}
				_ = flusher.Flush()
				consumed += uint64(len(d.Data))
			}
			if d.EOF {
				if d.Error != "" {
					log.Info("log stream ended with an error", "err", d.Error)
				}
				return
			}
			// Grant more credit once a quarter of the window was used.
			if consumed-granted >= wire.StreamWindow/4 {
				granted = consumed
				st.allowed.Store(granted + wire.StreamWindow) // before the agent can hear of it
				if !c.send(wire.TypeStreamAck, &wire.StreamAck{ID: st.id, Consumed: consumed}) {
					return
				}
			}
		case <-st.broken:
			if !wrote {
				http.Error(w, fmt.Sprintf("edge node %q: %s", node, st.why), http.StatusInternalServerError)
			}
			cancelStream()
			return
		case <-c.streamsDone:
			if !wrote {
				http.Error(w, fmt.Sprintf("edge node %q disconnected", node), http.StatusInternalServerError)
			}
			return
		case <-first.C:
			cancelStream()
			http.Error(w, fmt.Sprintf("edge node %q did not answer within %s", node, streamFirstFrame), http.StatusInternalServerError)
			return
		case <-ctx.Done():
			cancelStream()
			return
		}
	}
}

// connOfPod returns the connection whose node the pod namespace/name is
// bound to, or nil if no agent connected here has it.
func (s *Server) connOfPod(namespace, name string) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		if p := c.pods.Load(); p != nil && p.Bound(namespace, name) {
			return c
		}
	}
	return nil
}

// streamSet holds the log streams of one connection.
type streamSet struct {
	max  int
	mu   sync.Mutex
	next uint32
	m    map[uint32]*stream
}

type stream struct {
	id uint32
	// received counts the agent's bytes; allowed is what the credit
	// granted so far lets it send (acked + wire.StreamWindow).
	received, allowed atomic.Uint64
	data              chan wire.StreamData
	broken            chan struct{} // closed when the agent broke the stream's rules
	why               string
	once              sync.Once
}

var errTooManyStreams = errors.New("too many log streams open to this node; try again later")

func (ss *streamSet) open() (*stream, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.m == nil {
		ss.m = map[uint32]*stream{}
	}
	if len(ss.m) >= ss.max {
		return nil, errTooManyStreams
	}
	for {
		ss.next++
		if ss.next == 0 {
			ss.next = 1
		}
		if ss.m[ss.next] == nil {
			break
		}
	}
	st := &stream{id: ss.next, data: make(chan wire.StreamData, streamQueue), broken: make(chan struct{})}
	st.allowed.Store(wire.StreamWindow)
	ss.m[st.id] = st
	return st, nil
}

func (ss *streamSet) remove(id uint32) {
	ss.mu.Lock()
	delete(ss.m, id)
	ss.mu.Unlock()
}

// deliver hands d to its stream without ever blocking the read loop. Data
// for a stream that has ended is dropped: the agent may send some before
// it sees the cancel.
func (ss *streamSet) deliver(d wire.StreamData) {
	ss.mu.Lock()
	st := ss.m[d.ID]
	ss.mu.Unlock()
	if st == nil {
		return
	}
	if st.received.Add(uint64(len(d.Data))) > st.allowed.Load() {
		st.breakOff()
		return
	}
	select {
	case st.data <- d:
	default:
		st.breakOff()
	}
}

// breakOff ends a stream whose agent ignored the window: what it sent
// beyond it is not buffered.
func (st *stream) breakOff() {
	st.once.Do(func() {
		st.why = "the agent sent more than the stream window"
		close(st.broken)
	})
}
