package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"outpost.dev/cloud/pods"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

// podPeer is a protocol-level agent connection that collects sync frames
// and keeps the link alive with heartbeats.
type podPeer struct {
	ws     *websocket.Conn
	syncs  chan wire.Sync
	cancel context.CancelFunc
	seen   []wire.Sync // every sync read by next, for "never received" checks
}

func connectPodPeer(t *testing.T, ctx context.Context, p *peer, held []wire.ObjectVersion) *podPeer {
	t.Helper()
	h := helloFor(p.name)
	h.Objects = held
	syncs := make(chan wire.Sync, 64)
	c, cancel, done := p.session(t, ctx, h, func(ctx context.Context, f wire.Frame) bool {
		if f.Type != wire.TypeSync {
			return true
		}
		var s wire.Sync
		if err := f.DecodeBody(&s); err != nil {
			return false
		}
		select {
		case syncs <- s:
			return true
		case <-ctx.Done():
			return false
		}
	})
	go func() { <-done; close(syncs) }()
	pp := &podPeer{ws: c, syncs: syncs, cancel: cancel}
	t.Cleanup(pp.close)
	return pp
}

func (pp *podPeer) close() {
	pp.cancel()
	pp.ws.CloseNow()
}

// next returns the next sync frame.
func (pp *podPeer) next(t *testing.T, timeout time.Duration) wire.Sync {
	t.Helper()
	select {
	case s, ok := <-pp.syncs:
		if !ok {
			t.Fatal("connection closed while waiting for a sync frame")
		}
		pp.seen = append(pp.seen, s)
		return s
	case <-time.After(timeout):
		t.Fatalf("no sync frame within %s", timeout)
	}
	return wire.Sync{}
}

// initial reads the initial sync up to its Complete frame and merges it.
func (pp *podPeer) initial(t *testing.T) wire.Sync {
	t.Helper()
	var all wire.Sync
	for {
		s := pp.next(t, 30*time.Second)
		if !s.Initial {
			t.Fatalf("frame without Initial before Complete: %v", describe(s))
		}
		all.Upserts = append(all.Upserts, s.Upserts...)
		all.Deletes = append(all.Deletes, s.Deletes...)
		if s.Complete {
			all.Initial, all.Complete = true, true
			return all
		}
	}
}

// until reads delta frames until one satisfies ok.
func (pp *podPeer) until(t *testing.T, what string, ok func(wire.Sync) bool) wire.Sync {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("no sync frame with %s", what)
		}
		s := pp.next(t, left)
		if s.Initial {
			t.Fatalf("initial frame after the initial sync: %v", describe(s))
		}
		if ok(s) {
			return s
		}
	}
}

// describe lists a sync as "+kind/name@version" and "-kind/uid", sorted.
func describe(s wire.Sync) []string {
	var out []string
	for _, u := range s.Upserts {
		d := ""
		if u.Pod != nil && u.Pod.Deleting {
			d = " deleting"
		}
		if u.Kind == wire.KindToken { // a service-account token; its version is a time
			out = append(out, "+token/"+u.Name)
			continue
		}
		out = append(out, fmt.Sprintf("+%s/%s@%s%s", u.Kind, u.Name, u.Version, d))
	}
	for _, d := range s.Deletes {
		out = append(out, fmt.Sprintf("-%s/%s", d.Kind, d.UID))
	}
	sort.Strings(out)
	return out
}

func upsert(s wire.Sync, kind wire.Kind, name string) *wire.Object {
	for i := range s.Upserts {
		if s.Upserts[i].Kind == kind && s.Upserts[i].Name == name {
			return &s.Upserts[i]
		}
	}
	return nil
}

func hasDelete(s wire.Sync, kind wire.Kind, uid types.UID) bool {
	for _, d := range s.Deletes {
		if d.Kind == kind && d.UID == string(uid) {
			return true
		}
	}
	return false
}

func version(o metav1.Object) string { return o.GetResourceVersion() }

