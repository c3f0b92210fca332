package pods

import (
	"context"
	"log/slog"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"outpost.dev/cloud/nodes"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

func edgeNode(name string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{nodes.EdgeRoleLabel: ""}}}
}

func testPod(name, node, rv string, mod func(*corev1.Pod)) *corev1.Pod {
	p := defaulted()
	p.Name, p.UID, p.ResourceVersion, p.Spec.NodeName = name, types.UID("uid-"+name), rv, node
	if mod != nil {
		mod(p)
	}
	return p
}

func withRefs(cm, secret string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: cm}}}})
		p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "PW", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: "pw"}}}}
	}
}

type recorder struct{ frames chan wire.Sync }

func (r *recorder) send(b []byte) bool {
	f, err := wire.Decode(b)
	if err != nil {
		panic(err)
	}
	var s wire.Sync
	if err := f.DecodeBody(&s); err != nil {
		panic(err)
	}
	r.frames <- s
	return true
}

func (r *recorder) next(t *testing.T) wire.Sync {
	t.Helper()
	select {
	case s := <-r.frames:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no sync frame within 10s")
	}
	return wire.Sync{}
}

func (r *recorder) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case s := <-r.frames:
		t.Fatalf("unexpected frame %s", summary(s))
	case <-time.After(d):
	}
}

func summary(s wire.Sync) []string {
	var out []string
	for _, u := range s.Upserts {
		d := ""
		if u.Pod != nil && u.Pod.Deleting {
			d = "(deleting)"
		}
		if u.Kind == wire.KindToken { // versions are times: not compared
			out = append(out, "+token/"+u.Name)
			continue
		}
		out = append(out, "+"+u.Kind.String()+"/"+u.Name+"@"+u.Version+d)
	}
	for _, d := range s.Deletes {
		out = append(out, "-"+d.Kind.String()+"/"+d.UID)
	}
	sort.Strings(out)
	return out
}

