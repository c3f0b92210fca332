package deploy

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	yaml "go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"

	"outpost.dev/build/relayimage/ociimage"
	"outpost.dev/cloud/server"
	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
)

// deployFiles returns every manifest under cloud/deploy.
func deployFiles(t *testing.T) []string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(root, "cloud", "deploy", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"devices-crd.yaml", "policy.yaml", "rbac.yaml", "relay.yaml"} {
		if !slices.Contains(files, filepath.Join(root, "cloud", "deploy", want)) {
			t.Fatalf("cloud/deploy has no %s (found %q)", want, files)
		}
	}
	return files
}

// documents returns the YAML documents of file that hold an object.
func documents(t *testing.T, file string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var docs [][]byte
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var v map[string]any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if v == nil {
			continue
		}
		out, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, out)
	}
	return docs
}

// TestManifestsServerDryRun applies every manifest under cloud/deploy with
// kubectl apply --dry-run=server --validate=strict: the API server decodes
// each object strictly (an unknown or duplicate field is an error),
// validates it, runs every admission plugin (PodSecurity among them, which
// warns about a pod template the namespace's level forbids) and stores
// nothing. Any error, and any warning, fails the test.
func TestManifestsServerDryRun(t *testing.T) {
	need(t)
	ctx := stack.Context(t, 2*time.Minute)
	for _, f := range deployFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			n := len(documents(t, f))
			if n == 0 {
				t.Fatalf("%s holds no object", f)
			}
			out, err := st.CP.Kubectl(ctx, "apply", "--dry-run=server", "--validate=strict", "-f", f)
			if err != nil {
				t.Fatal(err)
			}
			var applied int
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				switch {
				case strings.HasSuffix(line, "(server dry run)"):
					applied++
				case strings.HasPrefix(line, "Warning: ") && strings.Contains(line, "missing the kubectl.kubernetes.io/last-applied-configuration annotation"):
					// kubectl's own bookkeeping, not the manifest: the
					// relay installed the CRD (TestImageServesAgent's
					// relay, as a deployed one does at start).
				default:
					t.Errorf("kubectl said %q", line)
				}
			}
			if applied != n {
				t.Errorf("%d objects in %s, kubectl applied %d:\n%s", n, filepath.Base(f), applied, out)
			}
		})
	}
}

// relayObjects decodes relay.yaml into its typed objects.
func relayObjects(t *testing.T) (*appsv1.Deployment, *policyv1.PodDisruptionBudget, *corev1.Service) {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	var (
		d   *appsv1.Deployment
		pdb *policyv1.PodDisruptionBudget
		svc *corev1.Service
	)
	for _, doc := range documents(t, filepath.Join(root, "cloud", "deploy", "relay.yaml")) {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("relay.yaml: %v", err)
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			d = o
		case *policyv1.PodDisruptionBudget:
			pdb = o
		case *corev1.Service:
			svc = o
		default:
			t.Errorf("relay.yaml: unexpected %T", runtime.Object(o))
		}
	}
	if d == nil || pdb == nil || svc == nil {
		t.Fatalf("relay.yaml must hold a Deployment, a PodDisruptionBudget and a Service (got %v, %v, %v)", d != nil, pdb != nil, svc != nil)
	}
	return d, pdb, svc
}

