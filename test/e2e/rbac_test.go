package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"outpost.dev/cloud/asnode"
	"outpost.dev/cloud/nodegrant"
	"outpost.dev/cloud/nodes"
	"outpost.dev/cloud/tolerations"
	"outpost.dev/test/stack"
	"outpost.dev/wire"
)

// These tests hold the relay's identity, with the RBAC and admission
// policies of cloud/deploy that the stack applied, against the real API
// server: on its own it can read no Secret and mint no token; what it does
// for a node it does as that node, bounded by the Node authorizer and
// NodeRestriction; and its two writes as itself (a new edge Node, pod
// tolerations) can do nothing else.

// relayAs returns a client with the relay's credentials, impersonating
// user (with groups) unless user is "".
func relayAs(t *testing.T, user string, groups ...string) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", st.RelayKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Impersonate.UserName, cfg.Impersonate.Groups = user, groups
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// forbidden fails t unless err is the API server's 403.
func forbidden(t *testing.T, what string, err error) {
	t.Helper()
	if !apierrors.IsForbidden(err) {
		t.Errorf("%s: want Forbidden, got %v", what, err)
	}
}

// rbacFixture is two nodes, each with a pod that uses a Secret and a
// service account of its own, plus one Secret no pod uses. The nodes have
// no agent and no edge role, so no relay controller touches them; the
// Node authorizer does not look at labels.
type rbacFixture struct {
	ns            string
	nodeA, nodeB  string
	podA, podB    *corev1.Pod
	secretA, lone string
	secretB       string
	saA, saB      string
}

func newRBACFixture(t *testing.T, ctx context.Context) *rbacFixture {
	t.Helper()
	admin := st.CP.Client()
	f := &rbacFixture{ns: "rbac-" + suffix(t),
		nodeA: "rbac-a-" + suffix(t), nodeB: "rbac-b-" + suffix(t),
		secretA: "only-a", secretB: "only-b", lone: "nobodys", saA: "sa-a", saB: "sa-b"}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = admin.CoreV1().Namespaces().Delete(context.Background(), f.ns, metav1.DeleteOptions{})
		for _, n := range []string{f.nodeA, f.nodeB} {
			_ = admin.CoreV1().Nodes().Delete(context.Background(), n, metav1.DeleteOptions{})
			_ = admin.RbacV1().ClusterRoles().Delete(context.Background(), nodegrant.RoleName(n), metav1.DeleteOptions{})
		}
	})
	for _, n := range []string{f.nodeA, f.nodeB} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}
		if _, err := admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The relay may act as A and B, as an administrator allows edge nodes.
	for _, n := range []string{f.nodeA, f.nodeB} {
		if err := st.AllowNode(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []string{f.secretA, f.secretB, f.lone} {
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: s, Namespace: f.ns}, StringData: map[string]string{"k": "v"}}
		if _, err := admin.CoreV1().Secrets(f.ns).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, sa := range []string{f.saA, f.saB} {
		if _, err := admin.CoreV1().ServiceAccounts(f.ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pod := func(name, node, secret, sa string) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.ns},
			Spec: corev1.PodSpec{
				NodeName:           node,
				ServiceAccountName: sa,
				Containers:         []corev1.Container{{Name: "c", Image: "test/busybox:1"}},
				Volumes: []corev1.Volume{{Name: "s", VolumeSource: corev1.VolumeSource{
					Secret: &corev1.SecretVolumeSource{SecretName: secret}}}},
			},
		}
		got, err := admin.CoreV1().Pods(f.ns).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	f.podA = pod("pod-a", f.nodeA, f.secretA, f.saA)
	f.podB = pod("pod-b", f.nodeB, f.secretB, f.saB)
	return f
}

// suffix names a test's objects: "TestRelayOwn..." gives "testrelayown".
func suffix(t *testing.T) string {
	return strings.ToLower(t.Name()[:min(len(t.Name()), 12)])
}

