package pods

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"outpost.dev/wire"
)

// tokenAPI answers TokenRequests on a fake clientset as the API server
// would, and records them.
type tokenAPI struct {
	mu    sync.Mutex
	calls []tokenCall
	fail  error
}

type tokenCall struct {
	ns, sa string
	spec   authv1.TokenRequestSpec
}

func (a *tokenAPI) requests() []tokenCall {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]tokenCall(nil), a.calls...)
}

func (a *tokenAPI) setFail(err error) {
	a.mu.Lock()
	a.fail = err
	a.mu.Unlock()
}

// withTokens makes c answer TokenRequests.
func withTokens(c *fake.Clientset) (*fake.Clientset, *tokenAPI) {
	a := &tokenAPI{}
	c.PrependReactor("create", "serviceaccounts", func(act k8stesting.Action) (bool, runtime.Object, error) {
		ca, ok := act.(k8stesting.CreateActionImpl)
		if !ok || act.GetSubresource() != "token" {
			return false, nil, nil
		}
		tr := ca.GetObject().(*authv1.TokenRequest)
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.fail != nil {
			return true, nil, a.fail
		}
		a.calls = append(a.calls, tokenCall{ns: ca.Namespace, sa: ca.Name, spec: *tr.Spec.DeepCopy()})
		out := tr.DeepCopy()
		exp := int64(3600)
		if out.Spec.ExpirationSeconds != nil {
			exp = *out.Spec.ExpirationSeconds
		}
		out.Status = authv1.TokenRequestStatus{
			Token:               fmt.Sprintf("jwt-%s-%s-%d", ca.Namespace, tr.Spec.BoundObjectRef.Name, len(a.calls)),
			ExpirationTimestamp: metav1.NewTime(time.Now().Add(time.Duration(exp) * time.Second)),
		}
		return true, out, nil
	})
	return c, a
}

func withVolumes(vols ...corev1.Volume) func(*corev1.Pod) {
	return func(p *corev1.Pod) { p.Spec.Volumes = append(p.Spec.Volumes, vols...) }
}

func tokenUpsert(s wire.Sync, name string) *wire.Object {
	for i := range s.Upserts {
		if u := &s.Upserts[i]; u.Kind == wire.KindToken && u.Name == name {
			return u
		}
	}
	return nil
}

func startTokens(t *testing.T, client *fake.Clientset, held []wire.ObjectVersion, after time.Duration) (*recorder, *Session) {
	t.Helper()
	rec := &recorder{frames: make(chan wire.Sync, 16)}
	s := Start(context.Background(), Config{
		Client: client, Node: "edge-1", Send: rec.send, Held: held, TokenRefreshAfter: after,
		RefSyncTimeout: 2 * time.Second,
		Log:            slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	})
	t.Cleanup(s.Stop)
	return rec, s
}

