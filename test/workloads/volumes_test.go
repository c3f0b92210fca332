package workloads

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"outpost.dev/test/stack"
)

// localPV is a local PersistentVolume on the edge node at path, pre-bound
// to claim ns/claim when claim is set, in storage class class.
func localPV(name, class, path, ns, claim string) string {
	ref := ""
	if claim != "" {
		ref = fmt.Sprintf("  claimRef: {namespace: %s, name: %s}\n", ns, claim)
	}
	return fmt.Sprintf(`apiVersion: v1
kind: PersistentVolume
metadata: {name: %s}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: "%s"
  persistentVolumeReclaimPolicy: Retain
%s  local: {path: %s}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [%s]}
`, name, class, ref, path, node)
}

// TestLocalPersistentVolume: a StatefulSet whose volumeClaimTemplate uses a
// WaitForFirstConsumer StorageClass (kubernetes.io/no-provisioner) gets the
// local PersistentVolume on the edge node; what its pod writes is in that
// directory on the node, owned by the pod's fsGroup, and the pod that
// replaces it reads it. A pod whose claim is not bound waits with
// VolumeClaimPending and runs once the claim binds; a claim bound to an
// NFS PersistentVolume is refused naming the volume.
func TestLocalPersistentVolume(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 5*time.Minute)
	const ns = "wl-pv"
	newNamespace(t, ctx, ns)
	dir := nodeDir(t, ns, 0o755)
	for _, d := range []string{"data", "late"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = st.CP.Kubectl(ctx, "delete", "persistentvolume", "wl-pv-data", "wl-pv-late", "wl-pv-nfs", "--wait=false")
		_, _ = st.CP.Kubectl(ctx, "delete", "storageclass", "wl-pv-local", "--wait=false")
	})

	st.Apply(t, ctx, `apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: wl-pv-local}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
---
`+localPV("wl-pv-data", "wl-pv-local", filepath.Join(dir, "data"), "", "")+`---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: `+ns+`}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      securityContext: {runAsUser: 1000, runAsGroup: 1000, fsGroup: 2000}
      containers:
      - name: app
        image: `+image1+`
        command:
        - sh
        - -c
        - |
          n=$(( $(cat /data/count 2>/dev/null || echo 0) + 1 ))
          echo "run $n saw [$(cat /data/log 2>/dev/null)]"
          echo $n > /data/count && echo "run-$n" >> /data/log
          exec sleep 3600
        volumeMounts:
        - {name: data, mountPath: /data}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: wl-pv-local
      resources: {requests: {storage: 1Gi}}
`)
	first := waitRunning(t, ctx, ns, "db-0", 3*time.Minute)
	waitLogs(t, ctx, ns, "db-0", "run 1 saw []")
	b, err := os.ReadFile(filepath.Join(dir, "data", "count"))
	if err != nil || string(b) != "1\n" {
		t.Fatalf("the node's directory of the local PersistentVolume holds count %q (%v), want 1", b, err)
	}
	if gid := fileGroup(t, filepath.Join(dir, "data")); gid != 2000 {
		t.Errorf("the local PersistentVolume's directory has group %d, want the pod's fsGroup 2000", gid)
	}

	// The pod goes; its replacement (same claim, same volume) reads what
	// the first one wrote.
	st.Kubectl(t, ctx, "delete", "pod", "-n", ns, "db-0", "--wait=false")
	stack.WaitFor(t, ctx, 3*time.Minute, "db-0 replaced, Running and Ready", func() (bool, string) {
		p, err := getPod(ctx, ns, "db-0")
		if err != nil {
			return false, err.Error()
		}
		return p.UID != first.UID && runningReady(p), podState(p)
	})
	waitLogs(t, ctx, ns, "db-0", "run 2 saw [run-1]")

	// A claim no PersistentVolume satisfies yet (no class: bound at
	// once when one appears), used by a pod bound to the node directly:
	// it waits, as on a kubelet, then runs once the claim binds.
	st.Apply(t, ctx, `apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: late, namespace: `+ns+`}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  resources: {requests: {storage: 1Gi}}
---
`+pod(ns, "late", image1, "echo late-ok > /data/f && cat /data/f; exec sleep 3600",
		"    volumeMounts:\n    - {name: data, mountPath: /data}\n",
		"  nodeName: "+node+"\n  volumes:\n  - {name: data, persistentVolumeClaim: {claimName: late}}\n"))
	stack.WaitFor(t, ctx, time.Minute, "pod late waiting with VolumeClaimPending", func() (bool, string) {
		p, err := getPod(ctx, ns, "late")
		if err != nil {
			return false, err.Error()
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Reason == "VolumeClaimPending" {
				return strings.Contains(c.Message, "PersistentVolumeClaim late is Pending"), c.Message
			}
		}
		return false, podState(p)
	})
	if out := st.Kubectl(t, ctx, "get", "events", "-n", ns, "--field-selector", "involvedObject.name=late"); !strings.Contains(out, "VolumeClaimPending") {
		t.Errorf("no VolumeClaimPending event for pod late:\n%s", out)
	}
	st.Apply(t, ctx, localPV("wl-pv-late", "", filepath.Join(dir, "late"), ns, "late"))
	waitRunning(t, ctx, ns, "late", 2*time.Minute)
	waitLogs(t, ctx, ns, "late", "late-ok")

	// A claim bound to a PersistentVolume an edge node cannot mount. The
	// volume comes after its claim, so the PersistentVolume controller
	// binds them on the volume's event (not on its next resync).
	st.Apply(t, ctx, `apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: nfs, namespace: `+ns+`}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  resources: {requests: {storage: 1Gi}}
---
`+pod(ns, "nfs", image1, "exec sleep 3600",
		"    volumeMounts:\n    - {name: data, mountPath: /data}\n",
		"  nodeName: "+node+"\n  volumes:\n  - {name: data, persistentVolumeClaim: {claimName: nfs}}\n"))
	st.Apply(t, ctx, `apiVersion: v1
kind: PersistentVolume
metadata: {name: wl-pv-nfs}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  claimRef: {namespace: `+ns+`, name: nfs}
  nfs: {server: 192.0.2.1, path: /export}
`)
	const refusal = "spec.volumes[0].persistentVolumeClaim: PersistentVolume wl-pv-nfs is nfs is not supported on edge nodes"
	stack.WaitFor(t, ctx, 2*time.Minute, "pod nfs refused naming its volume", func() (bool, string) {
		p, err := getPod(ctx, ns, "nfs")
		if err != nil {
			return false, err.Error()
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Reason == "UnsupportedField" {
				return strings.HasPrefix(c.Message, refusal), c.Message
			}
		}
		return false, podState(p)
	})
	// Deleted, the refused pod goes, as a pod a kubelet never started
	// does: no container of it ran, so nothing waits for one to stop.
	st.Kubectl(t, ctx, "delete", "pod", "-n", ns, "nfs", "--wait=false")
	stack.WaitFor(t, ctx, time.Minute, "refused pod nfs gone once deleted", func() (bool, string) {
		p, err := getPod(ctx, ns, "nfs")
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		if err != nil {
			return false, err.Error()
		}
		return false, podState(p)
	})
}

// fileGroup is the group owning path.
func fileGroup(t *testing.T, path string) uint32 {
	t.Helper()
	var s syscall.Stat_t
	if err := syscall.Stat(path, &s); err != nil {
		t.Fatal(err)
	}
	return s.Gid
}

// waitLogs waits until kubectl logs of pod ns/name contains want.
func waitLogs(t *testing.T, ctx context.Context, ns, name, want string) {
	t.Helper()
	stack.WaitFor(t, ctx, 30*time.Second, fmt.Sprintf("%q in kubectl logs %s", want, name), func() (bool, string) {
		o, err := st.CP.Kubectl(ctx, "-n", ns, "logs", name)
		return err == nil && strings.Contains(o, want), fmt.Sprint(o, err)
	})
}