// listByName lists the Secret name in ns as c, the way the pod sync
// watches it (fieldSelector metadata.name).
func listByName(ctx context.Context, c kubernetes.Interface, ns, name string) error {
	_, err := c.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()})
	return err
}

func tokenFor(ctx context.Context, c kubernetes.Interface, ns, sa string, pod *corev1.Pod) error {
	tr := &authv1.TokenRequest{}
	if pod != nil {
		tr.Spec.BoundObjectRef = &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	_, err := c.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
	return err
}

// The relay's own identity reads no Secret, mints no token and reads no
// pod: everything it does for a node needs it to impersonate the node.
// Nor may it impersonate anyone but a node, or a node with extra groups.
func TestRelayIdentityCannotActWithoutImpersonating(t *testing.T) {
	needStack(t)
	ctx := ctxFor(t, 2*time.Minute)
	f := newRBACFixture(t, ctx)
	self := relayAs(t, "")

	for _, ns := range []string{metav1.NamespaceAll, "kube-system", f.ns, stack.RelayNamespace} {
		_, err := self.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
		forbidden(t, "list Secrets in namespace "+ns, err)
	}
	forbidden(t, "list an edge pod's Secret by name", listByName(ctx, self, f.ns, f.secretA))
	_, err := self.CoreV1().ConfigMaps("kube-system").List(ctx, metav1.ListOptions{})
	forbidden(t, "list ConfigMaps in kube-system", err)
	forbidden(t, "token for kube-system/default", tokenFor(ctx, self, "kube-system", "default", nil))
	forbidden(t, "token for an edge pod's service account", tokenFor(ctx, self, f.ns, f.saA, f.podA))
	_, err = self.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", f.nodeA).String()})
	forbidden(t, "list an edge node's pods", err)
	_, err = self.CoreV1().Pods(f.ns).Get(ctx, f.podA.Name, metav1.GetOptions{})
	forbidden(t, "get an edge pod", err)
	err = self.CoreV1().Pods(f.ns).Delete(ctx, f.podA.Name, metav1.DeleteOptions{})
	forbidden(t, "delete an edge pod", err)
	_, err = self.CoordinationV1().Leases(nodes.LeaseNamespace).Get(ctx, f.nodeA, metav1.GetOptions{})
	forbidden(t, "get an edge node's Lease", err)
	n, err := self.CoreV1().Nodes().Get(ctx, f.nodeA, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the relay reads Nodes as itself (join, the tolerations controller): %v", err)
	}
	_, err = self.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
	forbidden(t, "update an edge node's status", err)

	// A node no administrator allowed (a worker, say) cannot be
	// impersonated at all, not even to read itself; nor can the relay
	// allow itself one.
	worker := "rbac-worker-" + suffix(t)
	if _, err := st.CP.Client().CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: worker}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = st.CP.Client().CoreV1().Nodes().Delete(context.Background(), worker, metav1.DeleteOptions{})
	})
	_, err = relayAs(t, asnode.UserPrefix+worker).CoreV1().Nodes().Get(ctx, worker, metav1.GetOptions{})
	if !asnode.NotAllowed(err) {
		t.Errorf("impersonating a node no administrator allowed: want Forbidden (%s), got %v", asnode.Verb, err)
	}
	if err := nodegrant.Allow(ctx, self, worker); !apierrors.IsForbidden(err) {
		t.Errorf("the relay allowing itself a node: want Forbidden, got %v", err)
	}

	// Impersonating anyone but a node, or a node with groups, is refused.
	for _, c := range []struct {
		what   string
		user   string
		groups []string
	}{
		{"a user", "admin", nil},
		{"the masters group", "admin", []string{"system:masters"}},
		{"a service account", "system:serviceaccount:kube-system:default", nil},
		{"a node with the masters group", asnode.UserPrefix + f.nodeA, []string{"system:masters"}},
		{"a node with the nodes group", asnode.UserPrefix + f.nodeA, []string{"system:nodes"}},
	} {
		_, err := relayAs(t, c.user, c.groups...).CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		forbidden(t, "impersonating "+c.what, err)
	}
}

