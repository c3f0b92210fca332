package watchmux

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"outpost.dev/test/harness"
	"outpost.dev/test/wait"
)

// serverMaxStreams is the API server's MAX_CONCURRENT_STREAMS in these
// tests (--http2-max-streams-per-connection).
const serverMaxStreams = 10

// recorder is a Handler that keeps what its stream delivered.
type recorder struct {
	mu     sync.Mutex
	events []watch.Event
	ended  bool
	err    error
}

func (r *recorder) Event(ev watch.Event) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	return true
}

func (r *recorder) End(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended {
		panic("End called twice")
	}
	r.ended, r.err = true, err
}

// pods returns the names of the pods seen, and the last resourceVersion.
func (r *recorder) pods() (names map[string]string, rv string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	names = map[string]string{}
	for _, ev := range r.events {
		if p, ok := ev.Object.(*corev1.Pod); ok {
			rv = p.ResourceVersion
			if ev.Type == watch.Added || ev.Type == watch.Modified {
				names[p.Name] = p.Spec.NodeName
			}
		}
	}
	return names, rv
}

func (r *recorder) state() (int, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events), r.ended, r.err
}

type apiEnv struct {
	ctx    context.Context
	cp     *harness.ControlPlane
	cfg    *rest.Config
	client kubernetes.Interface
}

