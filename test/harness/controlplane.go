package harness

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Options configures StartControlPlane. The zero value works.
type Options struct {
	// Dir holds all state: pki/, etcd/, logs/<component>.log and the
	// kubeconfigs. It must be empty or absent. If Dir is "", a temporary
	// directory is used and Stop removes it.
	Dir string
	// Log receives progress; nil discards it.
	Log *slog.Logger
	// BinDir holds the control-plane binaries; "" calls Binaries, which
	// builds them on first use.
	BinDir string
	// StartTimeout bounds how long StartControlPlane waits for all
	// components to be ready; default 2m.
	StartTimeout time.Duration

	// NodeMonitorGracePeriod is how long a node may go without a status
	// update before the node lifecycle controller marks it NotReady
	// (kube-controller-manager --node-monitor-grace-period); default 40s.
	// Tests of a lost edge link shorten it. Node status is checked every
	// 2s (--node-monitor-period).
	NodeMonitorGracePeriod time.Duration
	// EvictionToleration is how long pods stay bound to a NotReady or
	// unreachable node before they are evicted: the API server adds it to
	// every pod as the toleration of the node.kubernetes.io/not-ready and
	// unreachable taints (--default-not-ready-toleration-seconds and
	// --default-unreachable-toleration-seconds; --pod-eviction-timeout no
	// longer exists). 0 keeps Kubernetes' default of 300s.
	EvictionToleration time.Duration
	// ClusterCIDR is the range the controller-manager cuts each Node's
	// spec.podCIDR from (a /24 each: --allocate-node-cidrs); default a
	// random 10.X.0.0/16 with X in 128–191, so control planes running side
	// by side on one machine give their edge nodes different pod ranges.
	ClusterCIDR string

	// Extra flags are appended after the harness's own, so for a flag that
	// takes one value the extra one wins.
	ExtraAPIServerFlags         []string
	ExtraControllerManagerFlags []string
	ExtraSchedulerFlags         []string
}

// ControlPlane is a running etcd, kube-apiserver, kube-controller-manager
// and kube-scheduler on 127.0.0.1, started by StartControlPlane. Call Stop
// when done.
type ControlPlane struct {
	// Dir holds the state, logs (Dir/logs) and kubeconfigs.
	Dir string
	// BinDir holds the binaries the components run from, kubectl included.
	BinDir string
	// Kubeconfig is an admin (system:masters) kubeconfig, Dir/kubeconfig.
	// It embeds its certificates, so it can be copied elsewhere.
	Kubeconfig string
	// APIServerURL is https://127.0.0.1:<port>.
	APIServerURL string
	// ClusterCIDR is the range Nodes' pod CIDRs are cut from.
	ClusterCIDR string
	// EtcdURL is etcd's plain-HTTP client URL on loopback.
	EtcdURL string
	// PKI holds the cluster CA (PKI.CACert, PKI.CAKey), the certificate the
	// API server presents to kubelets (PKI.KubeletClientCert,
	// PKI.KubeletClientKey) and can issue more certificates.
	PKI *PKI

	// The component processes, exposed so that tests can crash them.
	Etcd, APIServer, ControllerManager, Scheduler *Process

	log       *slog.Logger
	config    *rest.Config
	client    kubernetes.Interface
	removeDir bool

	stopOnce sync.Once
	stopErr  error
}

