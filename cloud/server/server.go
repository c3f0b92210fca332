// Package server runs a relay replica: from its options it builds the
// Kubernetes clients, loads or creates the relay CA, and serves the agents'
// HTTPS endpoint and, when asked, the kubelet API the API server reaches
// edge nodes through, until its context ends.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/flowcontrol"

	"outpost.dev/cloud/asnode"
	"outpost.dev/cloud/devices"
	"outpost.dev/cloud/join"
	"outpost.dev/cloud/nodes"
	"outpost.dev/cloud/pki"
	"outpost.dev/cloud/podstatus"
	"outpost.dev/cloud/relay"
	"outpost.dev/cloud/tolerations"
	"outpost.dev/cloud/upgrade"
)

// servingCertValidity is the lifetime of a minted serving certificate.
// It is minted again at every start, so it only has to outlive one run.
const servingCertValidity = 365 * 24 * time.Hour

// Options are a replica's settings: outpost-relay serve's flags.
type Options struct {
	Kubeconfig        string
	Listen            string
	Advertise         string // comma-separated host names and IPs
	Namespace         string
	CertFile, KeyFile string
	Heartbeat         time.Duration
	LeaseDuration     time.Duration
	NodeCertValidity  time.Duration
	LogLevel          string
	QPS               float64
	Burst             int
	DeviceQPS         float64
	DeviceBurst       int
	DeviceQueue       int
	NoInstallCRD      bool
	UpgradeCacheDir   string
	PodStatusQPS      float64
	PodStatusBurst    int
	KeepOfflinePods   bool
	JoinRatePerIP     float64
	JoinBurstPerIP    int
	MaxHandshakes     int
	TokenRefreshAfter time.Duration

	KubeletListen    string
	KubeletAdvertise string
	KubeletClientCA  string
	KubeletNames     string // comma-separated
	KubeletGroups    string // comma-separated
	KubeletCertFile  string
	KubeletKeyFile   string
	KubeletNodePorts string // LOW-HIGH
}

