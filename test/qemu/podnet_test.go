//go:build qemu

package qemu

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/test/harness"
	"outpost.dev/test/wait"
)

// podNetGuestPort is the pod's hostPort on the gateway; QEMU forwards a
// port of the host's loopback to it.
const podNetGuestPort = 8080

// podNetHost is what the pod network test needs on the host before the
// gateway boots: a registry for the pod's image, an HTTP server on the
// host's loopback for the pod to reach, and a free port QEMU forwards to
// the pod's hostPort.
type podNetHost struct {
	Reg     *harness.Registry
	FwdPort int
	srv     *http.Server
	addr    string
	token   string

	mu   sync.Mutex
	hits []string // paths the pod asked for
}

func startPodNetHost(t *testing.T) *podNetHost {
	t.Helper()
	reg, err := harness.StartRegistry(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Stop() })
	fwd, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 8)
	rand.Read(b)
	h := &podNetHost{Reg: reg, FwdPort: fwd, addr: ln.Addr().String(), token: "outpost-podnet-" + hex.EncodeToString(b)}
	h.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.hits = append(h.hits, r.URL.Path)
		h.mu.Unlock()
		io.WriteString(w, h.token+"\n")
	}), ReadHeaderTimeout: 10 * time.Second}
	go h.srv.Serve(ln)
	t.Cleanup(func() { h.srv.Close() })
	return h
}

// hostFwd is QEMU's user-network forward of the host's 127.0.0.1:FwdPort
// to the guest's hostPort.
func (h *podNetHost) hostFwd() string {
	return fmt.Sprintf("tcp:127.0.0.1:%d-:%d", h.FwdPort, podNetGuestPort)
}

func (h *podNetHost) asked(path string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.hits {
		if p == path {
			return true
		}
	}
	return false
}

// checkPodNetwork runs a pod without hostNetwork on the booted gateway
// and checks what the image's pod network gives it: an address from the
// node's spec.podCIDR in status.podIP, egress to the host (a GET from the
// pod to the HTTP server on the host's loopback, 10.0.2.2 to the guest,
// leaving the guest masqueraded by the agent's rule), its hostPort
// answering on the gateway (portmap's DNAT; QEMU forwards a host port to
// it), and, once deleted, its teardown (CNI DEL first) done.
func checkPodNetwork(t *testing.T, g *gateway, h *podNetHost) {
	ctx := context.Background()
	image := pushGuestImage(t, ctx, h.Reg, g.Machine.Arch, "test/busybox:podnet", guestBusybox(t, g.Machine.Arch))
	_, hostPort, _ := net.SplitHostPort(h.addr)
	// The pod retries its GET until one succeeds; if egress never works
	// the wait below times out with the pod's state and the console.
	// (busybox-static 1.35's wget crashes with -T, so no timeout there.)
	script := fmt.Sprintf(`until wget -q -O /tmp/reply http://%s:%s/from-pod; do sleep 2; done; cat /tmp/reply; `+
		`mkdir -p /www && echo served-by-pod > /www/index.html && exec httpd -f -p %d -h /www`, hostFromGuest, hostPort, podNetGuestPort)
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: podnet, namespace: default}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: %s
    command: [sh, -c, %q]
    ports: [{containerPort: %d, hostPort: %d}]
`, g.Node, image, script, podNetGuestPort, podNetGuestPort)
	f := filepath.Join(t.TempDir(), "podnet.yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if out, err := g.St.CP.Kubectl(ctx, "apply", "-f", f); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	pods := g.St.CP.Client().CoreV1().Pods("default")
	state := func() string {
		p, err := pods.Get(ctx, "podnet", metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		return fmt.Sprintf("phase %s, podIP %q, conditions %v", p.Status.Phase, p.Status.PodIP, p.Status.Conditions)
	}
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s\npod: %s\nlast console lines:\n%s", fmt.Sprintf(format, args...), state(), g.Con.Tail(40))
	}

	// Emulated: the pull, unpack and runc start take a while under TCG.
	if err := wait.Until(ctx, 8*time.Minute, func() (bool, string) { return h.asked("/from-pod"), state() }); err != nil {
		fail("the pod never reached the host's HTTP server at %s:%s: %v", hostFromGuest, hostPort, err)
	}
	t.Logf("%.1fs after kubectl apply: the pod's GET reached the host", time.Since(t0).Seconds())

	node, err := g.St.CP.Client().CoreV1().Nodes().Get(ctx, g.Node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, cidr, err := net.ParseCIDR(node.Spec.PodCIDR)
	if err != nil {
		t.Fatalf("node %s spec.podCIDR %q: %v", g.Node, node.Spec.PodCIDR, err)
	}
	var podIP string
	if err := wait.Until(ctx, 2*time.Minute, func() (bool, string) {
		p, err := pods.Get(ctx, "podnet", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		podIP = p.Status.PodIP
		return podIP != "", state()
	}); err != nil {
		fail("no status.podIP: %v", err)
	}
	if ip := net.ParseIP(podIP); ip == nil || !cidr.Contains(ip) {
		fail("status.podIP %q is not in the node's pod CIDR %s", podIP, cidr)
	}
	t.Logf("pod IP %s in the node's pod CIDR %s", podIP, cidr)

	// hostPort: the host's forwarded port reaches the guest's eth0, where
	// portmap's DNAT sends it to the pod.
	client := &http.Client{Timeout: 5 * time.Second}
	var body string
	if err := wait.Until(ctx, 2*time.Minute, func() (bool, string) {
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", h.FwdPort))
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		body = string(b)
		return resp.StatusCode == http.StatusOK && strings.TrimSpace(body) == "served-by-pod", fmt.Sprintf("%s: %q", resp.Status, body)
	}); err != nil {
		fail("the pod's hostPort %d did not answer through QEMU's forward from 127.0.0.1:%d: %v", podNetGuestPort, h.FwdPort, err)
	}
	t.Logf("hostPort %d answered: %q", podNetGuestPort, strings.TrimSpace(body))

	// The reply came back into the pod: its log holds the host's token.
	if out, err := g.St.CP.Kubectl(ctx, "logs", "podnet"); err != nil || !strings.Contains(out, h.token) {
		fail("kubectl logs podnet: %v\n%q; want the host's reply %q", err, out, h.token)
	}
	for _, l := range strings.Split(g.Con.Tail(g.Con.Len()), "\n") {
		if strings.Contains(l, "pods get loopback only") {
			fail("the agent ran pods without a network: %s", l)
		}
	}

	// Delete: the agent logs the pod removed only once its teardown,
	// CNI DEL first, has succeeded (a failed DEL is retried and keeps it).
	p, err := pods.Get(ctx, "podnet", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	from := g.Con.Len()
	if out, err := g.St.CP.Kubectl(ctx, "delete", "pod", "podnet", "--wait=true", "--timeout=3m"); err != nil {
		fail("kubectl delete pod podnet: %v\n%s", err, out)
	}
	dctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if _, _, err := g.Con.WaitFrom(dctx, from, func(l string) bool {
		return strings.Contains(l, "pods: removed a deleted pod") && strings.Contains(l, string(p.UID))
	}); err != nil {
		fail("the agent never removed the deleted pod %s (its CNI DEL or unmounts failing?): %v", p.UID, err)
	}
	t.Logf("%.1fs after kubectl apply: pod deleted", time.Since(t0).Seconds())
}