// TestTokensMintedAsKubelet: the default kube-api-access source and a
// user-written one with an audience each get a TokenRequest for the pod's
// service account, bound to the pod, and travel in the initial sync.
func TestTokensMintedAsKubelet(t *testing.T) {
	vault := corev1.Volume{Name: "vault", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
		{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "vault", ExpirationSeconds: ptr(int64(7200)), Path: "vault-token"}},
	}}}}
	client, api := withTokens(fake.NewClientset(edgeNode("edge-1"),
		testPod("web", "edge-1", "1", func(p *corev1.Pod) {
			withVolumes(vault)(p)
			p.Spec.ServiceAccountName = "builder"
		}),
		testPod("nosa", "edge-1", "2", func(p *corev1.Pod) { p.Spec.Volumes = nil; p.Spec.Containers[0].VolumeMounts = nil })))
	rec, _ := startTokens(t, client, nil, 0)
	first := rec.next(t)
	if !equal(summary(first), "+pod/web@1", "+pod/nosa@2", "+token/web") {
		t.Fatalf("initial sync %v", summary(first))
	}
	calls := api.requests()
	if len(calls) != 2 {
		t.Fatalf("%d token requests, want 2: %+v", len(calls), calls)
	}
	for _, c := range calls {
		ref := c.spec.BoundObjectRef
		if c.ns != "default" || c.sa != "builder" || ref == nil || ref.Kind != "Pod" || ref.APIVersion != "v1" || ref.Name != "web" || ref.UID != "uid-web" {
			t.Errorf("request %+v: want service account default/builder bound to pod web (uid-web)", c)
		}
	}
	if a, e := calls[0].spec.Audiences, calls[0].spec.ExpirationSeconds; len(a) != 0 || e == nil || *e != 3607 {
		t.Errorf("kube-api-access request: audiences %v, expiration %v; want none (the API server's) and 3607", a, e)
	}
	if a, e := calls[1].spec.Audiences, calls[1].spec.ExpirationSeconds; len(a) != 1 || a[0] != "vault" || e == nil || *e != 7200 {
		t.Errorf("vault request: audiences %v, expiration %v", a, e)
	}
	tok := tokenUpsert(first, "web")
	if tok == nil || tok.UID != "uid-web" || tok.Namespace != "default" || len(tok.Token.Items) != 2 {
		t.Fatalf("token object %+v", tok)
	}
	it := tok.Token.Items
	if it[0].Volume != "kube-api-access-abcde" || it[0].Path != "token" || it[0].Token != "jwt-default-web-1" ||
		it[1].Volume != "vault" || it[1].Path != "vault-token" || it[1].Token != "jwt-default-web-2" {
		t.Errorf("token items %+v", it)
	}
	r, exp, _, ok := parseTokenVersion(tok.Version)
	if !ok {
		t.Fatalf("version %q does not parse", tok.Version)
	}
	// 80 % of the shorter lifetime (3607 s), the earlier expiry.
	if d := time.Until(r); d < 2870*time.Second || d > 2890*time.Second {
		t.Errorf("refresh in %v, want about 48 minutes (80%% of 3607 s)", d)
	}
	if d := time.Until(exp); d < 3600*time.Second || d > 3607*time.Second {
		t.Errorf("expiry in %v, want about 3607 s", d)
	}
	rec.quiet(t, 300*time.Millisecond)
}

// TestTokensRefresh: a token due for a refresh is replaced while connected;
// the pod is not resent.
func TestTokensRefresh(t *testing.T) {
	client, api := withTokens(fake.NewClientset(edgeNode("edge-1"), testPod("web", "edge-1", "1", nil)))
	rec, _ := startTokens(t, client, nil, time.Second)
	first := tokenUpsert(rec.next(t), "web")
	if first == nil {
		t.Fatal("no token in the initial sync")
	}
	d := rec.next(t)
	if !equal(summary(d), "+token/web") || d.Initial {
		t.Fatalf("refresh delta %v", summary(d))
	}
	second := tokenUpsert(d, "web")
	if second.Version == first.Version || second.Token.Items[0].Token == first.Token.Items[0].Token {
		t.Errorf("refresh kept version %q / token", second.Version)
	}
	if n := len(api.requests()); n != 2 {
		t.Errorf("%d token requests, want 2", n)
	}
}