// Register defines the options as flags on fs, with their defaults.
func (o *Options) Register(fs *flag.FlagSet) {
	defAdvertise := "127.0.0.1"
	if hostname, _ := os.Hostname(); hostname != "" {
		defAdvertise = hostname + ",127.0.0.1"
	}
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster config)")
	fs.StringVar(&o.Listen, "listen", ":8443", "address to serve HTTPS on")
	fs.StringVar(&o.Advertise, "advertise-address", defAdvertise, "comma-separated host names and IPs agents use to reach the relay (serving certificate SANs)")
	fs.StringVar(&o.Namespace, "namespace", relay.DefaultNamespace, "namespace of the relay CA Secret")
	fs.StringVar(&o.CertFile, "tls-cert-file", "", "serving certificate (PEM); default: minted from the relay CA")
	fs.StringVar(&o.KeyFile, "tls-key-file", "", "serving key (PEM), with --tls-cert-file")
	fs.DurationVar(&o.Heartbeat, "heartbeat-interval", relay.DefaultHeartbeatInterval, "agent heartbeat interval, sent to agents; a connection silent for 3 intervals is closed")
	fs.DurationVar(&o.LeaseDuration, "lease-duration", relay.DefaultLeaseDuration, "node Lease duration; renewed every quarter of it, up to three quarters while the API server falls behind")
	fs.DurationVar(&o.NodeCertValidity, "node-cert-validity", relay.DefaultNodeCertValidity, "lifetime of node certificates (at least 2m), issued at join and renewed by agents on their link past 3/4 of it")
	fs.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.Float64Var(&o.QPS, "kube-api-qps", 200, "API server requests per second (every connected node renews its Lease every lease-duration/4)")
	fs.IntVar(&o.Burst, "kube-api-burst", 400, "API server request burst")
	fs.Float64Var(&o.DeviceQPS, "device-status-qps", devices.DefaultQPS, "Device status writes per second, all agents together (reports coalesce per Device while they wait)")
	fs.IntVar(&o.DeviceBurst, "device-status-burst", devices.DefaultBurst, "Device status write burst")
	fs.IntVar(&o.DeviceQueue, "device-status-queue", devices.DefaultMaxQueue, "Devices whose report may wait for a status write; agents reporting beyond it are slowed down")
	fs.BoolVar(&o.NoInstallCRD, "no-install-crd", false, "do not install or update the Device and AgentUpgrade CRDs at start (apply cloud/deploy/devices-crd.yaml and agentupgrades-crd.yaml yourself)")
	fs.StringVar(&o.UpgradeCacheDir, "upgrade-cache-dir", filepath.Join(os.TempDir(), "outpost-relay-upgrades"), "directory this replica caches agent upgrade artifacts in (a few, least recently used go first); empty turns AgentUpgrade rollouts off")
	fs.Float64Var(&o.PodStatusQPS, "pod-status-qps", podstatus.DefaultQPS, "pod status reports written per second, all agents together (each is a read and a write)")
	fs.IntVar(&o.PodStatusBurst, "pod-status-burst", podstatus.DefaultBurst, "pod status report burst")
	fs.BoolVar(&o.KeepOfflinePods, "keep-offline-pods", true, "keep pods on edge nodes bound while their node is offline: make their not-ready/unreachable NoExecute tolerations last forever, unless the node has the label or the pod the annotation "+tolerations.OptOut+"=true (see cloud/README.md); false leaves eviction to Kubernetes' defaults")
	fs.Float64Var(&o.JoinRatePerIP, "join-rate-per-ip", join.DefaultPerIPRate, "join requests per second allowed from one client address (token bucket); agents behind one NAT share it")
	fs.IntVar(&o.JoinBurstPerIP, "join-burst-per-ip", join.DefaultPerIPBurst, "join request burst from one client address")
	fs.IntVar(&o.MaxHandshakes, "max-handshakes", relay.DefaultMaxHandshakes, "agent connections admitted between their upgrade request and their hello-ack at once; more are answered 503 with Retry-After (agents retry with jitter), connected agents are never affected")
	fs.DurationVar(&o.TokenRefreshAfter, "token-refresh-after", 0, "testing only: refresh pods' service-account tokens this long after issue instead of at 80% of their lifetime (0: as a kubelet does)")

	fs.StringVar(&o.KubeletListen, "kubelet-listen", "", "address to serve the kubelet API for edge nodes on (kubectl logs), e.g. :10250; empty: off")
	fs.StringVar(&o.KubeletAdvertise, "kubelet-advertise-address", "", "IP the API server reaches this replica's --kubelet-listen on; written into each connected edge Node as its first InternalIP (default: the first IP in --advertise-address)")
	fs.StringVar(&o.KubeletClientCA, "kubelet-client-ca", "", "PEM file with the CA that signed the API server's kubelet client certificate (kube-apiserver --kubelet-client-certificate); required with --kubelet-listen")
	fs.StringVar(&o.KubeletNames, "kubelet-client-names", relay.DefaultKubeletClientName, "comma-separated client certificate common names the kubelet API accepts")
	fs.StringVar(&o.KubeletGroups, "kubelet-client-groups", "", "comma-separated client certificate organizations the kubelet API accepts too, e.g. system:masters (k3s)")
	fs.StringVar(&o.KubeletCertFile, "kubelet-tls-cert-file", "", "kubelet API serving certificate (PEM); default: minted from the relay CA for the kubelet advertise address")
	fs.StringVar(&o.KubeletKeyFile, "kubelet-tls-key-file", "", "kubelet API serving key (PEM), with --kubelet-tls-cert-file")
	fs.StringVar(&o.KubeletNodePorts, "kubelet-node-ports", "", "LOW-HIGH: give each connected edge node a kubelet API port of its own from this range, on the --kubelet-listen host, written into its Node; metrics-server (kubectl top) addresses kubelets by IP and port alone, so it needs this. Empty: every node shares --kubelet-listen")
}

// check refuses options that cannot work together, before anything is
// opened, and returns the log level.
func (o *Options) check() (slog.Level, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.LogLevel)); err != nil {
		return level, fmt.Errorf("--log-level %q: use debug, info, warn or error", o.LogLevel)
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return level, errors.New("--tls-cert-file and --tls-key-file go together")
	}
	if (o.KubeletCertFile == "") != (o.KubeletKeyFile == "") {
		return level, errors.New("--kubelet-tls-cert-file and --kubelet-tls-key-file go together")
	}
	if o.KubeletNodePorts != "" && o.KubeletListen == "" {
		return level, errors.New("--kubelet-node-ports needs --kubelet-listen: the node ports are opened on its host")
	}
	if o.KubeletListen != "" && o.KubeletClientCA == "" {
		return level, errors.New("--kubelet-listen needs --kubelet-client-ca: the kubelet API serves only the API server, identified by its client certificate")
	}
	return level, nil
}

