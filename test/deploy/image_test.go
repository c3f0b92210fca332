package deploy

import (
	"archive/tar"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/build/cross"
	"outpost.dev/build/relayimage/ociimage"
	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
	"outpost.dev/test/wait"
)

// relayImage returns the image index to test: the OCI layout named by
// OUTPOST_RELAY_IMAGE (make relay-image writes bin/outpost-relay-image),
// else one built here for this machine's architecture by the same package.
func relayImage(t *testing.T) v1.ImageIndex {
	t.Helper()
	if dir := os.Getenv("OUTPOST_RELAY_IMAGE"); dir != "" {
		idx, err := ociimage.ReadLayout(dir)
		if err != nil {
			t.Fatalf("OUTPOST_RELAY_IMAGE: %v", err)
		}
		// What make relay-image ships: every architecture.
		sizes, err := ociimage.Sizes(idx)
		if err != nil {
			t.Fatal(err)
		}
		var arches []string
		for _, s := range sizes {
			arches = append(arches, s.Arch)
		}
		if !slices.Equal(arches, ociimage.Arches) {
			t.Fatalf("OUTPOST_RELAY_IMAGE %s holds %v, want %v", dir, arches, ociimage.Arches)
		}
		return idx
	}
	root, err := cross.ModuleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	idx, err := ociimage.Build(t.Context(), ociimage.Options{ModuleRoot: root, Version: "v0.1.0-test",
		Created: time.Unix(0, 0), Arches: []string{runtime.GOARCH}})
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// TestImageServesAgent pushes the relay's image to the test registry,
// pulls it into containerd and runs it as Kubernetes would run relay.yaml's
// container (the image's user, the manifest's arguments, the service
// account's token and CA where a pod has them, a read-only root, no new
// privileges, no capabilities, the default seccomp profile), on the host's
// network against the test control plane. A real agent joins through it
// and its Node must become Ready.
func TestImageServesAgent(t *testing.T) {
	need(t)
	harness.RequireContainerd(t)
	if noContainerd != nil || st.Containerd == nil {
		t.Fatalf("containerd: %v", noContainerd)
	}
	ctx := stack.Context(t, 10*time.Minute)
	idx := relayImage(t)
	ref, err := ociimage.Push(ctx, idx, st.Registry.Ref("outpost/outpost-relay:test"), true)
	if err != nil {
		t.Fatal(err)
	}
	c := st.Containerd
	const ns = "outpost-relayimage"
	ctr := func(args ...string) string {
		t.Helper()
		out, err := c.Ctr(ctx, append([]string{"--namespace", ns}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	ctr("images", "pull", "--plain-http", ref)

	// What Kubernetes gives the relay's pod: the service account's token
	// and the cluster CA, mounted where client-go's in-cluster
	// configuration reads them (readable by the image's user only), and
	// the API server's address in the environment.
	exp := int64(3600)
	tok, err := st.CP.Client().CoreV1().ServiceAccounts(stack.RelayNamespace).CreateToken(ctx, stack.RelayServiceAccount,
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(st.CP.PKI.CACert)
	if err != nil {
		t.Fatal(err)
	}
	secrets := filepath.Join(st.Dir, "relay-image-serviceaccount")
	if err := os.MkdirAll(secrets, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"token": []byte(tok.Status.Token), "ca.crt": ca} {
		p := filepath.Join(secrets, name)
		if err := os.WriteFile(p, b, 0o400); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, ociimage.UID, ociimage.GID); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(secrets, ociimage.UID, ociimage.GID); err != nil {
		t.Fatal(err)
	}
	api, err := url.Parse(st.CP.APIServerURL)
	if err != nil {
		t.Fatal(err)
	}
	const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	kport, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	const id = "outpost-relay"
	logFile := filepath.Join(st.Dir, "logs", "relay-image.log")
	if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
		t.Fatal(err)
	}
	// relay.yaml's emptyDir for upgrade artifacts: the only place the
	// relay writes, owned by the image's user like a pod's emptyDir with
	// its fsGroup.
	cache := filepath.Join(st.Dir, "relay-image-cache")
	if err := os.MkdirAll(cache, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(cache, 65532, 65532); err != nil {
		t.Fatal(err)
	}
	run := []string{"run", "--detach", "--net-host", "--read-only", "--seccomp", "--log-uri", "file://" + logFile}
	// ctr has no "ALL": drop each capability its default set holds.
	for _, c := range []string{"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
		"SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"} {
		run = append(run, "--cap-drop", "CAP_"+c)
	}
	// ctr run replaces the whole command line with the arguments it is
	// given (a kubelet keeps the image's entrypoint and replaces its Cmd
	// with the container's args): so the entrypoint comes first here.
	// TestImageConfig (build/relayimage/ociimage) checks the image's own.
	ctr(append(run,
		"--env", "KUBERNETES_SERVICE_HOST="+api.Hostname(), "--env", "KUBERNETES_SERVICE_PORT="+api.Port(),
		"--mount", "type=bind,src="+secrets+",dst="+saDir+",options=rbind:ro",
		"--mount", "type=bind,src="+cache+",dst=/var/cache/outpost-relay,options=rbind:rw",
		ref, id, ociimage.Binary,
		// relay.yaml's arguments, with this machine's addresses.
		"serve", "--namespace="+stack.RelayNamespace,
		"--listen="+addr, "--advertise-address=127.0.0.1,localhost",
		"--kubelet-listen=127.0.0.1:"+strconv.Itoa(kport), "--kubelet-advertise-address=127.0.0.1",
		"--kubelet-client-ca="+saDir+"/ca.crt", "--upgrade-cache-dir=/var/cache/outpost-relay/upgrades")...)
	t.Cleanup(func() {
		// The stack's containerd kills the task when the tests end; a
		// failure shows the relay's last words first.
		if t.Failed() {
			if b, err := os.ReadFile(logFile); err == nil {
				t.Logf("relay container log:\n%s", lastLines(string(b), 40))
			}
		}
	})

	// The container's process: the image's user, no privileges.
	var pid int
	wait.State(t, ctx, time.Minute, "the relay container's task to run", func() (bool, string) {
		out, err := c.Ctr(ctx, "--namespace", ns, "tasks", "ls")
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == id && f[2] == "RUNNING" {
				pid, _ = strconv.Atoi(f[1])
				return pid > 0, line
			}
		}
		return false, fmt.Sprint(out, err)
	})
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		fmt.Sprintf("Uid:\t%d\t%d\t%d\t%d", ociimage.UID, ociimage.UID, ociimage.UID, ociimage.UID),
		fmt.Sprintf("Gid:\t%d\t%d\t%d\t%d", ociimage.GID, ociimage.GID, ociimage.GID, ociimage.GID),
		"NoNewPrivs:\t1", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "Seccomp:\t2",
	} {
		if !strings.Contains(string(status), want+"\n") {
			t.Errorf("relay process: no %q in /proc/%d/status:\n%s", want, pid, status)
		}
	}
	// ... running the image's binary for this machine.
	running, err := os.ReadFile(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		t.Fatal(err)
	}
	if want := imageBinary(t, idx); !bytes.Equal(running, want) {
		t.Errorf("the container runs a %d-byte program, not the image's %s (%d bytes)", len(running), ociimage.Binary, len(want))
	}

	// Ready as relay.yaml's readiness probe asks: /readyz over HTTPS.
	probe := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}}
	wait.State(t, ctx, 2*time.Minute, "the relay in its container to answer /readyz", func() (bool, string) {
		resp, err := probe.Get("https://" + addr + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})

	// A real agent joins through it and runs; its Node must be Ready.
	const node = "gw-relay-image"
	a, err := st.Join(ctx, &stack.Relay{Addr: addr, URL: "https://" + addr}, node)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	if err := st.WaitNodeReady(ctx, node, true, 2*time.Minute); err != nil {
		t.Fatalf("%v\nagent log:\n%s", err, a.Proc.LogTail(30))
	}
	// The relay in the container wrote the Node: its kubelet API address
	// comes from the container's flags.
	n, err := st.CP.Client().CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Status.DaemonEndpoints.KubeletEndpoint.Port != int32(kport) {
		t.Errorf("Node %s: kubelet port %d, the container's relay serves it on %d", node, n.Status.DaemonEndpoints.KubeletEndpoint.Port, kport)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// imageBinary returns the relay binary in idx's image for this machine.
func imageBinary(t *testing.T, idx v1.ImageIndex) []byte {
	t.Helper()
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range m.Manifests {
		if d.Platform == nil || d.Platform.Architecture != runtime.GOARCH {
			continue
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		rc := mutate.Extract(img)
		defer rc.Close()
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err != nil {
				t.Fatalf("no %s in the %s image: %v", ociimage.Binary, runtime.GOARCH, err)
			}
			if "/"+h.Name == ociimage.Binary {
				b, err := io.ReadAll(tr)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
		}
	}
	t.Fatalf("the image index has no %s image", runtime.GOARCH)
	return nil
}