func equal(a []string, b ...string) bool {
	sort.Strings(b)
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSessionSync(t *testing.T) {
	ctx := context.Background()
	before := runtime.NumGoroutine()

	client, _ := withTokens(fake.NewClientset(
		edgeNode("edge-1"),
		testPod("web", "edge-1", "10", withRefs("cfg", "sec")),
		testPod("kept", "edge-1", "11", nil),
		// Finished before the agent ever had it: nothing to keep, not sent.
		testPod("old-job", "edge-1", "14", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
		testPod("other", "edge-2", "12", withRefs("cfg", "other-sec")),
		testPod("pvc", "edge-1", "13", func(p *corev1.Pod) {
			p.Spec.Volumes = append([]corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				NFS: &corev1.NFSVolumeSource{Server: "nas", Path: "/data"}}}}, p.Spec.Volumes...)
		}),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "default", UID: "uid-cfg", ResourceVersion: "20"}, Data: map[string]string{"a": "1"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sec", Namespace: "default", UID: "uid-sec", ResourceVersion: "21"}, Data: map[string][]byte{"pw": []byte("x")}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "unrelated", Namespace: "default", UID: "uid-unrelated", ResourceVersion: "22"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "other-sec", Namespace: "default", UID: "uid-other-sec", ResourceVersion: "23"}},
	))
	rec := &recorder{frames: make(chan wire.Sync, 16)}
	s := Start(ctx, Config{
		Client: client, Node: "edge-1", Send: rec.send,
		Log: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		Held: []wire.ObjectVersion{
			{Kind: wire.KindPod, UID: "uid-kept", Version: "11"}, // in step
			{Kind: wire.KindPod, UID: "uid-gone", Version: "3"},  // deleted while offline
		},
	})

	first := rec.next(t)
	if !first.Initial || !first.Complete {
		t.Fatalf("first frame: initial %v complete %v", first.Initial, first.Complete)
	}
	if got := summary(first); !equal(got, "+pod/web@10", "+token/web", "+token/kept", "+configmap/cfg@20", "+secret/sec@21", "-pod/uid-gone") {
		t.Fatalf("initial sync %v", got)
	}
	t.Logf("goroutines for one session with 1 pod watch and 2 reference watches (fake client): %d", runtime.NumGoroutine()-before)

	// The refused pod's status says why, once.
	waitFor(t, func() bool {
		p, _ := client.CoreV1().Pods("default").Get(ctx, "pvc", metav1.GetOptions{})
		return hasCondition(p, ReasonUnsupported, "spec.volumes[0].nfs is not supported on edge nodes: "+
			"edge nodes support emptyDir, hostPath, configMap, secret, downwardAPI, projected, persistentVolumeClaim and ephemeral volumes (local and hostPath PersistentVolumes)")
	})
	waitFor(t, func() bool {
		evs, _ := client.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
		return len(evs.Items) == 1 && evs.Items[0].Reason == ReasonUnsupported && evs.Items[0].InvolvedObject.Name == "pvc"
	})

	// A ConfigMap update is a delta.
	cm, _ := client.CoreV1().ConfigMaps("default").Get(ctx, "cfg", metav1.GetOptions{})
	cm.Data["a"], cm.ResourceVersion = "2", "30"
	if _, err := client.CoreV1().ConfigMaps("default").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	d := rec.next(t)
	if d.Initial || !equal(summary(d), "+configmap/cfg@30") || d.Upserts[0].ConfigMap.Data["a"] != "2" {
		t.Fatalf("delta %v initial %v", summary(d), d.Initial)
	}

	// kubectl debug adds an ephemeral container to a running pod: a delta
	// carrying it, the pod's containers as they were.
	web, _ := client.CoreV1().Pods("default").Get(ctx, "web", metav1.GetOptions{})
	web.Spec.EphemeralContainers = []corev1.EphemeralContainer{{TargetContainerName: "app",
		EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger-1", Image: "busybox", Stdin: true, TTY: true}}}
	web.ResourceVersion = "31"
	if _, err := client.CoreV1().Pods("default").Update(ctx, web, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if d := rec.next(t); !equal(summary(d), "+pod/web@31") || len(d.Upserts[0].Pod.EphemeralContainers) != 1 ||
		d.Upserts[0].Pod.EphemeralContainers[0].Target != "app" || d.Upserts[0].Pod.Containers[0].Name != "app" {
		t.Fatalf("delta %v: %+v", summary(d), d.Upserts)
	}

	// A pod the agent holds finishes: sent Finished (the agent keeps its
	// containers and logs), without its token.
	kept, _ := client.CoreV1().Pods("default").Get(ctx, "kept", metav1.GetOptions{})
	kept.Status.Phase, kept.ResourceVersion = corev1.PodSucceeded, "32"
	if _, err := client.CoreV1().Pods("default").UpdateStatus(ctx, kept, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if d := rec.next(t); !equal(summary(d), "+pod/kept@32", "-token/uid-kept") || d.Upserts[0].Pod.Finished != "Succeeded" {
		t.Fatalf("delta %v", summary(d))
	}

	// Deleting: sent with Deleting; gone: deleted with its references.
	p, _ := client.CoreV1().Pods("default").Get(ctx, "web", metav1.GetOptions{})
	now := metav1.Now()
	p.DeletionTimestamp, p.DeletionGracePeriodSeconds, p.ResourceVersion = &now, ptr(int64(30)), "33"
	if _, err := client.CoreV1().Pods("default").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if d := rec.next(t); !equal(summary(d), "+pod/web@33(deleting)") || d.Upserts[0].Pod.DeletionGracePeriodSeconds != 30 {
		t.Fatalf("delta %v", summary(d))
	}
	if err := client.CoreV1().Pods("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if d := rec.next(t); !equal(summary(d), "-pod/uid-web", "-token/uid-web", "-configmap/uid-cfg", "-secret/uid-sec") {
		t.Fatalf("delta %v", summary(d))
	}
	rec.quiet(t, 300*time.Millisecond)

	s.Stop()
	waitFor(t, func() bool { return runtime.NumGoroutine() <= before })
}

// TestSessionClaimPending: a pod whose claim is not bound waits with a
// VolumeClaimPending condition and event; once the claim is bound to a
// local PersistentVolume the pod is sent with its directory.
func TestSessionClaimPending(t *testing.T) {
	ctx := context.Background()
	claim := boundClaim("data-0", "")
	claim.Status.Phase = corev1.ClaimPending
	client, _ := withTokens(fake.NewClientset(
		edgeNode("edge-1"),
		testPod("db", "edge-1", "10", func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "data", VolumeSource: pvcSource("data-0", false)})
		}),
		claim,
	))
	rec := &recorder{frames: make(chan wire.Sync, 16)}
	s := Start(ctx, Config{Client: client, Node: "edge-1", Send: rec.send, Log: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	defer s.Stop()
	if got := summary(rec.next(t)); len(got) != 0 {
		t.Fatalf("initial sync %v, want nothing (the pod waits)", got)
	}
	waitFor(t, func() bool {
		p, _ := client.CoreV1().Pods("default").Get(ctx, "db", metav1.GetOptions{})
		return hasCondition(p, ReasonClaimPending, "spec.volumes[1].persistentVolumeClaim: waiting for its PersistentVolumeClaim: "+
			"PersistentVolumeClaim data-0 is Pending, not bound to a PersistentVolume")
	})
	waitFor(t, func() bool {
		evs, _ := client.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
		return len(evs.Items) == 1 && evs.Items[0].Reason == ReasonClaimPending
	})

	// The claim binds (as the PV controller would): the next try sends it.
	if _, err := client.CoreV1().PersistentVolumes().Create(ctx, volumeFor("pv-1", "data-0",
		corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: "/srv/db"}}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().PersistentVolumeClaims("default").Update(ctx, boundClaim("data-0", "pv-1"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f := rec.next(t)
	if got := summary(f); !equal(got, "+pod/db@10", "+token/db") {
		t.Fatalf("after the bind: %v", got)
	}
	for _, u := range f.Upserts {
		if u.Pod == nil {
			continue
		}
		v := u.Pod.Volumes[len(u.Pod.Volumes)-1]
		if v.HostPath == nil || v.HostPath.Path != "/srv/db" || v.HostPath.Type != "Directory" || !v.FSGroupOwned {
			t.Errorf("volume data = %+v", v)
		}
	}
}

// TestSessionClaimBoundToNFS: a waiting pod whose claim then binds to a
// PersistentVolume an edge node cannot mount is refused naming it; the
// pod's condition changes though the pod did not.
func TestSessionClaimBoundToNFS(t *testing.T) {
	ctx := context.Background()
	claim := boundClaim("data-0", "")
	claim.Status.Phase = corev1.ClaimPending
	client, _ := withTokens(fake.NewClientset(
		edgeNode("edge-1"),
		testPod("db", "edge-1", "10", func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "data", VolumeSource: pvcSource("data-0", false)})
		}),
		claim,
	))
	rec := &recorder{frames: make(chan wire.Sync, 16)}
	s := Start(ctx, Config{Client: client, Node: "edge-1", Send: rec.send})
	defer s.Stop()
	waitFor(t, func() bool {
		p, _ := client.CoreV1().Pods("default").Get(ctx, "db", metav1.GetOptions{})
		return hasCondition(p, ReasonClaimPending, "spec.volumes[1].persistentVolumeClaim: waiting for its PersistentVolumeClaim: "+
			"PersistentVolumeClaim data-0 is Pending, not bound to a PersistentVolume")
	})
	if _, err := client.CoreV1().PersistentVolumes().Create(ctx, volumeFor("pv-1", "data-0",
		corev1.PersistentVolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nas", Path: "/"}}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().PersistentVolumeClaims("default").Update(ctx, boundClaim("data-0", "pv-1"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		p, _ := client.CoreV1().Pods("default").Get(ctx, "db", metav1.GetOptions{})
		return hasCondition(p, ReasonUnsupported, "spec.volumes[1].persistentVolumeClaim: PersistentVolume pv-1 is nfs is not supported on edge nodes: "+
			"edge nodes mount local and hostPath PersistentVolumes")
	})

	// Being deleted, the refused pod, which the agent never held, is
	// deleted at once, as a kubelet finishes the delete of a pod it
	// never started.
	p, err := client.CoreV1().Pods("default").Get(ctx, "db", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	p.DeletionTimestamp = &now
	if _, err := client.CoreV1().Pods("default").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		_, err := client.CoreV1().Pods("default").Get(ctx, "db", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
}

// TestSessionClaimUnreadableKeepsHeldPod: a pod the agent already runs
// (from its hello) whose claim cannot be read on this connection is kept
// as the agent holds it, not deleted, as a kubelet keeps a mounted volume,
// until the claim can be read.
func TestSessionClaimUnreadableKeepsHeldPod(t *testing.T) {
	client, _ := withTokens(fake.NewClientset(
		edgeNode("edge-1"),
		testPod("db", "edge-1", "10", func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "data", VolumeSource: pvcSource("gone", false)})
		}),
	))
	rec := &recorder{frames: make(chan wire.Sync, 16)}
	s := Start(context.Background(), Config{Client: client, Node: "edge-1", Send: rec.send,
		Held: []wire.ObjectVersion{{Kind: wire.KindPod, UID: "uid-db", Version: "9"}}})
	defer s.Stop()
	if f := rec.next(t); !f.Initial || len(f.Upserts)+len(f.Deletes) != 0 {
		t.Fatalf("initial sync %v, want nothing (the held pod kept)", summary(f))
	}
	// Once the claim can be read, the next frame brings the pod's new
	// version (a delete sent meanwhile would come first).
	ctx := context.Background()
	if _, err := client.CoreV1().PersistentVolumes().Create(ctx, volumeFor("pv-1", "gone",
		corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: "/srv/db"}}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().PersistentVolumeClaims("default").Create(ctx, boundClaim("gone", "pv-1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if f := rec.next(t); len(f.Deletes) > 0 || !slices.Contains(summary(f), "+pod/db@10") {
		t.Fatalf("after the claim appeared: %v", summary(f))
	}
}

func TestSessionIgnoresNonEdgeNode(t *testing.T) {
	client := fake.NewClientset(
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker"}},
		testPod("web", "worker", "1", nil),
	)
	rec := &recorder{frames: make(chan wire.Sync, 4)}
	s := Start(context.Background(), Config{Client: client, Node: "worker", Send: rec.send})
	rec.quiet(t, 500*time.Millisecond)
	s.Stop()
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	wait.For(t, 10*time.Second, "the condition", cond)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(b))
	return len(b), nil
}

