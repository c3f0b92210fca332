package relay_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"outpost.dev/cloud/identity"
	"outpost.dev/cloud/relay"
	"outpost.dev/wire"
)

// expectRevoked reads until the relay closes c as revoked, with a fatal
// forbidden error frame saying why.
func expectRevoked(t *testing.T, c *websocket.Conn, why string) {
	t.Helper()
	for {
		f, err := recvAny(t, c)
		if err != nil {
			if got := websocket.CloseStatus(err); got != relay.CloseRevoked {
				t.Fatalf("closed with %v (%v), want %v", got, err, relay.CloseRevoked)
			}
			return
		}
		if f.Type == wire.TypeError {
			var e wire.Error
			if err := f.DecodeBody(&e); err != nil || e.Code != wire.CodeForbidden || !e.Fatal || !strings.Contains(e.Reason, why) {
				t.Fatalf("error frame %+v (%v), want fatal forbidden saying %q", e, err, why)
			}
		}
	}
}

func expectRefused(t *testing.T, tr *testRelay, name, why string) {
	t.Helper()
	cert := tr.nodeCert(t, name)
	c, resp, err := tr.dialCert(t, &cert)
	if err == nil {
		c.CloseNow()
		t.Fatalf("%s connected with a revoked certificate", name)
	}
	if resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("dial: %v, want HTTP 403", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if !strings.Contains(string(body), why) || !strings.Contains(string(body), "outpost-relay token create --node "+name) {
		t.Fatalf("refusal %q does not say %q and how to re-join", body, why)
	}
}

// Revoking a node closes its link and refuses its certificate; re-joining
// (a new certificate recorded) lifts it and revokes the earlier one;
// deleting the Node revokes too, and the relay does not bring it back.
func TestRevocation(t *testing.T) {
	// The fake API server leaves UIDs empty; a real one never does. The
	// reactor goes in before the relay starts its informers.
	tr := newTestRelay(t, func(cfg *relay.Config) {
		cfg.Client.(*fake.Clientset).PrependReactor("create", "nodes", func(a k8stesting.Action) (bool, runtime.Object, error) {
			n := a.(k8stesting.CreateAction).GetObject().(*corev1.Node)
			n.UID = types.UID("uid-" + n.Name)
			return false, nil, nil
		})
	})
	ctx := context.Background()
	ids := identity.New(tr.client, relay.DefaultNamespace)
	c := tr.hello(t, "gw-r")
	waitFor(t, "the record bound to the created Node", func() bool {
		rec, _ := ids.Fresh(ctx, "gw-r")
		return rec != nil && rec.NodeUID == "uid-gw-r"
	})

	if err := ids.Revoke(ctx, "gw-r", "gateway stolen"); err != nil {
		t.Fatal(err)
	}
	expectRevoked(t, c, "gateway stolen")
	expectRefused(t, tr, "gw-r", "revoked")

	// A re-join records a new certificate: it connects, the old one not.
	old := tr.nodeCert(t, "gw-r")
	tr.mu.Lock()
	delete(tr.certs, "gw-r")
	tr.mu.Unlock()
	fresh := tr.nodeCert(t, "gw-r")
	if err := ids.Issue(ctx, "gw-r", identity.Serial(fresh.Leaf), "uid-gw-r", true); err != nil {
		t.Fatal(err)
	}
	c = tr.hello(t, "gw-r")
	if oc, resp, err := tr.dialCert(t, &old); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		if oc != nil {
			oc.CloseNow()
		}
		t.Fatalf("the certificate from before the re-join: %v", err)
	}

	// Deleting the Node revokes: the link closes, a reconnect is refused
	// before its hello, so the Node is not created again.
	if err := tr.client.CoreV1().Nodes().Delete(ctx, "gw-r", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expectRevoked(t, c, "was deleted")
	expectRefused(t, tr, "gw-r", "was deleted")
	if getNode(tr, "gw-r") != nil {
		t.Fatal("the deleted Node was created again")
	}
}