// Impersonating node A, the relay reads what A's pods use and nothing of
// B's; it mints tokens for A's pods' service accounts only, and only the
// requests rbac.yaml lists are allowed at all.
func TestImpersonatedNodeIsBoundedByTheNodeAuthorizer(t *testing.T) {
	needStack(t)
	ctx := ctxFor(t, 2*time.Minute)
	f := newRBACFixture(t, ctx)
	asA := relayAs(t, asnode.UserPrefix+f.nodeA)
	asB := relayAs(t, asnode.UserPrefix+f.nodeB)

	// Both nodes can read their own pods' Secrets (once the Node
	// authorizer's graph has the pods), so a refusal below is about whose
	// Secret it is, not a graph that is behind.
	for _, c := range []struct {
		as     kubernetes.Interface
		node   string
		secret string
	}{{asA, f.nodeA, f.secretA}, {asB, f.nodeB, f.secretB}} {
		stack.WaitFor(t, ctx, 30*time.Second, c.node+" reading its pod's Secret", func() (bool, string) {
			err := listByName(ctx, c.as, f.ns, c.secret)
			return err == nil, fmt.Sprint(err)
		})
	}
	forbidden(t, "node A reading node B's pod's Secret", listByName(ctx, asA, f.ns, f.secretB))
	forbidden(t, "node A reading a Secret no pod uses", listByName(ctx, asA, f.ns, f.lone))
	_, err := asA.CoreV1().Secrets(f.ns).List(ctx, metav1.ListOptions{})
	forbidden(t, "node A listing every Secret of a namespace", err)
	// get is not among the impersonate-on verbs rbac.yaml grants for
	// Secrets, even of a node's own pods.
	_, err = asA.CoreV1().Secrets(f.ns).Get(ctx, f.secretA, metav1.GetOptions{})
	forbidden(t, "node A getting (not list+watch) its pod's Secret", err)

	// Tokens: for A's pod's service account, bound to A's pod; not for B's,
	// not unbound, not for kube-system's.
	if err := tokenFor(ctx, asA, f.ns, f.saA, f.podA); err != nil {
		t.Errorf("node A's token for its own pod: %v", err)
	}
	forbidden(t, "node A's token for node B's pod", tokenFor(ctx, asA, f.ns, f.saB, f.podB))
	forbidden(t, "node A's token for its pod's account bound to B's pod", tokenFor(ctx, asA, f.ns, f.saA, f.podB))
	forbidden(t, "node A's unbound token", tokenFor(ctx, asA, f.ns, f.saA, nil))
	forbidden(t, "node A's token for kube-system/default", tokenFor(ctx, asA, "kube-system", "default", nil))

	// Pods: its own, by field selector; not all, not B's.
	_, err = asA.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", f.nodeA).String()})
	if err != nil {
		t.Errorf("node A listing its pods: %v", err)
	}
	_, err = asA.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	forbidden(t, "node A listing every pod", err)
	_, err = asA.CoreV1().Pods(f.ns).Get(ctx, f.podB.Name, metav1.GetOptions{})
	forbidden(t, "node A reading node B's pod", err)
	err = asA.CoreV1().Pods(f.ns).Delete(ctx, f.podB.Name, metav1.DeleteOptions{})
	forbidden(t, "node A deleting node B's pod", err)

	// Nodes: its own only; and no label a node may not set on itself.
	_, err = asA.CoreV1().Nodes().Get(ctx, f.nodeB, metav1.GetOptions{})
	forbidden(t, "node A reading node B", err)
	nb, err := st.CP.Client().CoreV1().Nodes().Get(ctx, f.nodeB, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = asA.CoreV1().Nodes().UpdateStatus(ctx, nb, metav1.UpdateOptions{})
	forbidden(t, "node A writing node B's status", err)
	na, err := asA.CoreV1().Nodes().Get(ctx, f.nodeA, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("node A reading itself: %v", err)
	}
	if na.Labels == nil {
		na.Labels = map[string]string{}
	}
	na.Labels["node-restriction.kubernetes.io/trusted"] = "true"
	_, err = asA.CoreV1().Nodes().Update(ctx, na, metav1.UpdateOptions{})
	forbidden(t, "node A labelling itself node-restriction.kubernetes.io/trusted", err)
	// A verb rbac.yaml does not list for nodes (delete), even of itself.
	err = asA.CoreV1().Nodes().Delete(ctx, f.nodeA, metav1.DeleteOptions{})
	forbidden(t, "node A deleting itself", err)
}

// The relay's own writes: it patches pods only in their tolerations (and
// the annotation recording them), and creates only edge Nodes with its
// own labels (cloud/deploy/policy.yaml).
func TestRelayOwnWritesAreBoundedByPolicy(t *testing.T) {
	needStack(t)
	ctx := ctxFor(t, 2*time.Minute)
	f := newRBACFixture(t, ctx)
	self := relayAs(t, "")
	pods := self.CoreV1().Pods(f.ns)

	// The tolerations controller's own patch goes through ...
	patch, _ := tolerations.Plan(f.podA, false)
	if patch == nil {
		t.Fatalf("pod %s has no offline tolerations to keep: %+v", f.podA.Name, f.podA.Spec.Tolerations)
	}
	if _, err := pods.Patch(ctx, f.podA.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("the tolerations patch: %v", err)
	}
	// ... anything else is refused: an image, a label, another annotation.
	for what, p := range map[string]string{
		"an image":      `{"spec":{"containers":[{"name":"c","image":"evil/miner:1"}]}}`,
		"a label":       `{"metadata":{"labels":{"app":"steered"}}}`,
		"an annotation": `{"metadata":{"annotations":{"other":"x"}}}`,
	} {
		_, err := pods.Patch(ctx, f.podB.Name, types.StrategicMergePatchType, []byte(p), metav1.PatchOptions{})
		if err == nil || !strings.Contains(err.Error(), "outpost-relay-pod-tolerations-only") {
			t.Errorf("the relay patching %s of a pod: want refused by outpost-relay-pod-tolerations-only, got %v", what, err)
		}
		// The admin may: the refusal is the policy's, not the patch's.
		if _, err := st.CP.Client().CoreV1().Pods(f.ns).Patch(ctx, f.podB.Name, types.StrategicMergePatchType, []byte(p), metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Errorf("the admin patching %s (dry run): %v", what, err)
		}
	}

	// Nodes: an edge Node with the relay's labels, nothing else.
	name := "rbac-new-" + suffix(t)
	t.Cleanup(func() { _ = st.CP.Client().CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	labels := func(extra map[string]string) map[string]string {
		l := map[string]string{nodes.EdgeRoleLabel: "", corev1.LabelHostname: name, corev1.LabelArchStable: "arm64", corev1.LabelOSStable: "linux", nodes.BoardLabel: "sim"}
		for k, v := range extra {
			if v == "-" {
				delete(l, k)
			} else {
				l[k] = v
			}
		}
		return l
	}
	for what, n := range map[string]*corev1.Node{
		"a restricted label": {ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels(map[string]string{"node-restriction.kubernetes.io/trusted": "true"})}},
		"no edge role":       {ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels(map[string]string{nodes.EdgeRoleLabel: "-"})}},
		"a taint":            {ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels(nil)}, Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "k", Effect: corev1.TaintEffectNoSchedule}}}},
	} {
		_, err := self.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), "outpost-relay-edge-node-create") {
			t.Errorf("the relay creating a Node with %s: want refused by outpost-relay-edge-node-create, got %v", what, err)
		}
	}
	if _, err := self.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels(nil)}}, metav1.CreateOptions{}); err != nil {
		t.Errorf("the relay creating an edge Node as it does on a first hello: %v", err)
	}
}

