package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	testpeer "outpost.dev/test/peer"
	"outpost.dev/test/stack"
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
	stack.WaitFor(t, ctx, 4*leaseDuration, "the lease of "+node+" renewed after "+since.Format(time.RFC3339Nano), func() (bool, string) {
		l, err := st.CP.Client().CoordinationV1().Leases("kube-node-lease").Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return l.Spec.RenewTime != nil && l.Spec.RenewTime.After(since), fmt.Sprintf("renewed %v", l.Spec.RenewTime)
	})
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
	if res.ExitCode == 0 {
		t.Fatalf("join as connected edge-a succeeded: %s", res.Stdout)
	}
	// The agent logs its CA check first; the reason is the one line after.
	var msg string
	for _, l := range strings.Split(strings.TrimSpace(res.Stderr), "\n") {
		if strings.HasPrefix(l, "outpost-agent: ") {
			if msg != "" {
				t.Errorf("more than one error line:\n%s", res.Stderr)
			}
			msg = l
		}
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

// revokeNode runs outpost-relay node revoke as an administrator would.
func revokeNode(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	out, err := exec.CommandContext(ctx, filepath.Join(st.BinDir, "outpost-relay"), "node", "revoke",
		"--kubeconfig", st.CP.Kubeconfig, "--reason", "test revocation", name).CombinedOutput()
	if err != nil {
		t.Fatalf("node revoke: %v: %s", err, out)
	}
}

// at is p connecting to relay r instead of the one it joined through.
func at(p *testpeer.Peer, r *stack.Relay) *testpeer.Peer {
	q := *p
	q.Addr = r.Addr
	return &q
}

// wantRefusedAt checks that p's certificate is refused by relay r, before
// any hello.
func wantRefusedAt(t *testing.T, ctx context.Context, p *testpeer.Peer, r *stack.Relay) {
	t.Helper()
	c, err := at(p, r).Dial(ctx)
	if err == nil {
		c.CloseNow()
		t.Fatalf("relay %s accepted the certificate of %s", r.Addr, p.Name)
	}
	if !strings.Contains(err.Error(), "403") {
		t.Fatalf("relay %s: %v, want HTTP 403", r.Addr, err)
	}
}

var (
	secondRelayOnce sync.Once
	secondRelay     *stack.Relay
	secondRelayErr  error
)

// relay2 is a second relay replica on the same control plane.
func relay2(t *testing.T) *stack.Relay {
	t.Helper()
	secondRelayOnce.Do(func() { secondRelay, secondRelayErr = st.StartRelay(ctxFor(t, 2*time.Minute)) })
	if secondRelayErr != nil {
		t.Fatal(secondRelayErr)
	}
	return secondRelay
}

// waitClosed waits until the relay closed a peer session, and says how
// long after start that was.
func waitClosed(t *testing.T, s *testpeer.Session, what string, start time.Time, within time.Duration) time.Duration {
	t.Helper()
	select {
	case <-s.Done:
		return time.Since(start)
	case <-time.After(within):
		t.Fatalf("%s: link still open after %v", what, within)
		return 0
	}
}

// A revoked node's certificate is refused by every relay replica within
// seconds and its live link is closed; re-joining needs a token bound to
// the node.
func TestRevokedNodeRefusedByEveryRelay(t *testing.T) {
	needStack(t)
	r2 := relay2(t)
	ctx := ctxFor(t, 3*time.Minute)
	p := joinPeer(t, ctx, "revoke-1").Peer
	s, err := p.Connect(ctx, helloFor("revoke-1"), heartbeatInterval/2, func(context.Context, wire.Frame) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Cancel()
	if err := st.WaitNodeReady(ctx, "revoke-1", true, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	// Connected to the second replica too, to see both refuse.
	s2, err := at(p, r2).Connect(ctx, helloFor("revoke-1"), heartbeatInterval/2, func(context.Context, wire.Frame) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Cancel()

	start := time.Now()
	revokeNode(t, ctx, "revoke-1")
	t.Logf("link on relay 1 closed %v after the revoke started", waitClosed(t, s, "relay 1", start, 10*time.Second))
	t.Logf("link on relay 2 closed %v after the revoke started", waitClosed(t, s2, "relay 2", start, 10*time.Second))
	wantRefusedAt(t, ctx, p, relay)
	wantRefusedAt(t, ctx, p, r2)

	unbound, err := st.CreateToken(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, err = testpeer.JoinWithToken(ctx, relay, "revoke-1", unbound)
	var je *testpeer.JoinError
	if !errors.As(err, &je) || je.Status != http.StatusConflict || !strings.Contains(je.Reason, "token create --node revoke-1") {
		t.Fatalf("unbound re-join of a revoked node: %v", err)
	}
	bound, err := st.CreateToken(ctx, time.Hour, "--node", "revoke-1", "--uses", "1")
	if err != nil {
		t.Fatal(err)
	}
	p2, err := testpeer.JoinWithToken(ctx, r2, "revoke-1", bound)
	if err != nil {
		t.Fatalf("bound re-join: %v", err)
	}
	s3, err := at(p2, relay).Connect(ctx, helloFor("revoke-1"), heartbeatInterval/2, func(context.Context, wire.Frame) bool { return true })
	if err != nil {
		t.Fatalf("the re-joined node's new certificate: %v", err)
	}
	s3.Cancel()
	wantRefusedAt(t, ctx, p, relay) // the old certificate stays revoked
}

// Deleting an edge Node revokes its certificates on every replica, closes
// its link, and no relay creates the Node again from the old certificate.
func TestDeletedNodeCertificateRefused(t *testing.T) {
	needStack(t)
	r2 := relay2(t)
	ctx := ctxFor(t, 3*time.Minute)
	p := joinPeer(t, ctx, "delete-1").Peer
	s, err := at(p, r2).Connect(ctx, helloFor("delete-1"), heartbeatInterval/2, func(context.Context, wire.Frame) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Cancel()
	if err := st.WaitNodeReady(ctx, "delete-1", true, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := st.CP.Client().CoreV1().Nodes().Delete(ctx, "delete-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("link closed %v after the delete", waitClosed(t, s, "relay 2", start, 10*time.Second))
	wantRefusedAt(t, ctx, p, relay)
	wantRefusedAt(t, ctx, p, r2)
	// Refused before any hello, so nothing could write it; and the link
	// that was open is gone, so nothing is left that could.
	if _, err := stackClientNode(ctx, "delete-1"); !apierrors.IsNotFound(err) {
		t.Fatalf("deleted node: %v, want NotFound", err)
	}
}
