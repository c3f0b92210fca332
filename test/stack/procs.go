package stack

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"outpost.dev/test/harness"
)

// Relay is a running outpost-relay process.
type Relay struct {
	// Addr is 127.0.0.1:port; URL is https://Addr.
	Addr, URL string
	// KubeletAddr is where the relay serves the kubelet API of its edge
	// nodes (127.0.0.1:port), which the API server dials for kubectl logs.
	KubeletAddr string
	Proc        *harness.Process
	s           *Stack
	args        []string
}

// StartRelay starts a relay on a free loopback port with the relay's own
// (least-privilege) credentials. Extra flags are appended.
func (s *Stack) StartRelay(ctx context.Context, extra ...string) (*Relay, error) {
	port, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	r := &Relay{s: s, Addr: "127.0.0.1:" + strconv.Itoa(port)}
	r.URL = "https://" + r.Addr
	// The kubelet API for edge nodes (kubectl logs), as the API server
	// reaches it: its kubelet client certificate is from the cluster CA.
	kport, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	r.KubeletAddr = "127.0.0.1:" + strconv.Itoa(kport)
	r.args = []string{"serve", "--kubeconfig", s.RelayKubeconfig, "--listen", r.Addr,
		"--advertise-address", "127.0.0.1,localhost", "--namespace", RelayNamespace, "--log-level", "debug",
		"--kubelet-listen", r.KubeletAddr, "--kubelet-advertise-address", "127.0.0.1", "--kubelet-client-ca", s.CP.PKI.CACert,
		// Every test agent joins from 127.0.0.1: one address with the
		// joins of a whole test package behind it.
		"--join-rate-per-ip", "50", "--join-burst-per-ip", "200"}
	if s.opts.HeartbeatInterval > 0 {
		r.args = append(r.args, "--heartbeat-interval", s.opts.HeartbeatInterval.String())
	}
	if s.opts.LeaseDuration > 0 {
		r.args = append(r.args, "--lease-duration", s.opts.LeaseDuration.String())
	}
	if s.opts.MetricsServer {
		// A port of its own for each edge node (metrics-server tells
		// kubelets apart by address and port only); busy ones are
		// skipped.
		base, err := harness.FreePort()
		if err != nil {
			return nil, err
		}
		base = min(base, 65535-64)
		r.args = append(r.args, "--kubelet-node-ports", strconv.Itoa(base)+"-"+strconv.Itoa(base+63))
	}
	r.args = append(r.args, extra...)
	if err := r.Start(ctx); err != nil {
		return nil, err
	}
	s.relays = append(s.relays, r)
	return r, nil
}