// TestSessionTooLarge: a pod whose ConfigMap cannot fit in a frame is not
// sent; its status says why; other pods are.
func TestSessionTooLarge(t *testing.T) {
	ctx := context.Background()
	big := strings.Repeat("x", wire.MaxFrameSize)
	client, _ := withTokens(fake.NewClientset(
		edgeNode("edge-1"),
		testPod("big", "edge-1", "1", withRefs("huge", "sec")),
		testPod("small", "edge-1", "2", nil),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "huge", Namespace: "default", UID: "uid-huge", ResourceVersion: "3"}, Data: map[string]string{"a": big}},
	))
	rec := &recorder{frames: make(chan wire.Sync, 4)}
	s := Start(ctx, Config{Client: client, Node: "edge-1", Send: rec.send})
	defer s.Stop()
	if got := summary(rec.next(t)); !equal(got, "+pod/small@2", "+token/small") {
		t.Fatalf("initial sync %v", got)
	}
	waitFor(t, func() bool {
		p, _ := client.CoreV1().Pods("default").Get(ctx, "big", metav1.GetOptions{})
		for _, c := range p.Status.Conditions {
			if c.Reason == ReasonTooLarge && strings.Contains(c.Message, "configmap default/huge") {
				return true
			}
		}
		return false
	})
}

