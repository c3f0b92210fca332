// Package stack runs Outpost's own processes, the relay and agents, against
// a control plane from the harness package, the way an operator would: the
// relay with the least-privilege RBAC and admission policies from
// cloud/deploy, agents joined with
// bootstrap tokens. End-to-end tests, benchmarks and `make demo` share it.
// StartInProcess is the control plane and clients for a relay served in
// the test's own process instead.
package stack

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"outpost.dev/cloud/nodes"
	"outpost.dev/test/harness"
	"outpost.dev/test/wait"
)

// RelayNamespace and RelayServiceAccount are those of cloud/deploy/rbac.yaml.
const (
	RelayNamespace      = "outpost-system"
	RelayServiceAccount = "outpost-relay"
)

// Options configures Start. The zero value works.
type Options struct {
	// Dir holds everything; a temporary directory if "".
	Dir string
	Log *slog.Logger
	// BinDir holds outpost-agent and outpost-relay; "" builds them.
	BinDir string
	// ControlPlane is passed to harness.StartControlPlane (Dir and Log are
	// filled in).
	ControlPlane harness.Options
	// HeartbeatInterval and LeaseDuration are passed to the relay; zero
	// keeps its defaults.
	HeartbeatInterval time.Duration
	LeaseDuration     time.Duration
	// Containerd starts a containerd (Debian's, with runc) and an OCI
	// registry on loopback holding test/busybox:1 and :2, and points every
	// agent at them, each agent in its own containerd namespace.
	Containerd bool
	// MetricsServer starts metrics-server (kubectl top) once the control
	// plane runs, and gives relays --kubelet-node-ports, so it reaches
	// each edge node at a port of its own.
	MetricsServer bool
}

// Stack is a running control plane plus Outpost's processes on it.
type Stack struct {
	Dir    string
	BinDir string
	CP     *harness.ControlPlane
	// RelayKubeconfig authenticates as the relay's ServiceAccount, so the
	// relay runs with exactly the RBAC it ships with (impersonating nodes
	// for everything it does on their behalf).
	RelayKubeconfig string

	// Containerd, Registry and Images are set with Options.Containerd.
	Containerd *harness.Containerd
	Registry   *harness.Registry
	Images     []harness.BusyboxImage
	// MetricsServer is set with Options.MetricsServer.
	MetricsServer *harness.MetricsServer

	opts      Options
	log       *slog.Logger
	removeDir bool
	relays    []*Relay
	agents    []*Agent
}

// Start starts a control plane, installs the relay's RBAC and mints its
// credentials. It starts no relay: call StartRelay.
func Start(ctx context.Context, opts Options) (_ *Stack, err error) {
	s := &Stack{opts: opts, Dir: opts.Dir, log: opts.Log}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.Dir == "" {
		if s.Dir, err = os.MkdirTemp("", "outpost-stack-"); err != nil {
			return nil, err
		}
		s.removeDir = true
	}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	s.BinDir = opts.BinDir
	if s.BinDir == "" {
		if s.BinDir, err = BuildBinaries(ctx, filepath.Join(s.Dir, "bin"), s.log); err != nil {
			return nil, err
		}
	}
	cpo := opts.ControlPlane
	cpo.Dir = filepath.Join(s.Dir, "controlplane")
	// As kubeadm and k3s set it: the API server dials a node's InternalIP
	// first, which the relay sets to its own kubelet API for edge nodes.
	// Prepended, so a caller's own value wins.
	cpo.ExtraAPIServerFlags = append([]string{"--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname"}, cpo.ExtraAPIServerFlags...)
	cpo.Log = s.log
	if s.CP, err = harness.StartControlPlane(ctx, cpo); err != nil {
		return nil, err
	}
	if err := s.installRBAC(ctx); err != nil {
		return nil, err
	}
	if opts.MetricsServer {
		if s.MetricsServer, err = s.CP.StartMetricsServer(ctx, true); err != nil {
			return nil, err
		}
	}
	if opts.Containerd {
		if s.Containerd, err = harness.StartContainerd(ctx, harness.ContainerdOptions{Dir: filepath.Join(s.Dir, "containerd"), Log: s.log}); err != nil {
			return nil, err
		}
		if s.Registry, err = harness.StartRegistry(ctx, nil); err != nil {
			return nil, err
		}
		if s.Images, err = s.Registry.BuildBusyboxImage(ctx, "test/busybox", "1", "2"); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// BuildBinaries builds outpost-agent and outpost-relay into dir, unless
// OUTPOST_BIN_DIR names a directory that already holds them.
func BuildBinaries(ctx context.Context, dir string, log *slog.Logger) (string, error) {
	if d := os.Getenv("OUTPOST_BIN_DIR"); d != "" {
		return d, nil
	}
	root, err := harness.RepoRoot()
	if err != nil {
		return "", err
	}
	for name, pkg := range map[string]string{
		"outpost-agent": "./agent/cmd/outpost-agent",
		"outpost-relay": "./cloud/cmd/outpost-relay",
	} {
		log.Info("building", "binary", name)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, name),
			"-ldflags", "-X main.version=v0.1.0-test", pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("build %s: %v\n%s", name, err, out)
		}
	}
	return dir, nil
}