// kubeletEndpoint is the kubelet API's listener and who may call it.
type kubeletEndpoint struct {
	ln      net.Listener
	cas     *x509.CertPool
	address string // the IP written into edge Nodes
	port    int
}

// listenKubelet opens the kubelet API's listener, or returns nil when it
// is off.
func (o *Options) listenKubelet() (*kubeletEndpoint, error) {
	if o.KubeletListen == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(o.KubeletClientCA)
	if err != nil {
		return nil, fmt.Errorf("--kubelet-client-ca: %w", err)
	}
	k := &kubeletEndpoint{cas: x509.NewCertPool(), address: o.KubeletAdvertise}
	if !k.cas.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--kubelet-client-ca %s: no PEM certificate in it", o.KubeletClientCA)
	}
	if k.address == "" {
		for _, h := range SplitList(o.Advertise) {
			if net.ParseIP(h) != nil {
				k.address = h
				break
			}
		}
	}
	if net.ParseIP(k.address) == nil {
		return nil, fmt.Errorf("--kubelet-advertise-address %q: give the IP the API server reaches this replica at (Nodes carry it as InternalIP)", k.address)
	}
	if k.ln, err = net.Listen("tcp", o.KubeletListen); err != nil {
		return nil, fmt.Errorf("listen on --kubelet-listen %s: %w", o.KubeletListen, err)
	}
	k.port = k.ln.Addr().(*net.TCPAddr).Port
	return k, nil
}