// StartControlPlane starts a control plane on free loopback ports and
// returns once the API server is ready, the controller manager and
// scheduler are healthy and the service-account controller has created the
// default ServiceAccount. On error nothing is left running, and the error
// names the component and quotes the end of its log.
func StartControlPlane(ctx context.Context, opts Options) (_ *ControlPlane, err error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 2 * time.Minute
	}
	if opts.ClusterCIDR == "" {
		opts.ClusterCIDR = fmt.Sprintf("10.%d.0.0/16", 128+mrand.IntN(64))
	}
	if opts.NodeMonitorGracePeriod == 0 {
		opts.NodeMonitorGracePeriod = 40 * time.Second
	}
	cp := &ControlPlane{Dir: opts.Dir, BinDir: opts.BinDir, ClusterCIDR: opts.ClusterCIDR, log: log}
	if cp.BinDir == "" {
		if cp.BinDir, err = Binaries(ctx, log); err != nil {
			return nil, err
		}
	} else if err := checkBinaries(cp.BinDir); err != nil {
		return nil, fmt.Errorf("control plane: Options.BinDir: %w", err)
	}
	if cp.Dir == "" {
		if cp.Dir, err = os.MkdirTemp("", "outpost-controlplane-"); err != nil {
			return nil, fmt.Errorf("control plane: %w", err)
		}
		cp.removeDir = true
	} else if err := prepareEmptyDir(cp.Dir); err != nil {
		return nil, err
	}
	if cp.Dir, err = filepath.Abs(cp.Dir); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			cp.Stop()
		}
	}()

	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()

	if cp.PKI, err = GeneratePKI(filepath.Join(cp.Dir, "pki")); err != nil {
		return nil, err
	}
	ports, err := freePorts(5)
	if err != nil {
		return nil, err
	}
	etcdPort, peerPort, apiPort, kcmPort, schedPort := ports[0], ports[1], ports[2], ports[3], ports[4]
	cp.EtcdURL = fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	cp.APIServerURL = fmt.Sprintf("https://127.0.0.1:%d", apiPort)

	cp.Kubeconfig = filepath.Join(cp.Dir, "kubeconfig")
	kcmKubeconfig := filepath.Join(cp.Dir, "controller-manager.kubeconfig")
	schedKubeconfig := filepath.Join(cp.Dir, "scheduler.kubeconfig")
	for _, k := range []struct{ path, user, cert, key string }{
		{cp.Kubeconfig, "admin", cp.PKI.AdminCert, cp.PKI.AdminKey},
		{kcmKubeconfig, "kube-controller-manager", cp.PKI.ControllerManagerCert, cp.PKI.ControllerManagerKey},
		{schedKubeconfig, "kube-scheduler", cp.PKI.SchedulerCert, cp.PKI.SchedulerKey},
	} {
		if err := writeKubeconfig(k.path, cp.APIServerURL, k.user, cp.PKI.CACert, k.cert, k.key); err != nil {
			return nil, err
		}
	}
	cp.config = &rest.Config{
		Host: cp.APIServerURL,
		TLSClientConfig: rest.TLSClientConfig{
			CAFile:   cp.PKI.CACert,
			CertFile: cp.PKI.AdminCert,
			KeyFile:  cp.PKI.AdminKey,
		},
		QPS:   50,
		Burst: 100,
	}
	if cp.client, err = kubernetes.NewForConfig(cp.config); err != nil {
		return nil, fmt.Errorf("control plane: client: %w", err)
	}

	// etcd: throwaway state, so skip fsync; the tests are not about disks.
	etcdPeer := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	if cp.Etcd, err = cp.start("etcd",
		"--name=outpost",
		"--data-dir="+filepath.Join(cp.Dir, "etcd"),
		"--listen-client-urls="+cp.EtcdURL,
		"--advertise-client-urls="+cp.EtcdURL,
		"--listen-peer-urls="+etcdPeer,
		"--initial-advertise-peer-urls="+etcdPeer,
		"--initial-cluster=outpost="+etcdPeer,
		"--unsafe-no-fsync",
	); err != nil {
		return nil, err
	}
	if err := waitReady(ctx, cp.Etcd, "/health", func(ctx context.Context) error {
		return probeHTTP(ctx, http.DefaultClient, cp.EtcdURL+"/health")
	}); err != nil {
		return nil, err
	}
	log.Info("control plane: etcd ready", "url", cp.EtcdURL, "after", since(start))

	pki := cp.PKI
	apiFlags := []string{
		"--etcd-servers=" + cp.EtcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		// The default reconciler refuses to publish a loopback address
		// as the kubernetes Service endpoint.
		"--endpoint-reconciler-type=none",
		"--tls-cert-file=" + pki.APIServerCert,
		"--tls-private-key-file=" + pki.APIServerKey,
		"--client-ca-file=" + pki.CACert,
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		// As kubeadm runs it: bootstrap tokens authenticate, so the
		// tests can show Outpost's join tokens are not such tokens.
		"--enable-bootstrap-token-auth=true",
		"--allow-privileged=true",
		"--service-cluster-ip-range=10.96.0.0/16",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pki.ServiceAccountPub,
		"--service-account-signing-key-file=" + pki.ServiceAccountKey,
		"--kubelet-client-certificate=" + pki.KubeletClientCert,
		"--kubelet-client-key=" + pki.KubeletClientKey,
		// Front-proxy (aggregation) settings, published in the
		// extension-apiserver-authentication ConfigMap; without them
		// every component logs a missing requestheader CA forever.
		"--requestheader-client-ca-file=" + pki.FrontProxyCACert,
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-uid-headers=X-Remote-Uid",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + pki.FrontProxyClientCert,
		"--proxy-client-key-file=" + pki.FrontProxyClientKey,
	}
	if opts.EvictionToleration > 0 {
		s := strconv.Itoa(int(opts.EvictionToleration.Round(time.Second) / time.Second))
		apiFlags = append(apiFlags,
			"--default-not-ready-toleration-seconds="+s,
			"--default-unreachable-toleration-seconds="+s)
	}
	if cp.APIServer, err = cp.start("kube-apiserver", append(apiFlags, opts.ExtraAPIServerFlags...)...); err != nil {
		return nil, err
	}
	if err := waitReady(ctx, cp.APIServer, "/readyz", func(ctx context.Context) error {
		body, err := cp.client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Raw()
		if err != nil {
			return fmt.Errorf("%w: %s", err, failedChecks(body))
		}
		return nil
	}); err != nil {
		return nil, err
	}
	log.Info("control plane: kube-apiserver ready", "url", cp.APIServerURL, "after", since(start))

	// Both serve /healthz with a self-signed certificate made at start.
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer insecure.CloseIdleConnections()

	kcmFlags := []string{
		"--kubeconfig=" + kcmKubeconfig,
		"--authentication-kubeconfig=" + kcmKubeconfig,
		"--authorization-kubeconfig=" + kcmKubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(kcmPort),
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--root-ca-file=" + pki.CACert,
		"--service-account-private-key-file=" + pki.ServiceAccountKey,
		"--cluster-signing-cert-file=" + pki.CACert,
		"--cluster-signing-key-file=" + pki.CAKey,
		"--controllers=*,bootstrapsigner,tokencleaner",
		"--node-monitor-period=2s",
		"--node-monitor-grace-period=" + opts.NodeMonitorGracePeriod.String(),
		"--allocate-node-cidrs=true",
		"--cluster-cidr=" + opts.ClusterCIDR,
		"--node-cidr-mask-size=24",
	}
	if cp.ControllerManager, err = cp.start("kube-controller-manager", append(kcmFlags, opts.ExtraControllerManagerFlags...)...); err != nil {
		return nil, err
	}
	schedFlags := []string{
		"--kubeconfig=" + schedKubeconfig,
		"--authentication-kubeconfig=" + schedKubeconfig,
		"--authorization-kubeconfig=" + schedKubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(schedPort),
		"--leader-elect=false",
	}
	if cp.Scheduler, err = cp.start("kube-scheduler", append(schedFlags, opts.ExtraSchedulerFlags...)...); err != nil {
		return nil, err
	}
	for _, c := range []struct {
		p    *Process
		port int
	}{{cp.ControllerManager, kcmPort}, {cp.Scheduler, schedPort}} {
		url := fmt.Sprintf("https://127.0.0.1:%d/healthz", c.port)
		if err := waitReady(ctx, c.p, "/healthz", func(ctx context.Context) error {
			return probeHTTP(ctx, insecure, url)
		}); err != nil {
			return nil, err
		}
		log.Info("control plane: "+c.p.Name+" healthy", "after", since(start))
	}

	// The service-account controller creating "default" shows the
	// controllers run and can write through the API server.
	if err := waitReady(ctx, cp.ControllerManager, "the default ServiceAccount", func(ctx context.Context) error {
		_, err := cp.client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return errors.New("ServiceAccount default/default not created yet")
		}
		return err
	}); err != nil {
		return nil, err
	}
	log.Info("control plane: ready", "after", since(start), "dir", cp.Dir, "kubeconfig", cp.Kubeconfig)
	return cp, nil
}

