package harness

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// testBinaries returns the control-plane binaries. Outside CI it builds
// them if needed. In CI (CI=true) missing binaries are a failure, never a
// skip and never a build inside go test's timeout: make test builds the
// control plane before the tests run.
func testBinaries(t *testing.T, ctx context.Context, log *slog.Logger) string {
	t.Helper()
	get, mode := Binaries, "building them if needed"
	if os.Getenv("CI") == "true" {
		get, mode = BuiltBinaries, "CI=true, so they must be built already"
	}
	dir, err := get(ctx, log)
	if err != nil {
		t.Fatalf("control-plane binaries (%s): %v", mode, err)
	}
	return dir
}

// pinnedVersion reads the Kubernetes version build/controlplane pins.
func pinnedVersion(t *testing.T) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "build", "controlplane", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "k8s.io/kubernetes" {
			return f[1]
		}
	}
	t.Fatal("build/controlplane/go.mod does not require k8s.io/kubernetes")
	return ""
}

func TestControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real control plane (and may build it); skipped in -short mode")
	}
	want := pinnedVersion(t)
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Minute)
	defer cancel()

	bin := testBinaries(t, ctx, log)
	start := time.Now()
	cp, err := StartControlPlane(ctx, Options{
		Dir:                    t.TempDir(),
		Log:                    log,
		BinDir:                 bin,
		NodeMonitorGracePeriod: 15 * time.Second,
		EvictionToleration:     30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Stop() })
	t.Logf("control plane ready in %s", time.Since(start).Round(time.Millisecond))

	out, err := cp.Kubectl(ctx, "version", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Client struct{ GitVersion string } `json:"clientVersion"`
		Server struct{ GitVersion string } `json:"serverVersion"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("kubectl version -o json: %v\n%s", err, out)
	}
	if v.Client.GitVersion != want || v.Server.GitVersion != want {
		t.Errorf("kubectl version: client %q, server %q; want %q for both", v.Client.GitVersion, v.Server.GitVersion, want)
	}

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "harness-test", Labels: map[string]string{"outpost.dev/test": "harness"}}}
	created, err := cp.Client().CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	got, err := cp.Client().CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get namespace: %v", err)
	}
	if got.UID != created.UID || got.Labels["outpost.dev/test"] != "harness" {
		t.Errorf("namespace read back as uid %s labels %v; created uid %s", got.UID, got.Labels, created.UID)
	}
	if out, err := cp.Kubectl(ctx, "get", "namespace", ns.Name, "-o", "name"); err != nil || strings.TrimSpace(out) != "namespace/"+ns.Name {
		t.Errorf("kubectl get namespace: %q, %v", out, err)
	}

	// A kubeconfig from NewKubeconfig authenticates, and RBAC applies to it.
	kc, err := cp.NewKubeconfig("nobody", "outpost-nobody")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := cp.Kubectl(ctx, "--kubeconfig="+kc, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"); err != nil || out != "outpost-nobody" {
		t.Errorf("kubectl auth whoami with NewKubeconfig: %q, %v", out, err)
	}
	if _, err := cp.Kubectl(ctx, "--kubeconfig="+kc, "get", "namespaces"); err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Errorf("an unprivileged user listed namespaces: err = %v", err)
	}

	// The eviction knob reaches the API server's DefaultTolerationSeconds.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "harness-test", Namespace: metav1.NamespaceDefault},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
	pod, err = cp.Client().CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod: %v", err)
	}
	var notReady *int64
	for _, tol := range pod.Spec.Tolerations {
		if tol.Key == corev1.TaintNodeNotReady {
			notReady = tol.TolerationSeconds
		}
	}
	if notReady == nil || *notReady != 30 {
		t.Errorf("pod tolerations %+v: want node.kubernetes.io/not-ready for 30s", pod.Spec.Tolerations)
	}

	procs := cp.Processes()
	if len(procs) != 4 {
		t.Fatalf("%d processes, want 4", len(procs))
	}
	if err := cp.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if err := cp.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	for _, p := range procs {
		if !p.Exited() {
			t.Errorf("%s still running after Stop", p)
		}
		if err := syscall.Kill(p.Pid(), 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s: kill -0 after Stop = %v, want ESRCH", p, err)
		}
		if err := syscall.Kill(-p.Pid(), 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s: process group still has members after Stop (kill -0 = %v)", p, err)
		}
	}
}

func TestStartControlPlaneRefusesUsedDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "leftover"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_, err := StartControlPlane(t.Context(), Options{Dir: dir, BinDir: bin})
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("StartControlPlane in a used directory: err = %v, want one saying it is not empty", err)
	}
}

func TestStartControlPlaneNamesFailingComponent(t *testing.T) {
	bin := t.TempDir()
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"} {
		script := "#!/bin/sh\necho \"$0 refuses: bad flag\" >&2\nexit 2\n"
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_, err := StartControlPlane(t.Context(), Options{Dir: t.TempDir(), BinDir: bin})
	if err == nil {
		t.Fatal("StartControlPlane with a failing etcd succeeded")
	}
	for _, want := range []string{"etcd exited during startup", "exit status 2", "refuses: bad flag"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}