// TestSessionFinishedPods: a pod that finishes stays with the agent
// (marked Finished, its tokens and references dropped) until it is
// deleted; a finished pod the agent never held is not sent.
func TestSessionFinishedPods(t *testing.T) {
	ctx := context.Background()
	done := func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }
	client, _ := withTokens(fake.NewClientset(
		edgeNode("edge-1"),
		testPod("job", "edge-1", "1", withRefs("cfg", "sec")),
		testPod("old", "edge-1", "2", done),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "default", UID: "uid-cfg", ResourceVersion: "3"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sec", Namespace: "default", UID: "uid-sec", ResourceVersion: "4"}},
	))
	rec := &recorder{frames: make(chan wire.Sync, 8)}
	s := Start(ctx, Config{Client: client, Node: "edge-1", Send: rec.send})
	defer s.Stop()
	if got := summary(rec.next(t)); !equal(got, "+pod/job@1", "+token/job", "+configmap/cfg@3", "+secret/sec@4") {
		t.Fatalf("initial sync %v", got)
	}
	p, _ := client.CoreV1().Pods("default").Get(ctx, "job", metav1.GetOptions{})
	p.Status.Phase, p.ResourceVersion = corev1.PodSucceeded, "5"
	if _, err := client.CoreV1().Pods("default").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	d := rec.next(t)
	if !equal(summary(d), "+pod/job@5", "-token/uid-job", "-configmap/uid-cfg", "-secret/uid-sec") {
		t.Fatalf("delta %v", summary(d))
	}
	for _, u := range d.Upserts {
		if u.Kind == wire.KindPod && u.Pod.Finished != "Succeeded" {
			t.Errorf("finished pod sent with Finished %q", u.Pod.Finished)
		}
	}
	if err := client.CoreV1().Pods("default").Delete(ctx, "job", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if d := rec.next(t); !equal(summary(d), "-pod/uid-job") {
		t.Fatalf("delta %v", summary(d))
	}
}