// Run serves as o says until ctx ends, logging to logOut; version is the
// relay's, told to agents and the API server.
func Run(ctx context.Context, o Options, version string, logOut io.Writer) error {
	level, err := o.check()
	if err != nil {
		return err
	}
	kl, err := o.listenKubelet()
	if err != nil {
		return err
	}
	if kl != nil {
		defer kl.ln.Close()
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: level}))

	cfg, err := RestConfig(o.Kubeconfig, true)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = float32(o.QPS), o.Burst
	// One bucket for the relay's own requests and those it makes as its
	// nodes (asnode below).
	cfg.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, cfg.Burst)
	cfg.UserAgent = "outpost-relay/" + version
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	// What the relay does for a node it does as that node, over the same
	// connection pool and within the same --kube-api-qps.
	asNode, err := asnode.New(cfg)
	if err != nil {
		return err
	}
	defer asNode.Close()
	if err := asNode.StreamsUnavailable(); err != nil {
		log.Warn("the nodes' watches use client-go, three goroutines each", "reason", err)
	}
	// Device status writes have their own token bucket (--device-status-qps);
	// this client's limiter only has to leave room for it.
	dcfg := rest.CopyConfig(cfg)
	dcfg.QPS, dcfg.Burst = float32(o.QPS+o.DeviceQPS), o.Burst+o.DeviceBurst
	dcfg.RateLimiter = nil // its own bucket, of the size above
	dyn, err := dynamic.NewForConfig(dcfg)
	if err != nil {
		return fmt.Errorf("kubernetes dynamic client: %w", err)
	}
	if !o.NoInstallCRD {
		crdCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := devices.EnsureCRD(crdCtx, dyn, log)
		if err == nil && o.UpgradeCacheDir != "" {
			err = upgrade.EnsureCRD(crdCtx, dyn, log)
		}
		cancel()
		if err != nil {
			return err
		}
	}
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	ca, err := pki.LoadOrCreate(startCtx, client.CoreV1().Secrets(o.Namespace), o.Namespace)
	cancel()
	if err != nil {
		return err
	}
	cert, err := servingCert(o.CertFile, o.KeyFile, ca, SplitList(o.Advertise), log)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	rc := relay.Config{
		Client: client, AsNode: asNode, CA: ca, Namespace: o.Namespace,
		HeartbeatInterval: o.Heartbeat, LeaseDuration: o.LeaseDuration, NodeCertValidity: o.NodeCertValidity,
		Version: version, Log: log, Registry: reg, Dynamic: dyn,
		DeviceStatus:       devices.WriterConfig{QPS: o.DeviceQPS, Burst: o.DeviceBurst, MaxQueue: o.DeviceQueue},
		PodStatusQPS:       float32(o.PodStatusQPS),
		PodStatusBurst:     o.PodStatusBurst,
		KubeletClientNames: SplitList(o.KubeletNames), KubeletClientGroups: SplitList(o.KubeletGroups),
		TokenRefreshAfter: o.TokenRefreshAfter,
		JoinPerIPRate:     o.JoinRatePerIP, JoinPerIPBurst: o.JoinBurstPerIP,
		MaxHandshakes: o.MaxHandshakes,
		NodeWriters:   nodes.WorkersFor(o.QPS),
	}
	if o.UpgradeCacheDir != "" {
		rc.Upgrades = &upgrade.Config{CacheDir: o.UpgradeCacheDir}
	}
	var kcert tls.Certificate
	if kl != nil {
		rc.KubeletAddress, rc.KubeletPort = kl.address, int32(kl.port)
		if kcert, err = servingCert(o.KubeletCertFile, o.KubeletKeyFile, ca, append([]string{kl.address}, SplitList(o.Advertise)...), log); err != nil {
			return err
		}
		if o.KubeletNodePorts != "" {
			np, err := newNodePorts(o.KubeletListen, o.KubeletNodePorts, relay.KubeletTLSConfig(kcert, kl.cas))
			if err != nil {
				return err
			}
			rc.KubeletNodeListen = np.listen
		}
	}
	srv, err := relay.New(rc)
	if err != nil {
		return err
	}
	if o.KeepOfflinePods {
		tc, err := tolerations.New(tolerations.Config{Client: client, AsNode: asNode, Log: log.With("component", "tolerations"), Registerer: reg})
		if err != nil {
			return err
		}
		go tc.Run(ctx)
	}
	hs := &http.Server{
		Handler:           srv,
		TLSConfig:         srv.TLSConfig(cert),
		ReadHeaderTimeout: 10 * time.Second,
		// Idle keep-alive connections (join, probes, metrics) go after
		// this; agent links are hijacked and keep their own timeouts. A
		// whole-request ReadTimeout would cut those links, so the join
		// endpoints set their own read deadline.
		IdleTimeout: 90 * time.Second,
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelDebug), // TLS handshake noise from scanners
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", o.Listen, err)
	}
	log.Info("relay serving", "version", version, "listen", ln.Addr().String(), "namespace", o.Namespace,
		"heartbeat", o.Heartbeat, "lease_duration", o.LeaseDuration)

	errc := make(chan error, 2)
	go func() { errc <- hs.ServeTLS(srv.Listener(ln), "", "") }()
	var ks *http.Server
	if kl != nil {
		ks = &http.Server{
			Handler:           srv.KubeletHandler(),
			TLSConfig:         relay.KubeletTLSConfig(kcert, kl.cas),
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
			BaseContext:       func(net.Listener) context.Context { return ctx },
		}
		log.Info("kubelet API serving for edge nodes", "listen", kl.ln.Addr().String(), "advertise", kl.address,
			"client_names", o.KubeletNames, "client_groups", o.KubeletGroups)
		go func() { errc <- ks.ServeTLS(kl.ln, "", "") }()
	}
	select {
	case err := <-errc:
		srv.Close()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down; agents will reconnect, nodes stay Ready if they do so in time")
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = hs.Shutdown(shutCtx)
	if ks != nil {
		// Log streams end with their agent connections, closed next.
		_ = ks.Close()
	}
	return srv.Close()
}

// servingCert loads the certificate and key files when given, or mints
// one from ca for hosts.
func servingCert(certFile, keyFile string, ca *pki.CA, hosts []string, log *slog.Logger) (tls.Certificate, error) {
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return cert, fmt.Errorf("serving certificate %s: %w", certFile, err)
		}
		return cert, nil
	}
	cert, err := ca.ServingCert(hosts, servingCertValidity)
	if err == nil {
		log.Info("minted serving certificate from the relay CA", "hosts", strings.Join(hosts, ","))
	}
	return cert, err
}

// RestConfig loads client configuration: the named kubeconfig, else
// in-cluster when inCluster, else the usual kubectl rules.
func RestConfig(kubeconfig string, inCluster bool) (*rest.Config, error) {
	if kubeconfig == "" && inCluster {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no --kubeconfig and not in a cluster: %w", err)
		}
		return cfg, nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return cfg, nil
}

// SplitList splits a comma-separated flag value, dropping empty items.
func SplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