// TestPodsReachTheirNode drives the relay's downstream pod sync with a
// protocol-level agent against the real API server: what a node gets at
// connect, as deltas, on reconnect with versions, and what it never gets.
func TestPodsReachTheirNode(t *testing.T) {
	needStack(t)
	ctx := ctxFor(t, 3*time.Minute)
	const ns = "default"
	node := "pods-edge"
	kc := st.CP.Client()
	peer := joinPeer(t, ctx, node)

	mkPod := func(name, onNode string, mod func(*corev1.Pod)) *corev1.Pod {
		t.Helper()
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.PodSpec{NodeName: onNode, Containers: []corev1.Container{{
				Name: "app", Image: "registry.local/busybox:test", Command: []string{"sleep", "3600"},
				Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
			}}},
		}
		// Tolerating the offline taints forever from the start leaves the
		// relay's cloud/tolerations nothing to patch: versions stay as created.
		for _, key := range []string{corev1.TaintNodeNotReady, corev1.TaintNodeUnreachable} {
			p.Spec.Tolerations = append(p.Spec.Tolerations, corev1.Toleration{Key: key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute})
		}
		if mod != nil {
			mod(p)
		}
		got, err := kc.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = kc.CoreV1().Pods(ns).Delete(context.Background(), name, *metav1.NewDeleteOptions(0))
		})
		return got
	}
	cm, err := kc.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "pods-e2e-cfg"}, Data: map[string]string{"greeting": "hello"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec, err := kc.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "pods-e2e-sec"}, Data: map[string][]byte{"pw": []byte("s3cret")}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unrelated, err := kc.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "pods-e2e-unrelated"}, Data: map[string][]byte{"k": []byte("v")}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		bg := context.Background()
		_ = kc.CoreV1().ConfigMaps(ns).Delete(bg, cm.Name, metav1.DeleteOptions{})
		_ = kc.CoreV1().Secrets(ns).Delete(bg, sec.Name, metav1.DeleteOptions{})
		_ = kc.CoreV1().Secrets(ns).Delete(bg, unrelated.Name, metav1.DeleteOptions{})
	})

	web := mkPod("pods-e2e-web", node, func(p *corev1.Pod) {
		p.Spec.Volumes = []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: cm.Name}}}}}
		c := &p.Spec.Containers[0]
		c.VolumeMounts = []corev1.VolumeMount{{Name: "cfg", MountPath: "/etc/cfg"}}
		c.Env = []corev1.EnvVar{{Name: "PW", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: sec.Name}, Key: "pw"}}}}
	})
	plain := mkPod("pods-e2e-plain", node, nil)
	doomed := mkPod("pods-e2e-doomed", node, nil)
	elsewhere := mkPod("pods-e2e-elsewhere", "pods-elsewhere", func(p *corev1.Pod) {
		p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "K", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: unrelated.Name}, Key: "k"}}}}
	})

	// Pods as the API server returns them, with every default it sets
	// (kube-api-access volume, tolerations, dnsPolicy...), translate.
	for _, p := range []*corev1.Pod{web, plain, elsewhere} {
		if _, err := pods.Translate(p, nil); err != nil {
			t.Fatalf("defaulted pod %s: %v", p.Name, err)
		}
	}
	rootCA, err := kc.CoreV1().ConfigMaps(ns).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("kube-root-ca.crt, referenced by every pod's kube-api-access volume: %v", err)
	}

	// (a) First connection: exactly the node's pods and what they reference.
	start := time.Now()
	pp := connectPodPeer(t, ctx, peer, nil)
	s := pp.initial(t)
	t.Logf("initial sync after %s: %v", time.Since(start).Round(time.Millisecond), describe(s))
	want := []string{
		"+pod/" + web.Name + "@" + version(web), "+pod/" + plain.Name + "@" + version(plain), "+pod/" + doomed.Name + "@" + version(doomed),
		"+configmap/" + cm.Name + "@" + version(cm), "+secret/" + sec.Name + "@" + version(sec),
		"+configmap/kube-root-ca.crt@" + version(rootCA),
		// The pods' service-account tokens (test/satoken tests them).
		"+token/" + web.Name, "+token/" + plain.Name, "+token/" + doomed.Name,
	}
	sort.Strings(want)
	if got := describe(s); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("initial sync\n got %v\nwant %v", got, want)
	}
	wp := upsert(s, wire.KindPod, web.Name)
	if wp.UID != string(web.UID) || wp.Pod.Containers[0].Env[0].From.Secret.Name != sec.Name || wp.Pod.Volumes[0].ConfigMap.Name != cm.Name {
		t.Errorf("web pod translated as %+v", wp.Pod)
	}
	if got := upsert(s, wire.KindSecret, sec.Name).Secret.Data["pw"]; string(got) != "s3cret" {
		t.Errorf("secret data %q", got)
	}

	// (b) Deltas: a ConfigMap update; a graceful delete (Deleting), then
	// the final delete.
	cm.Data["greeting"] = "hi"
	if cm, err = kc.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	d := pp.until(t, "the ConfigMap update", func(s wire.Sync) bool { return upsert(s, wire.KindConfigMap, cm.Name) != nil })
	if o := upsert(d, wire.KindConfigMap, cm.Name); o.Version != version(cm) || o.ConfigMap.Data["greeting"] != "hi" {
		t.Errorf("configmap delta %+v", o)
	}
	if err := kc.CoreV1().Pods(ns).Delete(ctx, plain.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	d = pp.until(t, "the pod marked deleting", func(s wire.Sync) bool { return upsert(s, wire.KindPod, plain.Name) != nil })
	if o := upsert(d, wire.KindPod, plain.Name); !o.Pod.Deleting || o.Pod.DeletionGracePeriodSeconds != 30 {
		t.Errorf("deleting pod: deleting %v grace %d", o.Pod.Deleting, o.Pod.DeletionGracePeriodSeconds)
	}
	// What the agent's status path will do once its containers stopped.
	if err := kc.CoreV1().Pods(ns).Delete(ctx, plain.Name, *metav1.NewDeleteOptions(0)); err != nil {
		t.Fatal(err)
	}
	pp.until(t, "the pod's delete", func(s wire.Sync) bool { return hasDelete(s, wire.KindPod, plain.UID) })

	// (c) Offline: web changes, doomed goes. The reconnect's hello lists
	// what the agent holds; the answer is exactly the difference.
	pp.close()
	held := []wire.ObjectVersion{
		{Kind: wire.KindPod, UID: string(web.UID), Version: version(web)},
		{Kind: wire.KindPod, UID: string(doomed.UID), Version: version(doomed)},
		{Kind: wire.KindConfigMap, UID: string(cm.UID), Version: version(cm)},
		{Kind: wire.KindConfigMap, UID: string(rootCA.UID), Version: version(rootCA)},
		{Kind: wire.KindSecret, UID: string(sec.UID), Version: version(sec)},
	}
	web.Annotations = map[string]string{"outpost.dev/e2e": "changed while offline"}
	if web, err = kc.CoreV1().Pods(ns).Update(ctx, web, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := kc.CoreV1().Pods(ns).Delete(ctx, doomed.Name, *metav1.NewDeleteOptions(0)); err != nil {
		t.Fatal(err)
	}
	pp = connectPodPeer(t, ctx, peer, held)
	s = pp.initial(t)
	// web's token too: the hello did not list it.
	want = []string{"+pod/" + web.Name + "@" + version(web), "+token/" + web.Name, "-pod/" + string(doomed.UID)}
	sort.Strings(want)
	if got := describe(s); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("resync\n got %v\nwant %v", got, want)
	}

	// (d) A pod the agent cannot run: its status says why, it never reaches
	// the agent, and other pods still do.
	refused := mkPod("pods-e2e-nfs", node, func(p *corev1.Pod) {
		p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
			NFS: &corev1.NFSVolumeSource{Server: "192.0.2.1", Path: "/exports/data"}}}}
	})
	var cond corev1.PodCondition
	wait.For(t, 20*time.Second, "an UnsupportedField condition on the NFS pod", func() bool {
		p, err := kc.CoreV1().Pods(ns).Get(ctx, refused.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Reason == pods.ReasonUnsupported {
				cond = c
				if p.Status.Phase != corev1.PodPending {
					t.Errorf("phase %s, want Pending", p.Status.Phase)
				}
			}
		}
		return cond.Reason != ""
	})
	if cond.Status != corev1.ConditionFalse || !strings.HasPrefix(cond.Message, "spec.volumes[0].nfs is not supported on edge nodes") {
		t.Errorf("condition %+v", cond)
	}
	// The event is recorded apart from the status, soon after it.
	var evs *corev1.EventList
	wait.State(t, ctx, 20*time.Second, "an UnsupportedField event", func() (bool, string) {
		var err error
		if evs, err = kc.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + refused.Name}); err != nil {
			return false, err.Error()
		}
		n := countReason(evs.Items, pods.ReasonUnsupported)
		return n > 0, fmt.Sprintf("%d events", n)
	})
	if n := countReason(evs.Items, pods.ReasonUnsupported); n != 1 {
		t.Errorf("%d UnsupportedField events, want 1", n)
	}
	after := mkPod("pods-e2e-after", node, nil)
	pp.until(t, "a pod created after the refused one", func(s wire.Sync) bool { return upsert(s, wire.KindPod, after.Name) != nil })

	// Written once: the condition's own update does not cause another.
	// The relay handles a node's pod events in order, and the refused
	// pod's update came before the later pod's creation, which has reached
	// the agent: a second event would have been decided by now. (A repeat
	// of an event raises its count rather than adding one.)
	evs, _ = kc.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + refused.Name})
	if n := countReason(evs.Items, pods.ReasonUnsupported); n != 1 {
		t.Errorf("%d UnsupportedField events once a later pod reached the node, want 1", n)
	}
	for _, s := range pp.seen {
		for _, o := range s.Upserts {
			switch {
			case o.Name == refused.Name, o.Name == elsewhere.Name, o.Name == unrelated.Name:
				t.Errorf("node received %s %s", o.Kind, o.Name)
			}
		}
	}
	if _, err := kc.CoreV1().Pods(ns).Get(ctx, plain.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("deleted pod still there: %v", err)
	}
}

func countReason(evs []corev1.Event, reason string) int {
	n := 0
	for _, e := range evs {
		if e.Reason == reason {
			n += max(int(e.Count), 1)
		}
	}
	return n
}