// installRBAC applies cloud/deploy/rbac.yaml and policy.yaml and writes a
// kubeconfig for the relay's ServiceAccount with a token from the
// TokenRequest API.
func (s *Stack) installRBAC(ctx context.Context) error {
	cfg, err := RelayRESTConfig(ctx, s.CP)
	if err != nil {
		return err
	}
	s.RelayKubeconfig = filepath.Join(s.Dir, "relay.kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: outpost-relay
  user:
    token: %s
contexts:
- name: relay
  context: {cluster: local, user: outpost-relay}
current-context: relay
`, cfg.Host, base64.StdEncoding.EncodeToString(cfg.CAData), cfg.BearerToken)
	return os.WriteFile(s.RelayKubeconfig, []byte(kc), 0o600)
}

// RelayRESTConfig applies cloud/deploy/rbac.yaml and policy.yaml to cp
// and returns a client configuration that authenticates as the relay's
// ServiceAccount, with a token from the TokenRequest API: what the relay
// may do as users deploy it, no more.
func RelayRESTConfig(ctx context.Context, cp *harness.ControlPlane) (*rest.Config, error) {
	root, err := harness.RepoRoot()
	if err != nil {
		return nil, err
	}
	deploy := filepath.Join(root, "cloud", "deploy")
	if out, err := cp.Kubectl(ctx, "apply", "-f", filepath.Join(deploy, "rbac.yaml"), "-f", filepath.Join(deploy, "policy.yaml")); err != nil {
		return nil, fmt.Errorf("apply relay RBAC and admission policies: %v\n%s", err, out)
	}
	var tok *authv1.TokenRequest
	exp := int64(24 * 3600)
	// The ServiceAccount's token controller may not have caught up with
	// the apply yet.
	err = wait.Until(ctx, 30*time.Second, func() (bool, string) {
		tok, err = cp.Client().CoreV1().ServiceAccounts(RelayNamespace).CreateToken(ctx, RelayServiceAccount,
			&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
		return err == nil, fmt.Sprint(err)
	})
	if err != nil {
		return nil, fmt.Errorf("token for the relay's service account: %w", err)
	}
	ca, err := os.ReadFile(cp.PKI.CACert)
	if err != nil {
		return nil, err
	}
	return &rest.Config{Host: cp.APIServerURL, BearerToken: tok.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAData: ca}}, nil
}

// CreateToken creates a bootstrap token with outpost-relay token create, as
// an administrator would, and returns it. Extra flags (--node NAME,
// --uses N) are passed on.
func (s *Stack) CreateToken(ctx context.Context, ttl time.Duration, extra ...string) (string, error) {
	args := append([]string{"token", "create", "--kubeconfig", s.CP.Kubeconfig, "--ttl", ttl.String()}, extra...)
	out, err := exec.CommandContext(ctx, filepath.Join(s.BinDir, "outpost-relay"), args...).Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		return "", fmt.Errorf("outpost-relay token create: %v: %s", err, msg)
	}
	return strings.TrimSpace(string(out)), nil
}

// AllowNode lets the relay act as node name with outpost-relay node allow,
// as an administrator would (cloud/nodegrant), and waits until the
// relay's role carries it. A name that is not a valid node name is left
// to join to refuse.
func (s *Stack) AllowNode(ctx context.Context, name string) error {
	if nodes.CheckName(name) != nil {
		return nil
	}
	out, err := exec.CommandContext(ctx, filepath.Join(s.BinDir, "outpost-relay"), "node", "allow",
		"--kubeconfig", s.CP.Kubeconfig, name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("outpost-relay node allow %s: %v: %s", name, err, out)
	}
	return nil
}

// Stop stops every agent and relay, then the control plane.
func (s *Stack) Stop() {
	for _, a := range s.agents {
		a.Stop()
	}
	for _, r := range s.relays {
		r.Stop()
	}
	if s.MetricsServer != nil {
		_ = s.MetricsServer.Proc.Stop(10 * time.Second)
	}
	if s.Containerd != nil {
		if err := s.Containerd.Stop(); err != nil {
			s.log.Warn("containerd stop", "err", err)
		}
	}
	if s.Registry != nil {
		s.Registry.Stop()
	}
	// Pods leave mounts behind (their network namespaces are bind-mounted
	// under the agents' state directories); nothing of the stack stays.
	unmountUnder(s.Dir)
	s.removeNetwork()
	if s.CP != nil {
		s.CP.Stop()
	}
	if s.removeDir {
		os.RemoveAll(s.Dir)
	}
}

// NodeReady reports the node's Ready condition status ("" if absent).
func (s *Stack) NodeReady(ctx context.Context, name string) (corev1.ConditionStatus, error) {
	n, err := s.CP.Client().CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status, nil
		}
	}
	return "", nil
}

// WaitNodeReady waits until the node's Ready condition is (want) or is not
// (!want) True.
func (s *Stack) WaitNodeReady(ctx context.Context, name string, want bool, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last corev1.ConditionStatus
	var lastErr error
	for {
		st, err := s.NodeReady(ctx, name)
		last, lastErr = st, err
		if err == nil && (st == corev1.ConditionTrue) == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s: Ready is %q (err %v), wanted true=%v after %v", name, last, lastErr, want, timeout)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// unmountUnder detaches every mount below dir, deepest first.
func unmountUnder(dir string) {
	if dir == "" {
		return
	}
	for _, m := range harness.MountsUnder(dir) {
		_ = syscall.Unmount(m, syscall.MNT_DETACH)
	}
}

// removeNetwork removes what the agents' pod networks leave on the
// machine when the stack stops under running pods (no CNI DEL runs): their
// bridges, the masquerade rules of pod CIDRs cut from this control plane's
// cluster CIDR, and portmap's hostPort chains of pods in it.
func (s *Stack) removeNetwork() {
	for _, a := range s.agents {
		if a.Bridge != "" {
			_ = exec.Command("ip", "link", "del", a.Bridge).Run()
		}
	}
	if s.CP == nil || s.CP.ClusterCIDR == "" {
		return
	}
	_, cluster, err := net.ParseCIDR(s.CP.ClusterCIDR)
	if err != nil {
		return
	}
	out, err := exec.Command("iptables-save", "-t", "nat").Output()
	if err != nil {
		return
	}
	inCluster := func(f []string) bool {
		for i, x := range f {
			if i > 0 && (f[i-1] == "-s" || f[i-1] == "--to-destination") {
				if ip, _, err := net.ParseCIDR(strings.Split(x, ":")[0]); err == nil && cluster.Contains(ip) {
					return true
				}
				if ip := net.ParseIP(strings.Split(x, ":")[0]); ip != nil && cluster.Contains(ip) {
					return true
				}
			}
		}
		return false
	}
	lines := strings.Split(string(out), "\n")
	chains := map[string]bool{} // portmap's per-pod chains of this cluster's pods
	for _, line := range lines {
		if f := strings.Fields(line); len(f) > 2 && f[0] == "-A" && strings.HasPrefix(f[1], "CNI-DN-") && inCluster(f) {
			chains[f[1]] = true
		}
	}
	var script []string
	for _, line := range lines {
		f := strings.Fields(line)
		switch {
		case len(f) < 4 || f[0] != "-A":
		case f[1] == "POSTROUTING" && strings.Contains(line, "outpost: pod traffic leaving the pod CIDR") && inCluster(f):
			script = append(script, "-D"+strings.TrimPrefix(line, "-A"))
		case f[1] == "CNI-HOSTPORT-DNAT" && chains[f[len(f)-1]]:
			script = append(script, "-D"+strings.TrimPrefix(line, "-A"))
		}
	}
	for c := range chains {
		script = append(script, "-F "+c, "-X "+c)
	}
	if len(script) == 0 {
		return
	}
	cmd := exec.Command("iptables-restore", "--noflush", "-w")
	cmd.Stdin = strings.NewReader("*nat\n" + strings.Join(script, "\n") + "\nCOMMIT\n")
	if b, err := cmd.CombinedOutput(); err != nil {
		s.log.Warn("removing the pods' iptables rules", "err", err, "output", string(b))
	}
}
