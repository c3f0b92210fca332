package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestExecOfflineNode: kubectl exec into a pod whose edge node went
// offline fails within seconds, and says the node is offline.
func TestExecOfflineNode(t *testing.T) {
	needStack(t)
	ctx := ctxFor(t, 3*time.Minute)
	const ns = "default"
	node := "exec-off-edge"
	p := joinPeer(t, ctx, node)
	ap := connectAgentPeer(t, ctx, p)
	pod := createPod(t, ctx, "exec-off", node, "sleep", "3600")
	// The relay's watch for the node has the pod once it synced it.
	for synced := false; !synced; {
		select {
		case s := <-ap.syncs:
			for _, o := range s.Upserts {
				synced = synced || o.Name == pod.Name
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the pod never reached the node's sync")
		}
	}
	ap.ws.Close(websocket.StatusNormalClosure, "going offline")
	ap.cancel()

	start := time.Now()
	out := waitOut(t, kubectlAsync(ctx, "exec", "-n", ns, pod.Name, "--", "true"))
	took := time.Since(start)
	t.Logf("kubectl exec on an offline node (%s): %s", took.Round(time.Millisecond), strings.TrimSpace(out))
	if !strings.HasPrefix(out, "ERROR:") || !strings.Contains(out, "edge node is offline") {
		t.Errorf("kubectl exec on an offline node: %q; want a failure saying the node is offline", out)
	}
	if took > 15*time.Second {
		t.Errorf("kubectl exec on an offline node took %s", took)
	}
}