// edgeCache is a cache of edge Nodes for Config.Nodes.
type edgeCache struct {
	mu     sync.Mutex
	synced bool
	edge   map[string]bool
	asked  []string
}

func (c *edgeCache) EdgeNode(name string) (edge, synced bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.asked = append(c.asked, name)
	return c.edge[name], c.synced
}

func (c *edgeCache) add(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.edge[name] = true
}

// nodeReads counts the session's reads of Nodes from the API server.
func nodeReads(client *fake.Clientset) int {
	n := 0
	for _, a := range client.Actions() {
		if a.GetResource().Resource == "nodes" {
			n++
		}
	}
	return n
}

// With Config.Nodes (the relay's edge Node cache), the session checks its
// Node there, not with a read of the API server: a reconnecting node's
// Node is in the cache.
func TestSessionNodeFromCache(t *testing.T) {
	ctx := context.Background()
	client, _ := withTokens(fake.NewClientset(testPod("web", "edge-1", "4", nil))) // no Node in the API
	cache := &edgeCache{synced: true, edge: map[string]bool{"edge-1": true}}
	rec := &recorder{frames: make(chan wire.Sync, 16)}
	s := Start(ctx, Config{Client: client, Node: "edge-1", Send: rec.send, Nodes: cache})
	defer s.Stop()
	if got := summary(rec.next(t)); !slices.Contains(got, "+pod/web@4") {
		t.Fatalf("initial sync %v, want pod web", got)
	}
	cache.mu.Lock()
	asked := slices.Clone(cache.asked)
	cache.mu.Unlock()
	if !slices.Equal(asked, []string{"edge-1"}) {
		t.Errorf("the cache was asked for %v, want edge-1 once", asked)
	}
	if n := nodeReads(client); n != 0 {
		t.Errorf("API server asked for nodes %d times", n)
	}
}

// A session whose Node the synced cache does not hold yet waits for
// NodeChanged without reading the API server (a fleet connecting faster
// than its Nodes are written must not poll for them), then syncs.
func TestSessionWaitsForNodeInCache(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		client, _ := withTokens(fake.NewClientset(testPod("web", "edge-1", "4", nil), edgeNode("edge-1")))
		cache := &edgeCache{synced: true, edge: map[string]bool{}}
		rec := &recorder{frames: make(chan wire.Sync, 16)}
		s := Start(ctx, Config{Client: client, Node: "edge-1", Send: rec.send, Nodes: cache, Syncer: NewSyncer(2)})
		defer s.Stop()
		time.Sleep(2 * nodeWaitCached) // the session looks in the cache again meanwhile
		synctest.Wait()
		if n := nodeReads(client); n != 0 {
			t.Fatalf("API server asked for nodes %d times while the cache did not hold the Node", n)
		}
		if len(rec.frames) != 0 {
			t.Fatal("pods sent before the Node was an edge node")
		}
		cache.add("edge-1")
		s.NodeChanged()
		if got := summary(rec.next(t)); !slices.Contains(got, "+pod/web@4") {
			t.Fatalf("initial sync %v, want pod web", got)
		}
		if n := nodeReads(client); n != 0 {
			t.Errorf("API server asked for nodes %d times", n)
		}
	})
}

// Until the cache has listed, the session reads its Node from the API
// server.
func TestSessionReadsNodeBeforeCacheSynced(t *testing.T) {
	ctx := context.Background()
	client, _ := withTokens(fake.NewClientset(testPod("web", "edge-1", "4", nil), edgeNode("edge-1")))
	cache := &edgeCache{edge: map[string]bool{}}
	rec := &recorder{frames: make(chan wire.Sync, 16)}
	s := Start(ctx, Config{Client: client, Node: "edge-1", Send: rec.send, Nodes: cache})
	defer s.Stop()
	if got := summary(rec.next(t)); !slices.Contains(got, "+pod/web@4") {
		t.Fatalf("initial sync %v, want pod web", got)
	}
	if n := nodeReads(client); n != 1 {
		t.Errorf("API server asked for nodes %d times, want once", n)
	}
}
