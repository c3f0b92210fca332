package containerd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"outpost.dev/agent/crilog"
)

// DefaultNamespace is the containerd namespace Outpost's containers live in.
const DefaultNamespace = "outpost"

// Labels Outpost puts on what it creates.
const (
	// LabelManaged is "true" on every container this package creates; a
	// reconciler leaves containers without it alone.
	LabelManaged = "dev.outpost.managed"
	// labelStartedAt records when the task was started (RFC 3339).
	labelStartedAt = "dev.outpost.started-at"
	// labelLogPath records the task's log file.
	labelLogPath = "dev.outpost.log-path"
	// labelLogURI records the stdio URI of a container with a binary logger.
	labelLogURI = "dev.outpost.log-uri"
	// LabelStdin records the FIFO that is the standard input of a
	// container created with Spec.Stdin (write to it to attach).
	LabelStdin = "dev.outpost.stdin"
	// LabelTTY is "true" on a container created with a terminal.
	LabelTTY = "dev.outpost.tty"
)

// Snapshotter is the snapshotter images are unpacked with.
const Snapshotter = "overlayfs"

// runcRuntime is the shim containers run under.
const runcRuntime = "io.containerd.runc.v2"

// Config configures a Runtime.
type Config struct {
	// Address is containerd's gRPC socket; default /run/containerd/containerd.sock.
	Address string
	// Namespace is the containerd namespace; default DefaultNamespace.
	Namespace string
	// Registries holds per-registry settings, keyed by host[:port] as it
	// appears in image references ("127.0.0.1:5000", "registry.local").
	Registries map[string]Registry
	// LogFIFODir holds the stdout and stderr FIFOs of containers logged by
	// the agent (Spec.LogInAgent); an absolute path the agent alone writes.
	LogFIFODir string
	// Log receives progress; nil discards it.
	Log *slog.Logger
}

// Registry is how to reach one registry.
type Registry struct {
	// PlainHTTP allows plain HTTP instead of HTTPS; for registries on
	// loopback or a trusted local network only.
	PlainHTTP bool
	// Username and Password authenticate (basic, or exchanged for a
	// bearer token when the registry asks for one). A pod's pull secrets
	// are tried before them.
	Username, Password string
	// CA is a PEM file of certificate authorities trusted, besides the
	// system's, for this registry's HTTPS certificate.
	CA string
}

// Runtime runs containers in one containerd namespace. It is safe for
// concurrent use.
type Runtime struct {
	c    *conn
	cfg  Config
	log  *slog.Logger
	http *http.Client // for registries
	// tlsHTTP holds a client per registry with a CA of its own.
	tlsHTTP map[string]*http.Client

	logPump   *crilog.Pump // copies the containers logged by the agent (Spec.LogInAgent)
	logMu     sync.Mutex
	logCopies map[string]*crilog.PumpCopy // by container ID; a copy forgets itself before its Done
}

// New returns a Runtime for the containerd at cfg.Address and creates its
// namespace if needed. It fails if containerd does not answer.
func New(ctx context.Context, cfg Config) (*Runtime, error) {
	if cfg.Address == "" {
		cfg.Address = "/run/containerd/containerd.sock"
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Runtime{
		c:    newConn(cfg.Address, cfg.Namespace),
		cfg:  cfg,
		log:  log,
		http: &http.Client{Timeout: 0},

		logPump:   crilog.NewPump(),
		logCopies: map[string]*crilog.PumpCopy{},
	}
	if err := r.registryTLS(); err != nil {
		return nil, err
	}
	v, err := r.Version(ctx)
	if err != nil {
		return nil, fmt.Errorf("containerd at %s does not answer (is it running, and is this its grpc.address?): %w", cfg.Address, err)
	}
	log.Info("containerd connected", "address", cfg.Address, "version", v, "namespace", cfg.Namespace)
	_, err = r.c.unary(ctx, "containerd.services.namespaces.v1.Namespaces/Create",
		enc(nil).msg(createNamespaceNamespace, enc(nil).str(namespaceName, cfg.Namespace)))
	if err != nil && !errors.Is(err, ErrAlreadyExists) {
		return nil, fmt.Errorf("create containerd namespace %s: %w", cfg.Namespace, err)
	}
	return r, nil
}

// Close stops copying containers' output into their logs (what they
// write meanwhile waits in their FIFOs for AttachLogs) and releases idle
// connections.
func (r *Runtime) Close() error {
	r.closeLogs()
	r.c.http.CloseIdleConnections()
	r.http.CloseIdleConnections()
	for _, c := range r.tlsHTTP {
		c.CloseIdleConnections()
	}
	return nil
}

// Version returns containerd's version.
func (r *Runtime) Version(ctx context.Context) (string, error) {
	const method = "containerd.services.version.v1.Version/Version"
	b, err := r.c.unary(ctx, method, nil)
	if err != nil {
		return "", err
	}
	v, err := decodeVersion(b)
	if err != nil {
		return "", badReply(method, err)
	}
	return v, nil
}

// decodeVersion decodes a VersionResponse: its version.
func decodeVersion(b []byte) (v string, err error) {
	err = fields(b, "containerd.services.version.v1.VersionResponse", func(f field) error {
		var err error
		if f.num == versionVersion {
			v, err = f.str()
		}
		return err
	})
	return v, err
}

// lease creates a containerd lease that expires by itself after ttl (in
// case the agent dies before deleting it) and returns a context using it
// and a function that deletes it.
func (r *Runtime) lease(ctx context.Context, ttl time.Duration) (context.Context, func(), error) {
	id := "outpost-" + randomID()
	_, err := r.c.unary(ctx, "containerd.services.leases.v1.Leases/Create", enc(nil).str(leaseID, id).
		labels(leaseLabels, map[string]string{"containerd.io/gc.expire": time.Now().Add(ttl).UTC().Format(time.RFC3339)}))
	if err != nil {
		return nil, nil, fmt.Errorf("create lease: %w", err)
	}
	done := func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := r.c.unary(ctx, "containerd.services.leases.v1.Leases/Delete", enc(nil).str(leaseID, id)); err != nil {
			r.log.Warn("delete containerd lease", "lease", id, "err", err)
		}
	}
	return withLease(ctx, id), done, nil
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
