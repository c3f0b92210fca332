package satoken

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"outpost.dev/test/stack"
)

const (
	edgeName = "sa-edge"
	saDir    = "/var/run/secrets/kubernetes.io/serviceaccount"
	deploy   = "sa-default"
)

var (
	edge     *stack.Agent
	edgeOnce sync.Once
	edgeErr  error
	// seen collects every token read in the tests, to check no log
	// holds one.
	seenMu sync.Mutex
	seen   []string
)

// edgeAgent joins and starts the edge node the pods run on, once.
func edgeAgent(t *testing.T, ctx context.Context) *stack.Agent {
	t.Helper()
	edgeOnce.Do(func() {
		if edge, edgeErr = st.Join(ctx, relay, edgeName); edgeErr != nil {
			return
		}
		if edgeErr = edge.Start(); edgeErr != nil {
			return
		}
		edgeErr = st.WaitNodeReady(ctx, edgeName, true, 2*time.Minute)
	})
	if edgeErr != nil {
		t.Fatalf("edge agent: %v", edgeErr)
	}
	return edge
}

// defaultPod applies an ordinary Deployment (nothing edge-specific, no
// automountServiceAccountToken setting) pinned to the edge node, once, and
// returns its running pod.
func defaultPod(t *testing.T, ctx context.Context) *corev1.Pod {
	t.Helper()
	edgeAgent(t, ctx)
	kc := st.CP.Client()
	one := int32(1)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: deploy, Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": deploy}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": deploy}},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{"kubernetes.io/hostname": edgeName},
					Containers: []corev1.Container{{Name: "app", Image: st.Images[0].Ref,
						Command: []string{"sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"}}},
				},
			},
		},
	}
	if _, err := kc.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	return waitPod(t, ctx, "pod of "+deploy+" Ready", func(p *corev1.Pod) bool { return ready(p) })
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitPod waits until the Deployment's single live pod satisfies ok.
func waitPod(t *testing.T, ctx context.Context, what string, ok func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	sel := labels.SelectorFromSet(map[string]string{"app": deploy}).String()
	deadline := time.Now().Add(3 * time.Minute)
	var last string
	for {
		l, err := st.CP.Client().CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err == nil {
			for i := range l.Items {
				p := &l.Items[i]
				if p.DeletionTimestamp == nil && ok(p) {
					return p
				}
				last = fmt.Sprintf("%s: phase %s, conditions %+v, containers %+v", p.Name, p.Status.Phase, p.Status.Conditions, p.Status.ContainerStatuses)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 3m; last: %s (err %v)%s", what, last, err, agentLog())
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func agentLog() string {
	if edge == nil || edge.Proc == nil {
		return ""
	}
	return "\nagent log:\n" + edge.Proc.LogTail(30) + "\nrelay log:\n" + relay.Proc.LogTail(30)
}

func namespace() string { return "outpost-" + edgeName }

// task returns the ID of the running task of container name of pod uid,
// as containerd lists it (the agent's IDs start with the container name
// and a hash of the pod UID).
func task(ctx context.Context, uid, name string) (string, error) {
	sum := sha256.Sum256([]byte(uid))
	prefix := name + "-" + hex.EncodeToString(sum[:6]) + "-"
	out, err := st.Containerd.Ctr(ctx, "-n", namespace(), "tasks", "list")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && strings.HasPrefix(f[0], prefix) && f[2] == "RUNNING" {
			return f[0], nil
		}
	}
	return "", fmt.Errorf("no running task %s* in %s:\n%s", prefix, namespace(), out)
}

// readInContainer reads a file inside the pod's running container.
func readInContainer(ctx context.Context, uid, path string) (string, error) {
	id, err := task(ctx, uid, "app")
	if err != nil {
		return "", err
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	return st.Containerd.Ctr(ctx, "-n", namespace(), "tasks", "exec", "--exec-id", "satoken-"+hex.EncodeToString(r[:]), id, "cat", path)
}

// waitInContainer polls a file in the container until ok holds.
func waitInContainer(t *testing.T, ctx context.Context, uid, path, what string, d time.Duration, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(d)
	var last string
	var err error
	for {
		last, err = readInContainer(ctx, uid, path)
		if err == nil && ok(last) {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last read %q, err %v%s", what, d, last, err, agentLog())
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

type claims struct {
	Iat int64 `json:"iat"`
	Exp int64 `json:"exp"`
	K8s struct {
		Namespace string `json:"namespace"`
		Pod       struct {
			Name, UID string
		} `json:"pod"`
		Node struct {
			Name string `json:"name"`
		} `json:"node"`
	} `json:"kubernetes.io"`
}

// jwtClaims reads a JWT's claims without checking it (the API server does
// that: see review).
func jwtClaims(t *testing.T, tok string) claims {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token is not a JWT (%d parts)", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c claims
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// review has the API server check tok: it must be the pod's default
// service account, bound to the pod (and its node).
func review(t *testing.T, ctx context.Context, tok string, pod *corev1.Pod) {
	t.Helper()
	remember(tok)
	tr, err := st.CP.Client().AuthenticationV1().TokenReviews().Create(ctx, &authv1.TokenReview{Spec: authv1.TokenReviewSpec{Token: tok}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := tr.Status
	if !s.Authenticated || s.User.Username != "system:serviceaccount:"+pod.Namespace+":default" {
		t.Fatalf("token review: authenticated %v as %q, error %q", s.Authenticated, s.User.Username, s.Error)
	}
	x := s.User.Extra
	if got := x["authentication.kubernetes.io/pod-name"]; len(got) != 1 || got[0] != pod.Name {
		t.Errorf("token's pod-name %v, want %s", got, pod.Name)
	}
	if got := x["authentication.kubernetes.io/pod-uid"]; len(got) != 1 || got[0] != string(pod.UID) {
		t.Errorf("token's pod-uid %v, want %s", got, pod.UID)
	}
	if got := x["authentication.kubernetes.io/node-name"]; len(got) != 1 || got[0] != pod.Spec.NodeName {
		t.Errorf("token's node-name %v, want %s", got, pod.Spec.NodeName)
	}
}

func remember(tok string) {
	seenMu.Lock()
	seen = append(seen, tok)
	seenMu.Unlock()
}

// TestDefaultPodServiceAccountVolume: an ordinary Deployment runs on the
// edge node with the API server's kube-api-access volume served as a
// kubelet serves it: a token the API server accepts, bound to the pod, the
// cluster CA and the namespace; a client inside the pod can use them.
func TestDefaultPodServiceAccountVolume(t *testing.T) {
	need(t)
	ctx := ctxFor(t, 5*time.Minute)
	pod := defaultPod(t, ctx)
	if pod.Spec.AutomountServiceAccountToken != nil {
		t.Fatalf("the test Deployment must not set automountServiceAccountToken")
	}
	var vol string
	for _, v := range pod.Spec.Volumes {
		if strings.HasPrefix(v.Name, "kube-api-access-") && v.Projected != nil {
			vol = v.Name
		}
	}
	if vol == "" {
		t.Fatalf("pod has no kube-api-access volume: %+v", pod.Spec.Volumes)
	}
	uid := string(pod.UID)

	tok := waitInContainer(t, ctx, uid, saDir+"/token", "token in the container", time.Minute, func(s string) bool { return s != "" })
	review(t, ctx, tok, pod)
	c := jwtClaims(t, tok)
	if c.K8s.Pod.Name != pod.Name || c.K8s.Pod.UID != uid || c.K8s.Namespace != "default" {
		t.Errorf("claims %+v", c.K8s)
	}

	ca, err := readInContainer(ctx, uid, saDir+"/ca.crt")
	if err != nil {
		t.Fatal(err)
	}
	root, err := st.CP.Client().CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ca == "" || ca != root.Data["ca.crt"] {
		t.Errorf("ca.crt in the container (%d bytes) is not kube-root-ca.crt's (%d bytes)", len(ca), len(root.Data["ca.crt"]))
	}
	if ns, err := readInContainer(ctx, uid, saDir+"/namespace"); err != nil || ns != "default" {
		t.Errorf("namespace file %q, err %v", ns, err)
	}

	// What an in-cluster client does with the files: authenticate with
	// the token, trust the CA.
	cfg := &rest.Config{Host: st.CP.APIServerURL, BearerToken: tok, TLSClientConfig: rest.TLSClientConfig{CAData: []byte(ca)}}
	inCluster, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ssr, err := inCluster.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("a request made with the pod's token and CA: %v", err)
	}
	if u := ssr.Status.UserInfo.Username; u != "system:serviceaccount:default:default" {
		t.Errorf("the pod's token authenticates as %q", u)
	}

	// The volume on the gateway is written as the kubelet's AtomicWriter
	// writes it, read-only to the container.
	dir := filepath.Join(edge.StateDir, "pods", uid, "volumes", vol)
	if l, err := os.Readlink(filepath.Join(dir, "token")); err != nil || l != "..data/token" {
		t.Errorf("token is not a link through ..data: %q, %v", l, err)
	}
	if _, err := os.Readlink(filepath.Join(dir, "..data")); err != nil {
		t.Errorf("no ..data link: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "token")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("token file mode (defaultMode 0644): %v, %v", fi, err)
	}
}

// TestTokenRefreshedWhileConnected: the token file in the container
// changes before the token expires (the relay refreshes after
// --token-refresh-after here, at 80 % of the lifetime by default).
func TestTokenRefreshedWhileConnected(t *testing.T) {
	need(t)
	ctx := ctxFor(t, 5*time.Minute)
	pod := defaultPod(t, ctx)
	uid := string(pod.UID)
	first := waitInContainer(t, ctx, uid, saDir+"/token", "token", time.Minute, func(s string) bool { return s != "" })
	remember(first)
	second := waitInContainer(t, ctx, uid, saDir+"/token", "refreshed token", 3*refreshAfter+time.Minute,
		func(s string) bool { return s != "" && s != first })
	if exp := jwtClaims(t, first).Exp; time.Now().Unix() >= exp {
		t.Errorf("token replaced only after it expired (exp %v)", time.Unix(exp, 0))
	}
	c1, c2 := jwtClaims(t, first), jwtClaims(t, second)
	if c2.Iat <= c1.Iat {
		t.Errorf("refreshed token issued at %d, the first at %d", c2.Iat, c1.Iat)
	}
	review(t, ctx, second, pod)
}

// TestOfflineRestartFromStore: relay down, agent down, every container
// killed (a gateway reboot while the link is down, volume files gone too):
// the agent alone starts the pod again with the token from its store; when
// the relay returns, the pod's status and token catch up.
func TestOfflineRestartFromStore(t *testing.T) {
	need(t)
	ctx := ctxFor(t, 8*time.Minute)
	pod := defaultPod(t, ctx)
	uid := string(pod.UID)
	before := waitInContainer(t, ctx, uid, saDir+"/token", "token", time.Minute, func(s string) bool { return s != "" })
	remember(before)
	restarts := int32(0)
	for _, cs := range pod.Status.ContainerStatuses {
		restarts = cs.RestartCount
	}

	if err := relay.Stop(); err != nil {
		t.Fatal(err)
	}
	relayUp := false
	t.Cleanup(func() {
		if !relayUp {
			_ = relay.Start(context.Background())
		}
	})
	if err := edge.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if edge.Proc.Exited() {
			_ = edge.Start()
		}
	})
	killAll(t, ctx)
	// Nothing of the volume survives but the store.
	vols, _ := filepath.Glob(filepath.Join(edge.StateDir, "pods", uid, "volumes", "kube-api-access-*"))
	if len(vols) != 1 {
		t.Fatalf("kube-api-access volume directory: %v", vols)
	}
	if err := os.RemoveAll(vols[0]); err != nil {
		t.Fatal(err)
	}

	if err := edge.Start(); err != nil {
		t.Fatal(err)
	}
	offline := waitInContainer(t, ctx, uid, saDir+"/token", "token after the offline restart", 2*time.Minute,
		func(s string) bool { return s != "" })
	if offline != before {
		t.Errorf("offline restart: the token changed with the relay down")
	}
	if ns, err := readInContainer(ctx, uid, saDir+"/namespace"); err != nil || ns != "default" {
		t.Errorf("namespace file after the offline restart %q, err %v", ns, err)
	}
	if ca, err := readInContainer(ctx, uid, saDir+"/ca.crt"); err != nil || !strings.Contains(ca, "BEGIN CERTIFICATE") {
		t.Errorf("ca.crt after the offline restart: %d bytes, err %v", len(ca), err)
	}

	// The stored token is now due (older than --token-refresh-after):
	// once the relay is back, it is replaced.
	for time.Now().Unix() <= jwtClaims(t, before).Iat+int64(refreshAfter/time.Second)+1 {
		time.Sleep(time.Second)
	}
	if err := relay.Start(ctx); err != nil {
		t.Fatal(err)
	}
	relayUp = true
	after := waitInContainer(t, ctx, uid, saDir+"/token", "token after the relay returned", 2*time.Minute,
		func(s string) bool { return s != "" && s != before })
	review(t, ctx, after, pod)
	waitPod(t, ctx, "status caught up (Ready, restart counted)", func(p *corev1.Pod) bool {
		if p.UID != pod.UID || !ready(p) {
			return false
		}
		for _, cs := range p.Status.ContainerStatuses {
			return cs.Ready && cs.RestartCount > restarts
		}
		return false
	})
}

// killAll kills and deletes every task of the edge node's containerd
// namespace, as a power cut would leave it.
func killAll(t *testing.T, ctx context.Context) {
	t.Helper()
	out, err := st.Containerd.Ctr(ctx, "-n", namespace(), "tasks", "list", "-q")
	if err != nil {
		t.Fatal(err)
	}
	ids := strings.Fields(out)
	if len(ids) == 0 {
		t.Fatal("no tasks to kill")
	}
	for _, id := range ids {
		_, _ = st.Containerd.Ctr(ctx, "-n", namespace(), "tasks", "kill", "-a", "-s", "SIGKILL", id)
		if _, err := st.Containerd.Ctr(ctx, "-n", namespace(), "tasks", "delete", "-f", id); err != nil && !strings.Contains(err.Error(), "not found") {
			t.Fatal(err)
		}
	}
	if out, _ := st.Containerd.Ctr(ctx, "-n", namespace(), "tasks", "list", "-q"); strings.TrimSpace(out) != "" {
		t.Fatalf("tasks left: %s", out)
	}
}

// TestTokensNotLogged: no token read in these tests (or, run alone, the
// default pod's) is in the relay's or the agent's log (both run at debug
// level).
func TestTokensNotLogged(t *testing.T) {
	need(t)
	seenMu.Lock()
	toks := append([]string(nil), seen...)
	seenMu.Unlock()
	if len(toks) == 0 { // run alone: read one here
		ctx := ctxFor(t, 5*time.Minute)
		pod := defaultPod(t, ctx)
		toks = append(toks, waitInContainer(t, ctx, string(pod.UID), saDir+"/token", "token in the container", time.Minute,
			func(s string) bool { return s != "" }))
	}
	paths := []string{relay.Proc.LogPath}
	if edge != nil && edge.Proc != nil {
		paths = append(paths, edge.Proc.LogPath)
	}
	for _, pat := range []string{filepath.Join(st.Dir, "logs", "*.log"), filepath.Join(st.Dir, "controlplane", "logs", "*")} {
		more, _ := filepath.Glob(pat)
		paths = append(paths, more...)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, tok := range toks {
			// The signature part alone is secret enough.
			if sig := tok[strings.LastIndex(tok, ".")+1:]; strings.Contains(string(b), sig) {
				t.Errorf("%s holds a service-account token", p)
			}
		}
	}
}