// Start (re)starts the relay process with the same address and flags, and
// waits until it answers /readyz.
func (r *Relay) Start(ctx context.Context) error {
	if r.Proc != nil && !r.Proc.Exited() {
		return fmt.Errorf("relay %s is running", r.Addr)
	}
	cmd := exec.Command(filepath.Join(r.s.BinDir, "outpost-relay"), r.args...)
	p, err := harness.StartProcess("outpost-relay", cmd, filepath.Join(r.s.Dir, "logs", "relay-"+strings.ReplaceAll(r.Addr, ":", "-")+".log"))
	if err != nil {
		return err
	}
	r.Proc = p
	// The relay's serving certificate comes from its own CA; readiness is
	// all this probe checks, so it skips verification.
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := c.Get(r.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if p.Exited() {
			return fmt.Errorf("relay exited during start:\n%s", p.LogTail(30))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("relay not ready after 60s (last: %v):\n%s", err, p.LogTail(30))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Stop stops the relay gracefully (SIGTERM).
func (r *Relay) Stop() error {
	if r.Proc == nil {
		return nil
	}
	return r.Proc.Stop(10 * time.Second)
}

// Agent is an edge agent with its own state directory.
type Agent struct {
	Name     string
	StateDir string
	// Config is the agent's config file, written by Start; MQTTAddr is its
	// embedded broker's address (each agent gets its own loopback port).
	Config   string
	MQTTAddr string
	// MQTTConfig, if set before the first Start, is more YAML for the
	// config's mqtt: block, one setting a line (url: tcp://HOST:PORT for
	// an external broker).
	MQTTConfig string
	// ExtraConfig, if set before the first Start, is more top-level YAML
	// for the config (certRotateAt: 40).
	ExtraConfig string
	// MetricsAddr is the agent's metrics endpoint (its own loopback port;
	// GET http://MetricsAddr/metrics).
	MetricsAddr string
	// Bridge is the agent's pod network bridge (its own, set by Start).
	Bridge string
	// NoPodNetwork, if set before the first Start, turns the pod network
	// off (network.disabled): pods get loopback only and no CNI plugin
	// runs.
	NoPodNetwork bool
	Proc         *harness.Process
	s            *Stack
	runArgs      []string

	// Launcher, if set, is an outpost-boot binary that Start runs with
	// the agent's arguments instead of outpost-agent (agent/slots/boot).
	Launcher string
	// Env is more environment for the agent process, after this one's
	// (GODEBUG=memprofilerate=1).
	Env []string
}

// JoinResult is what outpost-agent join said.
type JoinResult struct {
	Stdout, Stderr string
	ExitCode       int
}

// RunJoin runs outpost-agent join for node name with a fresh state
// directory and returns its output whatever the outcome. The relay is
// first allowed to act as name (AllowNode), as an administrator would
// when handing out the token.
func (s *Stack) RunJoin(ctx context.Context, name, server, token string, extra ...string) (*Agent, JoinResult) {
	a := &Agent{Name: name, StateDir: filepath.Join(s.Dir, "agents", name), s: s}
	if err := s.AllowNode(ctx, name); err != nil {
		return a, JoinResult{Stderr: err.Error(), ExitCode: -1}
	}
	args := append([]string{"join", "--server", server, "--token", token, "--node-name", name,
		"--state-dir", a.StateDir}, extra...)
	cmd := exec.CommandContext(ctx, filepath.Join(s.BinDir, "outpost-agent"), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := JoinResult{Stdout: out.String(), Stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		res.ExitCode = ee.ExitCode()
	} else if err != nil {
		res.ExitCode = -1
		res.Stderr += err.Error()
	}
	return a, res
}

// Join joins node name through relay r with a new token, and fails if
// joining fails.
func (s *Stack) Join(ctx context.Context, r *Relay, name string) (*Agent, error) {
	tok, err := s.CreateToken(ctx, time.Hour)
	if err != nil {
		return nil, err
	}
	a, res := s.RunJoin(ctx, name, r.URL, tok)
	if res.ExitCode != 0 {
		return nil, fmt.Errorf("join %s: exit %d: %s", name, res.ExitCode, res.Stderr)
	}
	s.agents = append(s.agents, a)
	return a, nil
}

// Start runs outpost-agent run on the simulated board. Extra flags are
// appended and kept for restarts.
func (a *Agent) Start(extra ...string) error {
	if a.Proc != nil && !a.Proc.Exited() {
		return fmt.Errorf("agent %s is running", a.Name)
	}
	if extra != nil {
		a.runArgs = extra
	}
	if a.Config == "" {
		port, err := harness.FreePort()
		if err != nil {
			return err
		}
		a.MQTTAddr = "127.0.0.1:" + strconv.Itoa(port)
		a.Config = filepath.Join(a.s.Dir, "agents", a.Name+".yaml")
		cfg := "# written by test/stack\nmqtt:\n  listen: " + a.MQTTAddr + "\n"
		for _, l := range strings.Split(strings.TrimSpace(a.MQTTConfig), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				cfg += "  " + l + "\n"
			}
		}
		if c := a.s.Containerd; c != nil {
			cfg += "containerd:\n  address: " + c.Address + "\n  namespace: outpost-" + a.Name +
				"\n  registries:\n    \"" + a.s.Registry.Host + "\": {plainHTTP: true}\n"
		}
		// The pod network: a bridge of this agent's own (agents of stacks
		// running side by side share the machine), never the machine's
		// /etc/cni/net.d; the pod CIDR comes from the control plane.
		var rb [3]byte
		_, _ = rand.Read(rb[:])
		a.Bridge = "ob" + hex.EncodeToString(rb[:])
		cfg += "network:\n  bridge: " + a.Bridge + "\n  confDir: " + filepath.Join(a.s.Dir, "agents", a.Name+"-net.d") + "\n"
		if a.NoPodNetwork {
			cfg += "  disabled: true\n"
		}
		// No clusterDNS: this control plane runs no DNS Service, so
		// ClusterFirst pods resolve through the node's resolver.
		cfg += "  # clusterDNS left out: the cluster runs no DNS Service (docs/network.md)\n"
		mport, err := harness.FreePort()
		if err != nil {
			return err
		}
		a.MetricsAddr = "127.0.0.1:" + strconv.Itoa(mport)
		cfg += "metrics:\n  listen: " + a.MetricsAddr + "\n"
		if x := strings.TrimSpace(a.ExtraConfig); x != "" {
			cfg += x + "\n"
		}
		if err := os.WriteFile(a.Config, []byte(cfg), 0o644); err != nil {
			return err
		}
	}
	args := append([]string{"run", "--config", a.Config, "--state-dir", a.StateDir, "--board", "sim", "--log-level", "debug"}, a.runArgs...)
	bin := filepath.Join(a.s.BinDir, "outpost-agent")
	if a.Launcher != "" {
		bin = a.Launcher
	}
	cmd := exec.Command(bin, args...)
	if len(a.Env) > 0 {
		cmd.Env = append(os.Environ(), a.Env...)
	}
	p, err := harness.StartProcess("agent-"+a.Name, cmd, filepath.Join(a.s.Dir, "logs", "agent-"+a.Name+".log"))
	if err != nil {
		return err
	}
	a.Proc = p
	return nil
}

// Stop stops the agent gracefully (SIGTERM).
func (a *Agent) Stop() error {
	if a.Proc == nil {
		return nil
	}
	return a.Proc.Stop(10 * time.Second)
}

// Kill kills the agent with SIGKILL, as a crash or power loss would.
func (a *Agent) Kill() error {
	if a.Proc == nil {
		return nil
	}
	return a.Proc.Kill()
}