// TestTokensFromHello: a relay that restarted learns from the hello's
// versions whether the agent's tokens are fresh: fresh ones are kept,
// due, unreadable or foreign ones replaced, never deleted first.
func TestTokensFromHello(t *testing.T) {
	pod := testPod("web", "edge-1", "1", nil)
	hash := sourcesHash("default", tokenSources(pod))
	now := time.Now()
	for _, tc := range []struct {
		name    string
		version string
		mint    bool
	}{
		{"fresh", tokenVersion(now.Add(time.Hour), now.Add(2*time.Hour), hash), false},
		{"due", tokenVersion(now.Add(-time.Minute), now.Add(time.Hour), hash), true},
		{"expired", tokenVersion(now.Add(-2*time.Hour), now.Add(-time.Hour), hash), true},
		{"other sources", tokenVersion(now.Add(time.Hour), now.Add(2*time.Hour), "0123456789ab"), true},
		{"refresh beyond any token", tokenVersion(now.Add(48*time.Hour), now.Add(72*time.Hour), hash), true},
		{"unreadable", "garbage", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, api := withTokens(fake.NewClientset(edgeNode("edge-1"), pod.DeepCopy()))
			rec, _ := startTokens(t, client, []wire.ObjectVersion{
				{Kind: wire.KindPod, UID: "uid-web", Version: "1"},
				{Kind: wire.KindToken, UID: "uid-web", Version: tc.version},
			}, 0)
			first := rec.next(t)
			if len(first.Deletes) > 0 {
				t.Fatalf("initial sync deletes %v", summary(first))
			}
			if !tc.mint {
				if len(first.Upserts) != 0 {
					t.Fatalf("initial sync %v, want nothing", summary(first))
				}
				rec.quiet(t, 300*time.Millisecond)
				if n := len(api.requests()); n != 0 {
					t.Fatalf("%d token requests for a fresh token", n)
				}
				return
			}
			// The pod is held: its new token may come with the initial
			// sync or right after it.
			got := tokenUpsert(first, "web")
			if got == nil {
				got = tokenUpsert(rec.next(t), "web")
			}
			if got == nil || got.Version == tc.version {
				t.Fatalf("no new token: %+v", got)
			}
		})
	}
}

// TestTokensOnlyForTheNode: an agent claiming to hold the token of a pod
// bound to another node gets a delete, and no token is ever requested for
// that pod; a failed request keeps the agent's token.
func TestTokensOnlyForTheNode(t *testing.T) {
	client, api := withTokens(fake.NewClientset(edgeNode("edge-1"), edgeNode("edge-2"),
		testPod("mine", "edge-1", "1", nil), testPod("theirs", "edge-2", "2", nil)))
	rec, _ := startTokens(t, client, []wire.ObjectVersion{
		{Kind: wire.KindToken, UID: "uid-theirs", Version: "1.2.abc"},
		{Kind: wire.KindPod, UID: "uid-theirs", Version: "2"},
	}, 0)
	first := rec.next(t)
	if !equal(summary(first), "+pod/mine@1", "+token/mine", "-pod/uid-theirs", "-token/uid-theirs") {
		t.Fatalf("initial sync %v", summary(first))
	}
	rec.quiet(t, 300*time.Millisecond)
	for _, c := range api.requests() {
		if c.spec.BoundObjectRef.Name != "mine" {
			t.Fatalf("token requested for %+v", c.spec.BoundObjectRef)
		}
	}
}

// TestMintChecksBinding: the pod is read again before each request; a pod
// of another node, or a newer pod of the same name, gets nothing.
func TestMintChecksBinding(t *testing.T) {
	client, api := withTokens(fake.NewClientset(testPod("web", "edge-2", "1", nil)))
	ctx := context.Background()
	if _, _, err := mintTokens(ctx, client, "edge-1", "default", "web", "uid-web", 0); !errors.Is(err, errNotBound) {
		t.Errorf("pod of edge-2 minted for edge-1: err %v", err)
	}
	if _, _, err := mintTokens(ctx, client, "edge-2", "default", "web", "uid-old", 0); !errors.Is(err, errNotBound) {
		t.Errorf("other UID minted: err %v", err)
	}
	if n := len(api.requests()); n != 0 {
		t.Fatalf("%d token requests", n)
	}
	obj, _, err := mintTokens(ctx, client, "edge-2", "default", "web", "uid-web", 0)
	if err != nil || obj.Token == nil || obj.Validate() != nil {
		t.Fatalf("bound pod: %+v, %v", obj, err)
	}
}

