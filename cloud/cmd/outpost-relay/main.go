// Command outpost-relay is the cloud end of Outpost: it serves edge agents
// over WebSocket, joins new nodes, and writes their Nodes and Leases.
//
//	outpost-relay serve [flags]         run the relay
//	outpost-relay token create [flags]  create a bootstrap token; prints id.secret
//	outpost-relay node revoke NAME      revoke every certificate of an edge node
//	outpost-relay node allow NAME...    let the relay act as these edge nodes
//	outpost-relay version               print the version
package main

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
	"os/signal"
	"strings"
	"syscall"
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
	"outpost.dev/cloud/identity"
	"outpost.dev/cloud/join"
	"outpost.dev/cloud/nodegrant"
	"outpost.dev/cloud/nodes"
	"outpost.dev/cloud/pki"
	"outpost.dev/cloud/podstatus"
	"outpost.dev/cloud/relay"
	"outpost.dev/cloud/tolerations"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// servingCertValidity is the lifetime of the minted serving certificate.
// It is re-minted at every start, so it only has to outlive one run.
const servingCertValidity = 365 * 24 * time.Hour

const nodeUsage = `usage: outpost-relay node revoke [--kubeconfig FILE] [--namespace outpost-system] [--reason TEXT] NAME
       outpost-relay node allow [--kubeconfig FILE] [--wait 1m] NAME...`

const usage = `usage:
  outpost-relay serve [flags]         run the relay
  outpost-relay token create [flags]  create a bootstrap token and print it (id.secret)
  outpost-relay node revoke NAME      revoke every certificate of an edge node; re-joining it needs a token made with --node NAME
  outpost-relay node allow NAME...    let the relay act as these edge nodes (an administrator's kubeconfig)
  outpost-relay version               print the version
Run a subcommand with -h for its flags.`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "outpost-relay: "+oneLine(err.Error()))
		}
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return errors.New("no subcommand given")
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stderr)
	case "token":
		if len(args) < 2 || args[1] != "create" {
			return errors.New(`usage: outpost-relay token create [--kubeconfig FILE] [--ttl 24h] [--description TEXT] [--node NAME] [--uses N]`)
		}
		return tokenCreate(args[2:], stdout, stderr)
	case "node":
		if len(args) < 2 {
			return errors.New(nodeUsage)
		}
		switch args[1] {
		case "revoke":
			return nodeRevoke(args[2:], stdout, stderr)
		case "allow":
			return nodeAllow(args[2:], stdout, stderr)
		}
		return errors.New(nodeUsage)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	default:
		fmt.Fprintln(stderr, usage)
		return fmt.Errorf("unknown subcommand %q", args[0])
	}
}