func startAPI(t *testing.T) *apiEnv {
	t.Helper()
	ctx := t.Context()
	cp, err := harness.StartControlPlane(ctx, harness.Options{
		ExtraAPIServerFlags: []string{"--http2-max-streams-per-connection=" + strconv.Itoa(serverMaxStreams)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Stop() })
	return &apiEnv{ctx: ctx, cp: cp, cfg: cp.RESTConfig(), client: cp.Client()}
}

// node creates Node name with one pod bound to it.
func (e *apiEnv) node(t *testing.T, name string) {
	t.Helper()
	_, err := e.client.CoreV1().Nodes().Create(e.ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.pod(t, name, name+"-a")
}

func (e *apiEnv) pod(t *testing.T, node, name string) {
	t.Helper()
	_, err := e.client.CoreV1().Pods("default").Create(e.ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "example.invalid/c"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// asNode is the watch of node's pods made as node. It is namespaced, so
// that podWatches tells the test's watches from the control plane's own,
// which are cluster-wide and start when their components get to them.
func asNode(node, selectNode, rv string) Request {
	return Request{
		Path:    "/api/v1/namespaces/default/pods",
		Options: metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", selectNode).String(), ResourceVersion: rv, AllowWatchBookmarks: true},
		User:    "system:node:" + node,
	}
}

// podWatches is how many namespaced pod watches the API server is
// serving (apiserver_longrunning_requests), so a test can see a stream
// end server-side.
func (e *apiEnv) podWatches(t *testing.T) (int, error) {
	raw, err := e.client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(e.ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, "apiserver_longrunning_requests{") || !strings.Contains(l, `resource="pods"`) || !strings.Contains(l, `verb="WATCH"`) || !strings.Contains(l, `scope="namespace"`) {
			continue
		}
		f := strings.Fields(l)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, err
		}
		n += int(v)
	}
	return n, sc.Err()
}

// The watches of many impersonated nodes share the connections: each
// sees its own node's pods only, a node is refused another's, a cancelled
// stream ends at the API server, streams past the server's
// MAX_CONCURRENT_STREAMS go to a second connection, and watches cut off
// with their connection resume from their last resourceVersion.
func TestAgainstAPIServer(t *testing.T) {
	e := startAPI(t)
	m, err := New(e.cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	base, err := e.podWatches(t)
	if err != nil {
		t.Fatal(err)
	}
	nodes := make([]string, serverMaxStreams)
	recs := make([]*recorder, len(nodes))
	streams := make([]*Stream, len(nodes))
	for i := range nodes {
		nodes[i] = fmt.Sprintf("edge-%d", i)
		e.node(t, nodes[i])
	}
	for i, n := range nodes {
		recs[i] = &recorder{}
		if streams[i], err = m.Watch(e.ctx, asNode(n, n, ""), recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if got := m.Conns(); got != 1 {
		t.Fatalf("%d streams on %d connections, want 1", len(nodes), got)
	}
	for i, n := range nodes {
		e.pod(t, n, n+"-b")
		wait.State(t, e.ctx, time.Minute, n+" sees its two pods", func() (bool, string) {
			got, _ := recs[i].pods()
			_, ended, err := recs[i].state()
			return len(got) == 2 && !ended, fmt.Sprintf("%v ended=%v %v", got, ended, err)
		})
	}
	for i, n := range nodes {
		got, _ := recs[i].pods()
		for pod, on := range got {
			if on != n {
				t.Errorf("the watch as %s delivered pod %s of node %s", n, pod, on)
			}
		}
	}
	wait.State(t, e.ctx, time.Minute, "the API server serves our pod watches", func() (bool, string) {
		n, err := e.podWatches(t)
		return err == nil && n == base+len(nodes), fmt.Sprintf("%d pod watches, %d before, %v", n, base, err)
	})

	t.Run("cancel", func(t *testing.T) {
		streams[0].Cancel()
		before, _, _ := recs[0].state()
		wait.State(t, e.ctx, time.Minute, "the API server ends the cancelled watch", func() (bool, string) {
			n, err := e.podWatches(t)
			return err == nil && n == base+len(nodes)-1, fmt.Sprintf("%d pod watches, %d before, %v", n, base, err)
		})
		e.pod(t, nodes[0], nodes[0]+"-c")
		e.pod(t, nodes[1], nodes[1]+"-c")
		wait.State(t, e.ctx, time.Minute, nodes[1]+" sees its new pod", func() (bool, string) {
			got, _ := recs[1].pods()
			return len(got) == 3, fmt.Sprint(got)
		})
		if after, ended, _ := recs[0].state(); after != before || ended {
			t.Fatalf("the cancelled stream had %d events, then %d, ended=%v", before, after, ended)
		}
		if got := m.Conns(); got != 1 {
			t.Fatalf("%d connections after a cancel, want 1", got)
		}
	})

	t.Run("another node's pods are forbidden", func(t *testing.T) {
		r := &recorder{}
		if _, err := m.Watch(e.ctx, asNode(nodes[0], nodes[1], ""), r); err != nil {
			t.Fatal(err)
		}
		wait.State(t, e.ctx, time.Minute, "the watch ends", func() (bool, string) {
			_, ended, err := r.state()
			return ended, fmt.Sprint(err)
		})
		_, _, err := r.state()
		if !apierrors.IsForbidden(err) {
			t.Fatalf("a watch as %s of %s's pods ended with %v, want 403 Forbidden", nodes[0], nodes[1], err)
		}
		if n, _, _ := r.state(); n != 0 {
			t.Fatalf("a forbidden watch delivered %d events", n)
		}
	})

	t.Run("overflow to a second connection", func(t *testing.T) {
		// nodes[0]'s slot is free again; of three more streams one
		// fills the first connection, two need another.
		var more []*recorder
		for _, n := range nodes[:3] {
			r := &recorder{}
			if _, err := m.Watch(e.ctx, asNode(n, n, ""), r); err != nil {
				t.Fatal(err)
			}
			more = append(more, r)
		}
		if got := m.Conns(); got != 2 {
			t.Fatalf("%d+3 streams (server limit %d) on %d connections, want 2", len(nodes)-1, serverMaxStreams, got)
		}
		for i, r := range more {
			want, err := e.client.CoreV1().Pods("").List(e.ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + nodes[i]})
			if err != nil {
				t.Fatal(err)
			}
			wait.State(t, e.ctx, time.Minute, nodes[i]+"'s extra watch sees its pods", func() (bool, string) {
				got, _ := r.pods()
				return len(got) == len(want.Items), fmt.Sprintf("%v, want %d pods", got, len(want.Items))
			})
		}
	})

	t.Run("resume after the connection is closed", func(t *testing.T) {
		m.mu.Lock()
		conns := append([]*conn(nil), m.conns...)
		m.mu.Unlock()
		for _, c := range conns {
			c.nc.Close() // as a network failure would
		}
		for i := 1; i < len(nodes); i++ {
			wait.State(t, e.ctx, time.Minute, nodes[i]+"'s stream ends", func() (bool, string) {
				_, ended, err := recs[i].state()
				return ended && err != nil, fmt.Sprint(err)
			})
		}
		if got := m.Conns(); got != 0 {
			t.Fatalf("%d connections left after all were closed", got)
		}
		i := 2
		_, rv := recs[i].pods()
		r := &recorder{}
		if _, err := m.Watch(e.ctx, asNode(nodes[i], nodes[i], rv), r); err != nil {
			t.Fatal(err)
		}
		e.pod(t, nodes[i], nodes[i]+"-d")
		wait.State(t, e.ctx, time.Minute, "the resumed watch sees the new pod", func() (bool, string) {
			got, _ := r.pods()
			_, ok := got[nodes[i]+"-d"]
			return ok, fmt.Sprint(got)
		})
		if got, _ := r.pods(); len(got) != 1 {
			t.Fatalf("the watch resumed from %s delivered %v, want the new pod only", rv, got)
		}
	})
}

// The relay's token file is read and sent as client-go sends it: a
// service account's token authenticates the watch (the account may not
// impersonate, which the API server's refusal names).
func TestBearerTokenFile(t *testing.T) {
	e := startAPI(t)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "watcher", Namespace: "default"}}
	if _, err := e.client.CoreV1().ServiceAccounts("default").Create(e.ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := e.client.CoreV1().ServiceAccounts("default").CreateToken(e.ctx, "watcher", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(tr.Status.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := rest.AnonymousClientConfig(e.cfg)
	cfg.BearerTokenFile = file
	m, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	r := &recorder{}
	if _, err := m.Watch(e.ctx, asNode("edge-0", "edge-0", ""), r); err != nil {
		t.Fatal(err)
	}
	wait.State(t, e.ctx, time.Minute, "the watch ends", func() (bool, string) {
		_, ended, err := r.state()
		return ended, fmt.Sprint(err)
	})
	_, _, err = r.state()
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "system:serviceaccount:default:watcher") {
		t.Fatalf("watch with the service account's token: %v, want 403 naming the account", err)
	}
	var se *apierrors.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("%T is not a StatusError", err)
	}
}