// TestTokensFailure: a pod new to the agent waits for its token, then is
// sent without it (the agent reports why its containers wait); a held
// token is kept while refreshes fail.
func TestTokensFailure(t *testing.T) {
	client, api := withTokens(fake.NewClientset(edgeNode("edge-1"), testPod("web", "edge-1", "1", nil)))
	api.setFail(errors.New("service account not found"))
	rec, _ := startTokens(t, client, nil, 0)
	start := time.Now()
	first := rec.next(t)
	if !first.Initial || len(first.Upserts) != 0 {
		t.Fatalf("initial sync %v, want the pod held back", summary(first))
	}
	d := rec.next(t)
	if !equal(summary(d), "+pod/web@1") || time.Since(start) < time.Second {
		t.Fatalf("after %v: %v", time.Since(start), summary(d))
	}
	api.setFail(nil)
	if d := rec.next(t); !equal(summary(d), "+token/web") {
		t.Fatalf("after recovery: %v", summary(d))
	}

	// Held and due, refresh failing: nothing is deleted.
	client2, api2 := withTokens(fake.NewClientset(edgeNode("edge-1"), testPod("web", "edge-1", "1", nil)))
	api2.setFail(errors.New("api down"))
	rec2, _ := startTokens(t, client2, []wire.ObjectVersion{
		{Kind: wire.KindPod, UID: "uid-web", Version: "1"},
		{Kind: wire.KindToken, UID: "uid-web", Version: "1.2.stale"},
	}, 0)
	if s := rec2.next(t); len(s.Upserts)+len(s.Deletes) != 0 {
		t.Fatalf("initial sync %v", summary(s))
	}
	rec2.quiet(t, 2500*time.Millisecond)
}

func TestRefreshTime(t *testing.T) {
	exp := time.Unix(1_000_000, 0)
	for _, tc := range []struct {
		ttl, after, before time.Duration // before: refresh this long before exp
	}{
		{ttl: time.Hour, before: 12 * time.Minute},
		{ttl: 10 * time.Minute, before: 2 * time.Minute},
		{ttl: 365 * 24 * time.Hour, before: 364 * 24 * time.Hour}, // 24 h after issue
		{ttl: time.Hour, after: 20 * time.Second, before: time.Hour - 20*time.Second},
		{ttl: time.Hour, after: 2 * time.Hour, before: 12 * time.Minute}, // later than 80 %: ignored
	} {
		if got := exp.Sub(refreshTime(exp, tc.ttl, tc.after)); got != tc.before {
			t.Errorf("ttl %v after %v: refresh %v before expiry, want %v", tc.ttl, tc.after, got, tc.before)
		}
	}
}

func TestTokenVersion(t *testing.T) {
	r, e := time.Unix(100, 0), time.Unix(200, 0)
	v := tokenVersion(r, e, "abc")
	gr, ge, h, ok := parseTokenVersion(v)
	if !ok || !gr.Equal(r) || !ge.Equal(e) || h != "abc" || len(v) > 64 {
		t.Fatalf("%q → %v %v %q %v", v, gr, ge, h, ok)
	}
	for _, bad := range []string{"", "1.2", "1.2.", "a.2.h", "1.b.h", "3.2.h", "-1.2.h", "1.2.h.x", "0.0.h", "1.2." + strings.Repeat("h", 40)} {
		if _, _, _, ok := parseTokenVersion(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

// FuzzParseTokenVersion: token versions come from agents' hellos.
func FuzzParseTokenVersion(f *testing.F) {
	f.Add(tokenVersion(time.Unix(100, 0), time.Unix(200, 0), "abc"))
	f.Add("1.2.x")
	f.Add("")
	f.Fuzz(func(t *testing.T, v string) {
		r, e, h, ok := parseTokenVersion(v)
		if ok && (r.After(e) || h == "" || len(h) > 32 || r.Unix() <= 0) {
			t.Fatalf("%q parsed as %v %v %q", v, r, e, h)
		}
	})
}
