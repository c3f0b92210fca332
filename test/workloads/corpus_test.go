package workloads

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"golang.org/x/sys/unix"
	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
)

// Labels and annotations the corpus's pod templates carry (test/corpus/README.md).
const (
	corpusShape    = "corpus.outpost.dev/shape"
	corpusExpect   = "corpus.outpost.dev/expect"
	corpusRefused  = "corpus.outpost.dev/refused"
	corpusCluster  = "corpus.outpost.dev/cluster"
	corpusMinimum  = 25
	corpusDeadline = 3 * time.Minute
)

var (
	shapeLabel = regexp.MustCompile(`corpus\.outpost\.dev/shape: ([a-z0-9-]+)`)
	modelledOn = regexp.MustCompile(`(?m)^# Modelled on: \S`)
)

// corpusShapeState is what TestCorpus knows of one shape.
type corpusShapeState struct {
	file string
	done bool
	last string
}

// TestCorpus applies every pod shape of test/corpus at once (one kubectl
// apply), runs each CronJob once, and waits until every pod of every shape
// is Running and Ready (or Succeeded) with its corpus.outpost.dev/expect
// line in kubectl logs; a shape marked corpus.outpost.dev/refused must
// instead be refused naming that field. Jobs end Complete.
func TestCorpus(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 6*time.Minute)
	const ns = "corpus"
	start := time.Now()

	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(root, "test", "corpus", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no shapes in test/corpus: %v", err)
	}
	// Local PersistentVolumes' directories exist before their pods, as
	// an administrator (or the local static provisioner) makes them.
	dir := nodeDir(t, ns, 0o755)
	for _, d := range []string{"redis", "node-red", "postgresql", "scratch", "influxdb2"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// node-exporter's host root: a shared mount, as HostToContainer
	// propagation needs of its source (this host's / is private).
	hostRoot := filepath.Join(dir, "host-root")
	sharedMount(t, hostRoot)
	if err := os.WriteFile(filepath.Join(hostRoot, "marker"), []byte("host-root"), 0o644); err != nil {
		t.Fatal(err)
	}
	var ports []string
	for range 2 {
		p, err := harness.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, strconv.Itoa(p))
	}
	subst := strings.NewReplacer("{{IMAGE}}", image1, "{{NODE}}", node, "{{NAMESPACE}}", ns, "{{DIR}}", dir,
		"{{PORT_A}}", ports[0], "{{PORT_B}}", ports[1])

	shapes := map[string]*corpusShapeState{}
	var manifest []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		base := strings.TrimSuffix(filepath.Base(f), ".yaml")
		if !modelledOn.MatchString(text) {
			t.Errorf("%s does not name the chart or app it is modelled on (a \"# Modelled on: \" line)", f)
		}
		for _, m := range shapeLabel.FindAllStringSubmatch(text, -1) {
			if m[1] != base {
				t.Errorf("%s labels a pod template as shape %q: a shape's file is named after it", f, m[1])
			}
			shapes[base] = &corpusShapeState{file: filepath.Base(f)}
		}
		manifest = append(manifest, subst.Replace(text))
	}
	if len(shapes) < corpusMinimum {
		t.Errorf("%d shapes in test/corpus, want at least %d", len(shapes), corpusMinimum)
	}

	newNamespace(t, ctx, ns)
	t.Cleanup(func() {
		// Cluster-scoped objects: the StorageClass and the PersistentVolumes.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = st.CP.Kubectl(ctx, "delete", "persistentvolumes,storageclasses", "-l", corpusCluster+"=true", "--wait=false")
	})
	all := filepath.Join(t.TempDir(), "corpus.yaml")
	if err := os.WriteFile(all, []byte(strings.Join(manifest, "\n---\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	st.Kubectl(t, ctx, "apply", "-n", ns, "-f", all)
	cjs, err := st.CP.Client().BatchV1().CronJobs(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, cj := range cjs.Items {
		st.Kubectl(t, ctx, "create", "job", "-n", ns, cj.Name+"-now", "--from=cronjob/"+cj.Name)
	}
	t.Logf("applied %d shapes from %d files in %v", len(shapes), len(files), time.Since(start).Round(time.Millisecond))

	stack.WaitFor(t, ctx, corpusDeadline, "every shape Running and Ready or Complete with its line in kubectl logs, or refused as documented", func() (bool, string) {
		pods, err := listPods(ctx, ns, corpusShape)
		if err != nil {
			return false, err.Error()
		}
		byShape := map[string][]corev1.Pod{}
		for _, p := range pods {
			byShape[p.Labels[corpusShape]] = append(byShape[p.Labels[corpusShape]], p)
		}
		var pending []string
		for name, s := range shapes {
			if !s.done {
				s.done, s.last = shapeDone(ctx, ns, byShape[name])
				if s.done {
					t.Logf("%s: done after %v", name, time.Since(start).Round(time.Millisecond))
				}
			}
			if !s.done {
				pending = append(pending, name+" ("+s.file+"): "+s.last)
			}
		}
		slices.Sort(pending)
		return len(pending) == 0, fmt.Sprintf("%d shapes not done:\n  %s", len(pending), strings.Join(pending, "\n  "))
	})

	// Shapes are done one by one; none has fallen over since (a failing
	// liveness probe, a crash).
	pods, err := listPods(ctx, ns, corpusShape)
	if err != nil {
		t.Fatal(err)
	}
	for i := range pods {
		p := &pods[i]
		if p.Annotations[corpusRefused] != "" || p.Status.Phase == corev1.PodSucceeded {
			continue
		}
		restarts := int32(0)
		for _, c := range append(slices.Clone(p.Status.InitContainerStatuses), p.Status.ContainerStatuses...) {
			restarts += c.RestartCount
		}
		if !runningReady(p) || restarts > 0 {
			t.Errorf("shape %s: %s", p.Labels[corpusShape], podState(p))
		}
	}

	// HostToContainer: a file system mounted on the host below
	// node-exporter's root after the container started appears inside it.
	late := filepath.Join(hostRoot, "late")
	if err := os.Mkdir(late, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", late, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(late, unix.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(late, "seen"), []byte("mounted after the container started"), 0o644); err != nil {
		t.Fatal(err)
	}
	exporter, err := listPods(ctx, ns, corpusShape+"=node-exporter")
	if err != nil || len(exporter) != 1 {
		t.Fatalf("node-exporter pods: %d (%v)", len(exporter), err)
	}
	if out := st.Kubectl(t, ctx, "exec", "-n", ns, exporter[0].Name, "--", "cat", "/host/root/late/seen"); !strings.Contains(out, "mounted after the container started") {
		t.Errorf("node-exporter does not see a mount made on the host after it started (HostToContainer): %q", out)
	}

	jobs, err := st.CP.Client().BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs.Items {
		complete := false
		for _, c := range j.Status.Conditions {
			complete = complete || c.Type == "Complete" && c.Status == corev1.ConditionTrue
		}
		if !complete {
			stack.WaitFor(t, ctx, 30*time.Second, "Job "+j.Name+" Complete", func() (bool, string) {
				jj, err := st.CP.Client().BatchV1().Jobs(ns).Get(ctx, j.Name, metav1.GetOptions{})
				if err != nil {
					return false, err.Error()
				}
				for _, c := range jj.Status.Conditions {
					if c.Type == "Complete" && c.Status == corev1.ConditionTrue {
						return true, ""
					}
				}
				return false, fmt.Sprintf("conditions %+v", jj.Status.Conditions)
			})
		}
	}
	t.Logf("%d shapes done in %v", len(shapes), time.Since(start).Round(time.Millisecond))
}

// shapeDone reports whether every pod of a shape is where the corpus
// wants it, or what is missing.
func shapeDone(ctx context.Context, ns string, pods []corev1.Pod) (bool, string) {
	if len(pods) == 0 {
		return false, "no pod yet"
	}
	for i := range pods {
		p := &pods[i]
		if field := p.Annotations[corpusRefused]; field != "" {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Reason == "UnsupportedField" && strings.HasPrefix(c.Message, field+" is not supported") {
					return true, ""
				}
			}
			return false, "not refused naming " + field + " yet: " + podState(p)
		}
		switch {
		case p.Status.Phase == corev1.PodFailed:
			return false, "FAILED: " + podState(p)
		case p.Status.Phase != corev1.PodSucceeded && !runningReady(p):
			return false, podState(p)
		}
		want := p.Annotations[corpusExpect]
		if want == "" {
			return false, p.Name + " has no " + corpusExpect + " annotation"
		}
		out, err := st.CP.Kubectl(ctx, "logs", "-n", ns, p.Name, "--all-containers=true")
		if err != nil || !strings.Contains(out, want) {
			return false, fmt.Sprintf("%s: kubectl logs %q (%v) lacks %q", p.Name, out, err, want)
		}
	}
	return true, ""
}

// sharedMount makes dir a mount point of its own in a shared peer group
// (mount --bind dir dir; mount --make-shared dir), undone at cleanup.
func sharedMount(t *testing.T, dir string) {
	t.Helper()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		t.Fatalf("make %s shared: %v", dir, err)
	}
}