// A joined node whose grant an administrator withdrew is refused at its
// hello, with what to do, and nothing is written for it.
func TestNodeNotAllowedIsRefusedAtHello(t *testing.T) {
	needStack(t)
	ctx := ctxFor(t, 2*time.Minute)
	const name = "rbac-withdrawn"
	p := joinPeer(t, ctx, name)
	admin := st.CP.Client()
	if err := admin.RbacV1().ClusterRoles().Delete(ctx, nodegrant.RoleName(name), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	stack.WaitFor(t, ctx, 30*time.Second, "the controller manager dropping the grant from "+nodegrant.AggregatedRole, func() (bool, string) {
		ok, err := nodegrant.Allowed(ctx, admin, name)
		return !ok && err == nil, fmt.Sprint(ok, err)
	})
	c := p.dial(t, ctx)
	defer c.CloseNow()
	send(t, ctx, c, wire.TypeHello, 0, helloFor(name))
	errs, _ := readUntilClosed(ctx, c)
	if len(errs) == 0 || errs[0].Code != wire.CodeForbidden || !strings.Contains(errs[0].Reason, "outpost-relay node allow "+name) {
		t.Fatalf("want a forbidden error saying to run outpost-relay node allow %s, got %s", name, reasons(errs))
	}
	if _, err := admin.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a Node was written for a node the relay may not act as: %v", err)
	}
}

