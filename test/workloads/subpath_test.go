package workloads

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"outpost.dev/test/stack"
)

// TestSubPathEscape: a pod whose init container plants a symlink to / in
// its emptyDir and whose container mounts it back with subPath is refused,
// as a kubelet refuses it: the container waits with
// CreateContainerConfigError naming the subPath (kubectl sees it), is never
// created in containerd, and never reads the host's file. A pod with
// benign subPaths (a ConfigMap key, a subdirectory of an emptyDir) runs.
func TestSubPathEscape(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 4*time.Minute)
	const ns = "wl-subpath"
	newNamespace(t, ctx, ns)
	marker, err := os.CreateTemp("/", "outpost-wl-subpath-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(marker.Name()) })
	secret := "HOST-ONLY-" + filepath.Base(marker.Name())
	if _, err := marker.WriteString(secret); err != nil {
		t.Fatal(err)
	}
	marker.Close()
	name := filepath.Base(marker.Name())

	st.Apply(t, ctx, `apiVersion: v1
kind: ConfigMap
metadata: {name: cfg, namespace: `+ns+`}
data: {greeting: hello-subpath, other: x}
`)
	st.Apply(t, ctx, pod(ns, "escape", image1, "cat /host/"+name+"; exec sleep 3600",
		`    volumeMounts:
    - {name: data, mountPath: /host, subPath: escape}
`, `  volumes:
  - {name: data, emptyDir: {}}
  initContainers:
  - name: plant
    image: `+image1+`
    command: [sh, -c, "ln -s / /data/escape"]
    volumeMounts:
    - {name: data, mountPath: /data}
`))
	st.Apply(t, ctx, pod(ns, "benign", image1, `echo "note=$(cat /work/note) greeting=$(cat /etc/greeting)"; exec sleep 3600`,
		`    volumeMounts:
    - {name: data, mountPath: /work, subPath: real}
    - {name: cfg, mountPath: /etc/greeting, subPath: greeting}
`, `  volumes:
  - {name: data, emptyDir: {}}
  - {name: cfg, configMap: {name: cfg}}
  initContainers:
  - name: prepare
    image: `+image1+`
    command: [sh, -c, "mkdir /data/real && echo from-init > /data/real/note"]
    volumeMounts:
    - {name: data, mountPath: /data}
`))

	var msg string
	stack.WaitFor(t, ctx, 2*time.Minute, "escape's container waiting with CreateContainerConfigError", func() (bool, string) {
		p, err := getPod(ctx, ns, "escape")
		if err != nil {
			return false, err.Error()
		}
		if c := containerStatus(p); c != nil && c.State.Running != nil {
			t.Fatalf("the escaping container runs: %s", podState(p))
		}
		if c := containerStatus(p); c != nil && c.State.Waiting != nil && c.State.Waiting.Reason == "CreateContainerConfigError" {
			msg = c.State.Waiting.Message
			return true, ""
		}
		return false, podState(p)
	})
	if !strings.Contains(msg, `subPath "escape" of volume data leads out of the volume`) {
		t.Errorf("waiting message %q does not name the subPath", msg)
	}
	out := st.Kubectl(t, ctx, "-n", ns, "describe", "pod", "escape")
	if !strings.Contains(out, "CreateContainerConfigError") {
		t.Errorf("kubectl describe does not show the reason:\n%s", out)
	}

	waitRunning(t, ctx, ns, "benign", 2*time.Minute)
	stack.WaitFor(t, ctx, 30*time.Second, "the benign subPaths in kubectl logs", func() (bool, string) {
		o, err := st.CP.Kubectl(ctx, "-n", ns, "logs", "benign")
		return err == nil && strings.Contains(o, "note=from-init greeting=hello-subpath"), fmt.Sprint(o, err)
	})
	cs, err := containersOf(ctx, ns)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.Labels["dev.outpost.pod.name"] == "escape" && c.Labels["dev.outpost.container.name"] == "app" {
			t.Errorf("containerd holds the escaping container: %s", describeContainers(cs))
		}
	}
	if o, _ := st.CP.Kubectl(ctx, "-n", ns, "logs", "escape", "-c", "app"); strings.Contains(o, secret) {
		t.Errorf("the escaping container read the host's file: %q", o)
	}
}
