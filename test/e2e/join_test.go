package e2e

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	testpeer "outpost.dev/test/peer"
	"outpost.dev/wire"
)

// linkSession is the relay session named in the node's EdgeLinkReady
// condition: it changes whenever the agent's link is replaced.
func linkSession(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	n, err := stackClientNode(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range n.Status.Conditions {
		if c.Type == "EdgeLinkReady" && c.Status == corev1.ConditionTrue {
			return c.Message
		}
	}
	t.Fatalf("node %s is not connected: %v", name, n.Status.Conditions)
	return ""
}

// waitLeaseRenewed waits until node's Lease is renewed after since.
func waitLeaseRenewed(t *testing.T, ctx context.Context, node string, since time.Time) {
	t.Helper()
	deadline := time.Now().Add(4 * leaseDuration)
	for {
		l, err := st.CP.Client().CoordinationV1().Leases("kube-node-lease").Get(ctx, node, metav1.GetOptions{})
		if err == nil && l.Spec.RenewTime != nil && l.Spec.RenewTime.After(since) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease of %s not renewed after %s (err %v)", node, since.Format(time.RFC3339Nano), err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// A fresh token cannot join under the name of a connected node; the
// refusal is one line, and the node's link stays as it was.
func TestJoinCannotTakeOverConnectedNode(t *testing.T) {
	twoAgents(t)
	ctx := ctxFor(t, 2*time.Minute)
	session := linkSession(t, ctx, "edge-a")
	tok, err := st.CreateToken(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The real agent, with a state directory of its own, naming edge-a.
	_, res := st.RunJoin(ctx, "thief-of-edge-a", relay.URL, tok, "--node-name", "edge-a")
	msg := strings.TrimSpace(res.Stderr)
	if res.ExitCode == 0 {
		t.Fatalf("join as connected edge-a succeeded: %s", res.Stdout)
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("want a one-line reason, got:\n%s", msg)
	}
	for _, want := range []string{`node "edge-a" is connected to a relay now`, "outpost-relay token create --node edge-a"} {
		if !strings.Contains(msg, want) {
			t.Errorf("reason %q does not say %q", msg, want)
		}
	}
	refused := time.Now()
	waitLeaseRenewed(t, ctx, "edge-a", refused)
	if got := linkSession(t, ctx, "edge-a"); got != session {
		t.Errorf("edge-a's link was replaced after the refused join: %q, was %q", got, session)
	}
}

// A token bound to a node with one use joins that node once, and no other.
func TestNodeBoundSingleUseToken(t *testing.T) {
	needStack(t)
	ctx := ctxFor(t, 2*time.Minute)
	tok, err := st.CreateToken(ctx, time.Hour, "--node", "bound-1", "--uses", "1")
	if err != nil {
		t.Fatal(err)
	}
	wantRefused := func(name string, status int, reason string) {
		t.Helper()
		_, err := testpeer.JoinWithToken(ctx, relay, name, tok)
		var je *testpeer.JoinError
		if !errors.As(err, &je) || je.Status != status || !strings.Contains(je.Reason, reason) {
			t.Fatalf("join %s: %v, want HTTP %d saying %q", name, err, status, reason)
		}
	}
	wantRefused("bound-2", http.StatusForbidden, `is bound to node "bound-1" and cannot join "bound-2"`)
	p, err := testpeer.JoinWithToken(ctx, relay, "bound-1", tok)
	if err != nil {
		t.Fatalf("first use for its own node: %v", err)
	}
	if got := p.Cert.Leaf.Subject.CommonName; got != "bound-1" {
		t.Errorf("certificate for %q", got)
	}
	wantRefused("bound-1", http.StatusForbidden, "has been used")
	wantRefused("bound-2", http.StatusForbidden, "has been used")

	// The node, once connected, can be re-joined only with a token bound
	// to it.
	s, err := p.Connect(ctx, helloFor("bound-1"), heartbeatInterval/2, func(context.Context, wire.Frame) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Cancel()
	if err := st.WaitNodeReady(ctx, "bound-1", true, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	unbound, err := st.CreateToken(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, err = testpeer.JoinWithToken(ctx, relay, "bound-1", unbound)
	var je *testpeer.JoinError
	if !errors.As(err, &je) || je.Status != http.StatusConflict || !strings.Contains(je.Reason, "a join cannot take over a node") {
		t.Fatalf("unbound join of connected bound-1: %v", err)
	}
	again, err := st.CreateToken(ctx, time.Hour, "--node", "bound-1", "--uses", "1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testpeer.JoinWithToken(ctx, relay, "bound-1", again); err != nil {
		t.Fatalf("re-join with a token bound to the node: %v", err)
	}
}

// Joins racing for one single-use token: exactly one gets a certificate.
func TestSingleUseTokenConcurrentJoins(t *testing.T) {
	needStack(t)
	ctx := ctxFor(t, 2*time.Minute)
	tok, err := st.CreateToken(ctx, time.Hour, "--node", "race-1", "--uses", "1")
	if err != nil {
		t.Fatal(err)
	}
	const n = 6
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		won  int
		errs []error
	)
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			_, err := testpeer.JoinWithToken(ctx, relay, "race-1", tok)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				won++
			} else {
				errs = append(errs, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if won != 1 {
		t.Fatalf("%d of %d concurrent joins won a single-use token, want 1; refusals: %v", won, n, errs)
	}
	for _, err := range errs {
		var je *testpeer.JoinError
		if !errors.As(err, &je) || je.Status != http.StatusForbidden || !strings.Contains(je.Reason, "has been used") {
			t.Errorf("loser: %v, want 403 saying the token has been used", err)
		}
	}
}