// TestClaimsReadAsTheNode: acting as a node, the relay reads the
// PersistentVolumeClaims of that node's pods and the PersistentVolumes
// they are bound to (get, as a kubelet reads them when it mounts a pod's
// volumes), and nothing else: not another node's, and no list.
func TestClaimsReadAsTheNode(t *testing.T) {
	needStack(t)
	ctx := ctxFor(t, 2*time.Minute)
	f := newRBACFixture(t, ctx)
	admin := st.CP.Client()
	asA := relayAs(t, asnode.UserPrefix+f.nodeA)
	claimed := map[string]string{} // node → claim
	for _, n := range []string{f.nodeA, f.nodeB} {
		name := "claim-" + n
		pv := &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: "pv-" + n},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
				AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/srv/" + n}},
				ClaimRef:               &corev1.ObjectReference{Namespace: f.ns, Name: name},
			},
		}
		if _, err := admin.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = admin.CoreV1().PersistentVolumes().Delete(context.Background(), pv.Name, metav1.DeleteOptions{})
		})
		empty := ""
		pvc := &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: f.ns},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				StorageClassName: &empty,
				VolumeName:       pv.Name,
				Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
			},
		}
		if _, err := admin.CoreV1().PersistentVolumeClaims(f.ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "pvc-" + n, Namespace: f.ns},
			Spec: corev1.PodSpec{
				NodeName:   n,
				Containers: []corev1.Container{{Name: "c", Image: "test/busybox:1"}},
				Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
					PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: name}}}},
			},
		}
		if _, err := admin.CoreV1().Pods(f.ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		claimed[n] = name
	}
	stack.WaitFor(t, ctx, 30*time.Second, "node A reading its pod's claim and its PersistentVolume", func() (bool, string) {
		_, err := asA.CoreV1().PersistentVolumeClaims(f.ns).Get(ctx, claimed[f.nodeA], metav1.GetOptions{})
		if err == nil {
			_, err = asA.CoreV1().PersistentVolumes().Get(ctx, "pv-"+f.nodeA, metav1.GetOptions{})
		}
		return err == nil, fmt.Sprint(err)
	})
	_, err := asA.CoreV1().PersistentVolumeClaims(f.ns).Get(ctx, claimed[f.nodeB], metav1.GetOptions{})
	forbidden(t, "node A reading node B's pod's claim", err)
	_, err = asA.CoreV1().PersistentVolumes().Get(ctx, "pv-"+f.nodeB, metav1.GetOptions{})
	forbidden(t, "node A reading node B's pod's PersistentVolume", err)
	_, err = asA.CoreV1().PersistentVolumeClaims(f.ns).List(ctx, metav1.ListOptions{})
	forbidden(t, "node A listing claims", err)
	_, err = asA.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	forbidden(t, "node A listing PersistentVolumes", err)
}