// start runs one component from BinDir with its log in Dir/logs.
func (cp *ControlPlane) start(name string, args ...string) (*Process, error) {
	cmd := exec.Command(filepath.Join(cp.BinDir, name), args...)
	cmd.Dir = cp.Dir
	p, err := StartProcess(name, cmd, filepath.Join(cp.Dir, "logs", name+".log"))
	if err != nil {
		return nil, err
	}
	cp.log.Debug("control plane: started "+name, "pid", p.Pid(), "log", p.LogPath)
	return p, nil
}

// Processes returns the running components in start order.
func (cp *ControlPlane) Processes() []*Process {
	var ps []*Process
	for _, p := range []*Process{cp.Etcd, cp.APIServer, cp.ControllerManager, cp.Scheduler} {
		if p != nil {
			ps = append(ps, p)
		}
	}
	return ps
}

// RESTConfig returns a new admin rest.Config for the API server; the caller
// may modify it.
func (cp *ControlPlane) RESTConfig() *rest.Config { return rest.CopyConfig(cp.config) }

// Client returns an admin clientset.
func (cp *ControlPlane) Client() kubernetes.Interface { return cp.client }

// Kubectl runs the pinned kubectl as admin and returns its combined stdout
// and stderr. The error quotes the command and its output.
func (cp *ControlPlane) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(cp.BinDir, "kubectl"), append([]string{"--kubeconfig=" + cp.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// NewKubeconfig issues a client certificate for user in groups, signed by
// the cluster CA, and writes a kubeconfig using it to Dir/<name>.kubeconfig:
// an identity with only the permissions RBAC grants it, for the relay, say.
func (cp *ControlPlane) NewKubeconfig(name, user string, groups ...string) (string, error) {
	cert, key, err := cp.PKI.Issue(name, CertSpec{CommonName: user, Organizations: groups, Client: true})
	if err != nil {
		return "", err
	}
	path := filepath.Join(cp.Dir, name+".kubeconfig")
	if err := writeKubeconfig(path, cp.APIServerURL, user, cp.PKI.CACert, cert, key); err != nil {
		return "", err
	}
	return path, nil
}

// Stop stops the components in reverse start order: SIGTERM to each process
// group, SIGKILL after 10s. It removes Dir if StartControlPlane created it.
// It is safe to call more than once and returns the first call's result.
func (cp *ControlPlane) Stop() error {
	cp.stopOnce.Do(func() {
		var errs []error
		ps := cp.Processes()
		for i := len(ps) - 1; i >= 0; i-- {
			if err := ps[i].Stop(10 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
		if cp.removeDir {
			if err := os.RemoveAll(cp.Dir); err != nil {
				errs = append(errs, err)
			}
		}
		cp.stopErr = errors.Join(errs...)
		cp.log.Info("control plane: stopped", "err", cp.stopErr)
	})
	return cp.stopErr
}

// waitReady polls probe until it succeeds, failing early if p exits. Its
// errors name the component, say what it waited for and quote its log.
func waitReady(ctx context.Context, p *Process, what string, probe func(context.Context) error) error {
	start := time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	lastErr := errors.New("not probed yet")
	for {
		if p.Exited() {
			return exitedEarly(p)
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		lastErr = probe(pctx)
		cancel()
		if lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			if p.Exited() {
				return exitedEarly(p)
			}
			return fmt.Errorf("%s: %s not ready after %s (%v): last probe: %v%s", p.Name, what, since(start), context.Cause(ctx), lastErr, tailSection(p))
		case <-p.Done():
		case <-tick.C:
		}
	}
}

// probeHTTP succeeds when url answers 200.
func probeHTTP(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, failedChecks(body))
	}
	return nil
}

// failedChecks keeps the failing lines of a /readyz or /healthz answer,
// which lists every check.
func failedChecks(body []byte) string {
	var failed []string
	for line := range strings.Lines(string(body)) {
		if strings.HasPrefix(line, "[-]") {
			failed = append(failed, strings.TrimSpace(line))
		}
	}
	if len(failed) == 0 {
		return strings.TrimSpace(string(body))
	}
	return strings.Join(failed, "; ")
}

// writeKubeconfig writes a kubeconfig for server that embeds the CA and the
// client certificate and key, so that it stays valid wherever it is copied.
func writeKubeconfig(path, server, user, caFile, certFile, keyFile string) error {
	var data [3]string
	for i, f := range []string{caFile, certFile, keyFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("kubeconfig %s: %w", path, err)
		}
		data[i] = base64.StdEncoding.EncodeToString(b)
	}
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) } // JSON strings are YAML
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: outpost
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: outpost
  context:
    cluster: outpost
    user: %s
current-context: outpost
`, q(server), data[0], q(user), data[1], data[2], q(user))
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	return nil
}

// prepareEmptyDir creates dir or checks that it is empty: the control plane
// generates a new CA, which would not match state left by an earlier run.
func prepareEmptyDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("control plane: Options.Dir %s is not empty (it has %s): use a new directory, since the PKI and etcd state are created fresh", dir, entries[0].Name())
	}
	return nil
}

// since rounds the time since start for logs and errors.
func since(start time.Time) time.Duration {
	return time.Since(start).Round(10 * time.Millisecond)
}
