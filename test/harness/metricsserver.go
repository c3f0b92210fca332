package harness

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// MetricsServer is a running metrics-server (sigs.k8s.io/metrics-server at
// the version build/metricsserver pins), registered with the API server
// as the APIService v1beta1.metrics.k8s.io, so kubectl top works. It
// scrapes kubelets at each Node's InternalIP and
// status.daemonEndpoints.kubeletEndpoint.Port, without checking their
// serving certificates (--kubelet-insecure-tls).
type MetricsServer struct {
	Proc *Process
	Port int
}

// MetricsServerBinary returns the path of metrics-server, built by
// build/metricsserver/build.sh (cached after the first build). Without
// build it fails unless the cache holds it.
func MetricsServerBinary(ctx context.Context, log *slog.Logger, build bool) (string, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := runBuild(ctx, log, build, "metrics-server", "metricsserver", "build/metricsserver/build.sh", func(dir string) error {
		_, err := os.Stat(filepath.Join(dir, "metrics-server"))
		return err
	})
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "metrics-server"), nil
}

// metricsServerUser is metrics-server's user name (its client
// certificate's common name).
const metricsServerUser = "metrics-server"

// metricsServerManifest is what metrics-server's own manifests grant it,
// for a client-certificate user instead of a service account, and its
// APIService. The Service is an ExternalName one for localhost: the API
// server proxies to it without a Service network.
const metricsServerManifest = `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:metrics-server"}
rules:
- apiGroups: [""]
  resources: [nodes/metrics]
  verbs: [get]
- apiGroups: [""]
  resources: [pods, nodes]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:metrics-server"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:metrics-server"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: ` + metricsServerUser + `}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "metrics-server:system:auth-delegator"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:auth-delegator"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: ` + metricsServerUser + `}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: metrics-server-auth-reader, namespace: kube-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: extension-apiserver-authentication-reader}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: ` + metricsServerUser + `}]
---
apiVersion: v1
kind: Service
metadata: {name: metrics-server, namespace: kube-system}
spec:
  type: ExternalName
  externalName: localhost
  ports: [{name: https, port: %d}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.metrics.k8s.io}
spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  insecureSkipTLSVerify: true
  service: {name: metrics-server, namespace: kube-system, port: %d}
`

// StartMetricsServer builds (if need be) and starts metrics-server for cp
// with its own client certificate, grants it what its manifests grant,
// registers its APIService and waits until the API serves
// metrics.k8s.io. Stop it with Proc.Stop.
func (cp *ControlPlane) StartMetricsServer(ctx context.Context, build bool) (*MetricsServer, error) {
	bin, err := MetricsServerBinary(ctx, cp.log, build)
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	kc, err := cp.NewKubeconfig("metrics-server", metricsServerUser)
	if err != nil {
		return nil, err
	}
	manifest := filepath.Join(cp.Dir, "metrics-server.yaml")
	if err := os.WriteFile(manifest, fmt.Appendf(nil, metricsServerManifest, port, port), 0o644); err != nil {
		return nil, err
	}
	if out, err := cp.Kubectl(ctx, "apply", "-f", manifest); err != nil {
		return nil, fmt.Errorf("metrics-server: apply its RBAC and APIService: %w: %s", err, out)
	}
	certDir := filepath.Join(cp.Dir, "metrics-server-certs")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin,
		"--secure-port="+strconv.Itoa(port), "--bind-address=127.0.0.1", "--cert-dir="+certDir,
		"--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
		"--kubelet-insecure-tls", "--kubelet-preferred-address-types=InternalIP", "--kubelet-use-node-status-port",
		"--metric-resolution=15s", "-v=2")
	cmd.Dir = cp.Dir
	p, err := StartProcess("metrics-server", cmd, filepath.Join(cp.Dir, "logs", "metrics-server.log"))
	if err != nil {
		return nil, err
	}
	ms := &MetricsServer{Proc: p, Port: port}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, err := cp.Kubectl(ctx, "get", "--raw", "/apis/metrics.k8s.io/v1beta1")
		if err == nil {
			return ms, nil
		}
		if p.Exited() || time.Now().After(deadline) || ctx.Err() != nil {
			_ = p.Stop(5 * time.Second)
			return nil, fmt.Errorf("metrics-server: the API does not serve metrics.k8s.io (%v); its log ends:\n%s", err, p.LogTail(20))
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