func serve(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	hostname, _ := os.Hostname()
	defAdvertise := "127.0.0.1"
	if hostname != "" {
		defAdvertise = hostname + ",127.0.0.1"
	}
	var (
		kubeconfig   = fs.String("kubeconfig", "", "kubeconfig file (default: in-cluster config)")
		listen       = fs.String("listen", ":8443", "address to serve HTTPS on")
		advertise    = fs.String("advertise-address", defAdvertise, "comma-separated host names and IPs agents use to reach the relay (serving certificate SANs)")
		namespace    = fs.String("namespace", "outpost-system", "namespace of the relay CA Secret")
		certFile     = fs.String("tls-cert-file", "", "serving certificate (PEM); default: minted from the relay CA")
		keyFile      = fs.String("tls-key-file", "", "serving key (PEM), with --tls-cert-file")
		heartbeat    = fs.Duration("heartbeat-interval", relay.DefaultHeartbeatInterval, "agent heartbeat interval, sent to agents; a connection silent for 3 intervals is closed")
		leaseDur     = fs.Duration("lease-duration", relay.DefaultLeaseDuration, "node Lease duration; renewed every quarter of it")
		certValidity = fs.Duration("node-cert-validity", relay.DefaultNodeCertValidity, "lifetime of node certificates (at least 2m), issued at join and renewed by agents on their link past 3/4 of it")
		logLevel     = fs.String("log-level", "info", "debug, info, warn or error")
		qps          = fs.Float64("kube-api-qps", 200, "API server requests per second (every connected node renews its Lease every lease-duration/4)")
		burst        = fs.Int("kube-api-burst", 400, "API server request burst")
		devQPS       = fs.Float64("device-status-qps", devices.DefaultQPS, "Device status writes per second, all agents together (reports coalesce per Device while they wait)")
		devBurst     = fs.Int("device-status-burst", devices.DefaultBurst, "Device status write burst")
		devQueue     = fs.Int("device-status-queue", devices.DefaultMaxQueue, "Devices whose report may wait for a status write; agents reporting beyond it are slowed down")
		noCRD        = fs.Bool("no-install-crd", false, "do not install or update the Device CRD at start (apply cloud/deploy/devices-crd.yaml yourself)")
		psQPS        = fs.Float64("pod-status-qps", podstatus.DefaultQPS, "pod status reports written per second, all agents together (each is a read and a write)")
		psBurst      = fs.Int("pod-status-burst", podstatus.DefaultBurst, "pod status report burst")
		offlineTols  = fs.Bool("keep-offline-pods", true, "keep pods on edge nodes bound while their node is offline: make their not-ready/unreachable NoExecute tolerations last forever, unless the node has the label or the pod the annotation "+tolerations.OptOut+"=true (see cloud/README.md); false leaves eviction to Kubernetes' defaults")
		joinRate     = fs.Float64("join-rate-per-ip", join.DefaultPerIPRate, "join requests per second allowed from one client address (token bucket); agents behind one NAT share it")
		joinBurst    = fs.Int("join-burst-per-ip", join.DefaultPerIPBurst, "join request burst from one client address")
		tokenRefresh = fs.Duration("token-refresh-after", 0, "testing only: refresh pods' service-account tokens this long after issue instead of at 80% of their lifetime (0: as a kubelet does)")

		kubeletListen    = fs.String("kubelet-listen", "", "address to serve the kubelet API for edge nodes on (kubectl logs), e.g. :10250; empty: off")
		kubeletAdvertise = fs.String("kubelet-advertise-address", "", "IP the API server reaches this replica's --kubelet-listen on; written into each connected edge Node as its first InternalIP (default: the first IP in --advertise-address)")
		kubeletClientCA  = fs.String("kubelet-client-ca", "", "PEM file with the CA that signed the API server's kubelet client certificate (kube-apiserver --kubelet-client-certificate); required with --kubelet-listen")
		kubeletNames     = fs.String("kubelet-client-names", relay.DefaultKubeletClientName, "comma-separated client certificate common names the kubelet API accepts")
		kubeletGroups    = fs.String("kubelet-client-groups", "", "comma-separated client certificate organizations the kubelet API accepts too, e.g. system:masters (k3s)")
		kubeletCert      = fs.String("kubelet-tls-cert-file", "", "kubelet API serving certificate (PEM); default: minted from the relay CA for the kubelet advertise address")
		kubeletKey       = fs.String("kubelet-tls-key-file", "", "kubelet API serving key (PEM), with --kubelet-tls-cert-file")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected arguments %q", fs.Args())
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", *logLevel)
	}
	if (*certFile == "") != (*keyFile == "") {
		return errors.New("--tls-cert-file and --tls-key-file go together")
	}
	if (*kubeletCert == "") != (*kubeletKey == "") {
		return errors.New("--kubelet-tls-cert-file and --kubelet-tls-key-file go together")
	}
	var (
		kubeletLn   net.Listener
		kubeletCAs  *x509.CertPool
		kubeletAddr string
		kubeletPort int
	)
	if *kubeletListen != "" {
		if *kubeletClientCA == "" {
			return errors.New("--kubelet-listen needs --kubelet-client-ca: the kubelet API serves only the API server, identified by its client certificate")
		}
		pem, err := os.ReadFile(*kubeletClientCA)
		if err != nil {
			return fmt.Errorf("--kubelet-client-ca: %w", err)
		}
		kubeletCAs = x509.NewCertPool()
		if !kubeletCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--kubelet-client-ca %s: no PEM certificate in it", *kubeletClientCA)
		}
		kubeletAddr = *kubeletAdvertise
		if kubeletAddr == "" {
			for _, h := range splitList(*advertise) {
				if net.ParseIP(h) != nil {
					kubeletAddr = h
					break
				}
			}
		}
		if net.ParseIP(kubeletAddr) == nil {
			return fmt.Errorf("--kubelet-advertise-address %q: give the IP the API server reaches this replica at (Nodes carry it as InternalIP)", kubeletAddr)
		}
		if kubeletLn, err = net.Listen("tcp", *kubeletListen); err != nil {
			return fmt.Errorf("listen on --kubelet-listen %s: %w", *kubeletListen, err)
		}
		defer kubeletLn.Close()
		kubeletPort = kubeletLn.Addr().(*net.TCPAddr).Port
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	cfg, err := restConfig(*kubeconfig, true)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = float32(*qps), *burst
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

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Device status writes have their own token bucket (--device-status-qps);
	// this client's limiter only has to leave room for it.
	dcfg := rest.CopyConfig(cfg)
	dcfg.QPS, dcfg.Burst = float32(*qps+*devQPS), *burst+*devBurst
	dcfg.RateLimiter = nil // its own bucket, of the size above
	dyn, err := dynamic.NewForConfig(dcfg)
	if err != nil {
		return fmt.Errorf("kubernetes dynamic client: %w", err)
	}
	if !*noCRD {
		crdCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := devices.EnsureCRD(crdCtx, dyn, log)
		cancel()
		if err != nil {
			return err
		}
	}

	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	ca, err := pki.LoadOrCreate(startCtx, client.CoreV1().Secrets(*namespace), *namespace)
	cancel()
	if err != nil {
		return err
	}

	var cert tls.Certificate
	if *certFile != "" {
		cert, err = tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			return fmt.Errorf("serving certificate: %w", err)
		}
	} else {
		hosts := splitList(*advertise)
		cert, err = ca.ServingCert(hosts, servingCertValidity)
		if err != nil {
			return err
		}
		log.Info("minted serving certificate from the relay CA", "hosts", strings.Join(hosts, ","))
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := relay.New(relay.Config{
		Client:              client,
		AsNode:              asNode,
		CA:                  ca,
		Namespace:           *namespace,
		HeartbeatInterval:   *heartbeat,
		LeaseDuration:       *leaseDur,
		NodeCertValidity:    *certValidity,
		Version:             version,
		Log:                 log,
		Registry:            reg,
		Dynamic:             dyn,
		DeviceStatus:        devices.WriterConfig{QPS: *devQPS, Burst: *devBurst, MaxQueue: *devQueue},
		PodStatusQPS:        float32(*psQPS),
		PodStatusBurst:      *psBurst,
		KubeletAddress:      kubeletAddr,
		KubeletPort:         int32(kubeletPort),
		KubeletClientNames:  splitList(*kubeletNames),
		KubeletClientGroups: splitList(*kubeletGroups),
		TokenRefreshAfter:   *tokenRefresh,
		JoinPerIPRate:       *joinRate,
		JoinPerIPBurst:      *joinBurst,
	})
	if err != nil {
		return err
	}
	if *offlineTols {
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
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	log.Info("relay serving", "version", version, "listen", ln.Addr().String(), "namespace", *namespace,
		"heartbeat", *heartbeat, "lease_duration", *leaseDur)

	errc := make(chan error, 2)
	go func() { errc <- hs.ServeTLS(ln, "", "") }()
	var ks *http.Server
	if kubeletLn != nil {
		var kcert tls.Certificate
		if *kubeletCert != "" {
			if kcert, err = tls.LoadX509KeyPair(*kubeletCert, *kubeletKey); err != nil {
				return fmt.Errorf("kubelet serving certificate: %w", err)
			}
		} else if kcert, err = ca.ServingCert(append([]string{kubeletAddr}, splitList(*advertise)...), servingCertValidity); err != nil {
			return err
		}
		ks = &http.Server{
			Handler:           srv.KubeletHandler(),
			TLSConfig:         relay.KubeletTLSConfig(kcert, kubeletCAs),
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
			BaseContext:       func(net.Listener) context.Context { return ctx },
		}
		log.Info("kubelet API serving for edge nodes", "listen", kubeletLn.Addr().String(), "advertise", kubeletAddr,
			"client_names", *kubeletNames, "client_groups", *kubeletGroups)
		go func() { errc <- ks.ServeTLS(kubeletLn, "", "") }()
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

func tokenCreate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		kubeconfig  = fs.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster)")
		ttl         = fs.Duration("ttl", 24*time.Hour, "how long the token may be used to join")
		description = fs.String("description", "", "what the token is for, stored with it")
		node        = fs.String("node", "", "bind the token to this node name: it joins that name only, and it is the one way to re-join a node that exists already (its earlier certificates are revoked)")
		uses        = fs.Int("uses", 0, "how many joins the token allows (1: single use); 0: any number until it expires")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("token create: unexpected arguments %q", fs.Args())
	}
	client, err := adminClient(*kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if *node != "" {
		// The administrator who binds a token to a node also lets the
		// relay act as that node, so a bound token needs no second step.
		if err := nodes.CheckName(*node); err != nil {
			return fmt.Errorf("token create: %w", err)
		}
		if err := nodegrant.Allow(ctx, client, *node); err != nil {
			return err
		}
	}
	tok, err := join.CreateToken(ctx, client.CoreV1().Secrets(join.TokenNamespace),
		join.TokenOptions{TTL: *ttl, Description: *description, Node: *node, Uses: *uses}, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

// nodeRevoke marks a node's identity record revoked: every relay replica
// refuses its certificates and closes its link.
func nodeRevoke(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("node revoke", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		kubeconfig = fs.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster)")
		namespace  = fs.String("namespace", relay.DefaultNamespace, "the relay's namespace (its serve --namespace), where node identity records live")
		reason     = fs.String("reason", "revoked by outpost-relay node revoke", "why, recorded and told to the agent")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("node revoke: give exactly one node name")
	}
	name := fs.Arg(0)
	if err := nodes.CheckName(name); err != nil {
		return fmt.Errorf("node revoke: %w", err)
	}
	client, err := adminClient(*kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := identity.New(client, *namespace).Revoke(ctx, name, oneLine(*reason)); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "node %s revoked: every relay refuses its certificates and closes its link; re-join it with a token made by \"outpost-relay token create --node %s --uses 1\"\n", name, name)
	return nil
}

// nodeAllow lets the relay act as the named edge nodes (cloud/nodegrant)
// and waits until the relay's role says so.
func nodeAllow(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("node allow", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		kubeconfig = fs.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster)")
		wait       = fs.Duration("wait", time.Minute, "how long to wait for the controller manager to add the grants to ClusterRole "+nodegrant.AggregatedRole+"; 0: do not wait")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("node allow: name the nodes: outpost-relay node allow NAME...")
	}
	for _, name := range fs.Args() {
		if err := nodes.CheckName(name); err != nil {
			return fmt.Errorf("node allow: %w", err)
		}
	}
	client, err := adminClient(*kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second+*wait)
	defer cancel()
	for _, name := range fs.Args() {
		if err := nodegrant.Allow(ctx, client, name); err != nil {
			return err
		}
	}
	if *wait > 0 {
		wctx, cancel := context.WithTimeout(ctx, *wait)
		defer cancel()
		for _, name := range fs.Args() {
			if err := nodegrant.WaitAllowed(wctx, client, name); err != nil {
				return err
			}
		}
	}
	for _, name := range fs.Args() {
		fmt.Fprintf(stdout, "the relay may act as node %s (ClusterRole %s)\n", name, nodegrant.RoleName(name))
	}
	return nil
}

// adminClient is the client of the administrator running a subcommand.
func adminClient(kubeconfig string) (kubernetes.Interface, error) {
	cfg, err := restConfig(kubeconfig, false)
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return client, nil
}

// restConfig loads client configuration: the named kubeconfig, else
// in-cluster when inCluster, else the usual kubectl rules.
func restConfig(kubeconfig string, inCluster bool) (*rest.Config, error) {
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

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