// TestRelayManifest checks what relay.yaml promises its users: at least two
// replicas kept through voluntary disruptions, probes on the relay's own
// endpoints, bounded resources, the restricted security settings matching
// the image's user, and flags the relay accepts. It needs no cluster.
func TestRelayManifest(t *testing.T) {
	d, pdb, svc := relayObjects(t)
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("replicas %v: want at least 2", d.Spec.Replicas)
	}
	tmpl := labels.Set(d.Spec.Template.Labels)
	sel, err := metaSelector(pdb)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(tmpl) {
		t.Errorf("the PodDisruptionBudget's selector %v does not match the relay's pods %v", sel, tmpl)
	}
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() < 1 || pdb.Spec.MinAvailable.IntValue() >= int(*d.Spec.Replicas) {
		t.Errorf("PodDisruptionBudget minAvailable %v: want at least 1 and fewer than the replicas, so a drain can go on", pdb.Spec.MinAvailable)
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(tmpl) {
		t.Errorf("the Service's selector %v does not match the relay's pods", svc.Spec.Selector)
	}

	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want the relay alone", len(pod.Containers))
	}
	c := pod.Containers[0]
	if !strings.Contains(c.Image, "outpost-relay") {
		t.Errorf("image %q is not the relay's", c.Image)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
		if !slices.Contains(ociimage.Ports, strconv.Itoa(int(p.ContainerPort))+"/tcp") {
			t.Errorf("container port %d is not one the image exposes (%v)", p.ContainerPort, ociimage.Ports)
		}
	}
	for _, pr := range []struct {
		name string
		p    *corev1.Probe
		path string
	}{{"startup", c.StartupProbe, "/healthz"}, {"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if pr.p == nil || pr.p.HTTPGet == nil {
			t.Errorf("no %s probe over HTTP", pr.name)
			continue
		}
		g := pr.p.HTTPGet
		if g.Path != pr.path || g.Scheme != corev1.URISchemeHTTPS || g.Port.String() != "https" || ports["https"] == 0 {
			t.Errorf("%s probe: %s %s port %s; want HTTPS %s on the relay's https port", pr.name, g.Scheme, g.Path, g.Port.String(), pr.path)
		}
	}
	for _, r := range []struct {
		what string
		ok   bool
	}{
		{"cpu request", !c.Resources.Requests.Cpu().IsZero()},
		{"memory request", !c.Resources.Requests.Memory().IsZero()},
		{"memory limit", !c.Resources.Limits.Memory().IsZero()},
	} {
		if !r.ok {
			t.Errorf("no %s", r.what)
		}
	}

	psc, csc := pod.SecurityContext, c.SecurityContext
	if psc == nil || csc == nil {
		t.Fatal("no pod or container securityContext")
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || csc.RunAsNonRoot == nil || !*csc.RunAsNonRoot {
		t.Error("runAsNonRoot is not true in the pod and the container")
	}
	if psc.RunAsUser == nil || *psc.RunAsUser != ociimage.UID || psc.RunAsGroup == nil || *psc.RunAsGroup != ociimage.GID {
		t.Errorf("runAsUser/runAsGroup %v/%v: want the image's %d:%d", psc.RunAsUser, psc.RunAsGroup, ociimage.UID, ociimage.GID)
	}
	if psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccomp %v: want RuntimeDefault", psc.SeccompProfile)
	}
	if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if csc.Capabilities == nil || !slices.Equal(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(csc.Capabilities.Add) > 0 {
		t.Errorf("capabilities %v: want drop ALL and add nothing", csc.Capabilities)
	}
	if csc.Privileged != nil && *csc.Privileged {
		t.Error("privileged")
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Error("shares a host namespace")
	}

	// The relay accepts exactly these flags; $(VAR) is the kubelet's
	// expansion of the container's environment.
	if len(c.Command) != 0 {
		t.Errorf("command %q replaces the image's entrypoint %s", c.Command, ociimage.Binary)
	}
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("args %q: want serve first", c.Args)
	}
	args := slices.Clone(c.Args[1:])
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "$(POD_IP)", "10.0.0.7")
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var o server.Options
	o.Register(fs)
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		t.Fatalf("outpost-relay serve refuses relay.yaml's args %q: %v %q", c.Args, err, fs.Args())
	}
	if o.Namespace != stack.RelayNamespace || d.Namespace != stack.RelayNamespace {
		t.Errorf("namespace: flag %q, Deployment %q; want %q (rbac.yaml)", o.Namespace, d.Namespace, stack.RelayNamespace)
	}
	if !strings.HasSuffix(o.Listen, ":"+strconv.Itoa(int(ports["https"]))) {
		t.Errorf("--listen %q is not the https container port %d", o.Listen, ports["https"])
	}
	if !strings.HasSuffix(o.KubeletListen, ":"+strconv.Itoa(int(ports["kubelet"]))) {
		t.Errorf("--kubelet-listen %q is not the kubelet container port %d", o.KubeletListen, ports["kubelet"])
	}
	if pod.ServiceAccountName != stack.RelayServiceAccount {
		t.Errorf("service account %q, want %q", pod.ServiceAccountName, stack.RelayServiceAccount)
	}
}

func metaSelector(pdb *policyv1.PodDisruptionBudget) (labels.Selector, error) {
	if pdb.Spec.Selector == nil {
		return nil, errors.New("the PodDisruptionBudget has no selector")
	}
	return labels.SelectorFromSet(pdb.Spec.Selector.MatchLabels), nil
}

// TestDeviceNames: the API server refuses a Device whose name is not a
// DNS subdomain (it would be an MQTT topic level on the gateway, where +
// and # are wildcards), as the relay and the agent do (wire.Object's
// Validate), and takes one that is.
func TestDeviceNames(t *testing.T) {
	need(t)
	ctx := stack.Context(t, 2*time.Minute)
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	crd := filepath.Join(root, "cloud", "deploy", "devices-crd.yaml")
	if out, err := st.CP.Kubectl(ctx, "apply", "--server-side", "--force-conflicts", "--field-manager=outpost-test", "-f", crd); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if out, err := st.CP.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=60s", "crd/devices.outpost.dev"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	dev := func(name string) string {
		return `{"apiVersion":"outpost.dev/v1alpha1","kind":"Device","metadata":{"name":"` + name + `","namespace":"default"},` +
			`"spec":{"nodeName":"gw","driver":"bme280","connection":{"bus":"I2C1","address":"0x76"}}}`
	}
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"temp-1", true},
		{"temp.kitchen", true},
		{"temp#1", false},
		{"temp+1", false},
		{"*0", false},
		{"Temp", false},
	} {
		f := filepath.Join(t.TempDir(), "device.json")
		if err := os.WriteFile(f, []byte(dev(tc.name)), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := st.CP.Kubectl(ctx, "create", "--dry-run=server", "-f", f)
		switch {
		case tc.ok && err != nil:
			t.Errorf("Device %q refused: %v: %s", tc.name, err, out)
		case !tc.ok && err == nil:
			t.Errorf("Device %q taken: %s", tc.name, out)
		case !tc.ok && !strings.Contains(out+err.Error(), "metadata.name"):
			t.Errorf("Device %q refused, but not for its name: %v: %s", tc.name, err, out)
		}
	}
}
