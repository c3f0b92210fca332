package pods

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"outpost.dev/cloud/asnode"
	"outpost.dev/wire"
)

// Service-account tokens, as a kubelet's token manager obtains them: one
// TokenRequest per serviceAccountToken projected source, for the pod's
// service account, with the source's audience (none: the API server's
// default) and expiry, bound to the pod by name and UID. They travel to
// the agent as one wire.PodTokens object per pod (KindToken, the pod's
// UID), apart from the pod, so a refresh resends only the tokens.
//
// The relay keeps nothing between connections. The object's version says
// when its tokens are due for a refresh ("<refresh unix>.<expiry
// unix>.<sources hash>"), so after a reconnect, on any replica, the
// agent's hello tells the relay whether the tokens it holds are still
// fresh; a version the relay cannot read, or one for other sources, is
// due at once. Tokens are never logged.

// Token defaults and bounds, as the kubelet's.
const (
	// DefaultTokenExpiration is a source's expirationSeconds when it has
	// none (the API server defaults it to the same value).
	DefaultTokenExpiration = 3600 * time.Second
	// tokenMaxTTL: a token is refreshed at most this long after issue,
	// whatever its lifetime (the kubelet's maxTTL).
	tokenMaxTTL = 24 * time.Hour
	// tokenConcurrency bounds the TokenRequests of one connection in
	// flight at once.
	tokenConcurrency = 4
	tokenBackoffMin  = time.Second
	tokenBackoffMax  = 2 * time.Minute
)

// tokenSource is one serviceAccountToken source of a pod.
type tokenSource struct {
	volume, path, audience string
	expiration             int64 // seconds
}

// tokenSources lists the serviceAccountToken sources of p's projected
// volumes, in spec order.
func tokenSources(p *corev1.Pod) []tokenSource {
	var out []tokenSource
	for i := range p.Spec.Volumes {
		v := &p.Spec.Volumes[i]
		if v.Projected == nil {
			continue
		}
		for _, s := range v.Projected.Sources {
			t := s.ServiceAccountToken
			if t == nil {
				continue
			}
			exp := int64(DefaultTokenExpiration / time.Second)
			if t.ExpirationSeconds != nil {
				exp = *t.ExpirationSeconds
			}
			out = append(out, tokenSource{volume: v.Name, path: t.Path, audience: t.Audience, expiration: exp})
		}
	}
	return out
}

// serviceAccount is the service account a pod's tokens are for.
func serviceAccount(p *corev1.Pod) string {
	if p.Spec.ServiceAccountName != "" {
		return p.Spec.ServiceAccountName
	}
	return "default"
}

// sourcesHash identifies what a pod's tokens were minted for, so that a
// version made for other sources is due at once.
func sourcesHash(sa string, srcs []tokenSource) string {
	h := sha256.New()
	fmt.Fprintf(h, "%q", sa)
	for _, s := range srcs {
		fmt.Fprintf(h, "|%q|%q|%q|%d", s.volume, s.path, s.audience, s.expiration)
	}
	return hex.EncodeToString(h.Sum(nil)[:6])
}

// tokenVersion encodes when a token object is due for a refresh, when its
// first token expires and what it was minted for.
func tokenVersion(refreshAt, expires time.Time, hash string) string {
	return strconv.FormatInt(refreshAt.Unix(), 10) + "." + strconv.FormatInt(expires.Unix(), 10) + "." + hash
}

// parseTokenVersion reads a version made by tokenVersion. It is input from
// the agent's hello: anything else is ok=false.
func parseTokenVersion(v string) (refreshAt, expires time.Time, hash string, ok bool) {
	parts := strings.Split(v, ".")
	if len(parts) != 3 || parts[2] == "" || len(parts[2]) > 32 {
		return time.Time{}, time.Time{}, "", false
	}
	r, err1 := strconv.ParseInt(parts[0], 10, 64)
	e, err2 := strconv.ParseInt(parts[1], 10, 64)
	if err1 != nil || err2 != nil || r <= 0 || e <= 0 || r > e {
		return time.Time{}, time.Time{}, "", false
	}
	return time.Unix(r, 0), time.Unix(e, 0), parts[2], true
}

// refreshTime is when a token must be replaced, as the kubelet decides:
// once 80 % of its lifetime has passed, or 24 hours after issue, whichever
// comes first. ttl is the lifetime the API server answered with (it may
// extend the real expiry of kube-api-access tokens, but states this one).
// A positive after moves the refresh earlier, to at most that long after
// issue (tests use it; the API server does not issue tokens for less than
// ten minutes).
func refreshTime(expires time.Time, ttl, after time.Duration) time.Time {
	iat := expires.Add(-ttl)
	at := expires.Add(-ttl / 5)
	if m := iat.Add(tokenMaxTTL); m.Before(at) {
		at = m
	}
	if after > 0 {
		if m := iat.Add(after); m.Before(at) {
			at = m
		}
	}
	return at
}

// errNotBound is a token request refused because the pod is not (or no
// longer) the one bound to the connection's node.
var errNotBound = errors.New("pod is not bound to this node")

// mintTokens obtains the tokens of pod uid for node, after reading the pod
// again: only a pod bound to node, with that UID, gets a token. The pod's
// name, namespace and service account come from that fresh read, made
// as the node: the Node authorizer answers Forbidden for a pod not bound
// to it, and lets it request tokens only for the service accounts of its
// own pods, which NodeRestriction binds to the pod named.
func mintTokens(ctx context.Context, c asnode.Client, node string, ns, name string, uid types.UID, after time.Duration) (obj wire.Object, refreshAt time.Time, err error) {
	gctx, cancel := context.WithTimeout(ctx, apiTimeout)
	p, err := c.CoreV1().Pods(ns).Get(gctx, name, metav1.GetOptions{})
	cancel()
	if apierrors.IsForbidden(err) {
		return obj, refreshAt, fmt.Errorf("%w: %v", errNotBound, err)
	}
	if err != nil {
		return obj, refreshAt, fmt.Errorf("read pod: %w", err)
	}
	if p.UID != uid || p.Spec.NodeName != node {
		return obj, refreshAt, errNotBound
	}
	srcs := tokenSources(p)
	if len(srcs) == 0 {
		return obj, refreshAt, errors.New("pod has no serviceAccountToken source")
	}
	sa := serviceAccount(p)
	tokens := &wire.PodTokens{}
	var firstExp time.Time
	for _, s := range srcs {
		var auds []string
		if s.audience != "" {
			auds = []string{s.audience}
		}
		exp := s.expiration
		tr := &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{
			Audiences:         auds,
			ExpirationSeconds: &exp,
			BoundObjectRef:    &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID},
		}}
		rctx, cancel := context.WithTimeout(ctx, apiTimeout)
		got, err := c.CoreV1().ServiceAccounts(p.Namespace).CreateToken(rctx, sa, tr, metav1.CreateOptions{})
		cancel()
		if err != nil {
			return obj, refreshAt, fmt.Errorf("token request for service account %s (volume %s, path %s): %w", sa, s.volume, s.path, err)
		}
		if got.Status.Token == "" || got.Status.ExpirationTimestamp.IsZero() {
			return obj, refreshAt, fmt.Errorf("token request for service account %s: empty answer", sa)
		}
		ttl := time.Duration(exp) * time.Second
		if got.Spec.ExpirationSeconds != nil && *got.Spec.ExpirationSeconds > 0 {
			ttl = time.Duration(*got.Spec.ExpirationSeconds) * time.Second
		}
		expires := got.Status.ExpirationTimestamp.Time
		if r := refreshTime(expires, ttl, after); refreshAt.IsZero() || r.Before(refreshAt) {
			refreshAt = r
		}
		if firstExp.IsZero() || expires.Before(firstExp) {
			firstExp = expires
		}
		tokens.Items = append(tokens.Items, wire.Token{Volume: s.volume, Path: s.path, Token: got.Status.Token, Expires: expires.Unix()})
	}
	// A refresh due within the second it was minted (a clock far off, or
	// a tiny test interval) must not spin.
	if floor := time.Now().Add(time.Second); refreshAt.Before(floor) {
		refreshAt = floor
	}
	obj = wire.Object{
		Kind: wire.KindToken, UID: string(p.UID), Namespace: p.Namespace, Name: p.Name,
		Version: tokenVersion(refreshAt, firstExp, sourcesHash(sa, srcs)),
		Token:   tokens,
	}
	if _, err := ObjectSize(&obj); err != nil {
		return wire.Object{}, time.Time{}, fmt.Errorf("tokens of pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	return obj, refreshAt, nil
}

// podToken is what the session knows of one pod's tokens.
type podToken struct {
	// obj is the token object the agent holds or is to get. Its Token body
	// is nil when only the version is known (from the hello): then it is
	// wanted only while the agent still holds that version.
	obj       *wire.Object
	refreshAt time.Time
	firstSeen time.Time
	minting   bool
	retryAt   time.Time
	backoff   time.Duration
	lastErr   string
}

// mintResult is the outcome of one mint, handed back to the session's
// next step.
type mintResult struct {
	uid       types.UID
	obj       wire.Object
	refreshAt time.Time
	err       error
}

// podTokens returns the token object pod p should have and whether p may
// be sent now: a pod the agent does not hold yet waits for its tokens, for
// at most the session's patience (then the agent reports why its
// containers cannot start). pending says a first mint for p is under way
// and within that patience. It starts a mint when the tokens are missing
// or due. p is bound to the node (the caller checked).
func (st *state) podTokens(p *corev1.Pod, podHeld bool) (obj *wire.Object, ready, pending bool) {
	srcs := tokenSources(p)
	if len(srcs) == 0 {
		return nil, true, false
	}
	now := time.Now()
	ref := wire.ObjectRef{Kind: wire.KindToken, UID: string(p.UID)}
	hash := sourcesHash(serviceAccount(p), srcs)
	e := st.tokens[p.UID]
	if e == nil {
		e = &podToken{firstSeen: now}
		setKey(&st.tokens, p.UID, e)
		if v, held := st.sent[ref]; held {
			// Keep what the agent holds until a new token replaces it: a
			// pod never loses its token because a refresh failed.
			e.obj = &wire.Object{Kind: wire.KindToken, UID: string(p.UID), Namespace: p.Namespace, Name: p.Name, Version: v}
			r, exp, h, ok := parseTokenVersion(v)
			// A fresh version refreshes when it says, unless that is
			// further away than any token the relay mints could say.
			if ok && h == hash && now.Before(exp) && r.Before(now.Add(tokenMaxTTL+time.Minute)) {
				e.refreshAt = r
			}
		}
	}
	if e.obj != nil && e.obj.Token == nil && st.sent[ref] != e.obj.Version {
		// The agent no longer holds the version this placeholder stands
		// for: there is nothing to keep.
		e.obj, e.refreshAt = nil, time.Time{}
	}
	if !e.minting && !now.Before(e.refreshAt) && !now.Before(e.retryAt) {
		st.startMint(p, e)
	}
	switch {
	case e.minting:
		// Results wake the session; so must the end of a new pod's wait.
		if t := e.firstSeen.Add(st.s.cfg.RefSyncTimeout); e.obj == nil && t.After(now) {
			st.wakeAt(t)
		}
	case now.Before(e.retryAt):
		st.wakeAt(e.retryAt)
	case e.obj != nil:
		st.wakeAt(e.refreshAt)
	}
	patient := now.Sub(e.firstSeen) < st.s.cfg.RefSyncTimeout
	ready = podHeld || e.obj != nil || p.DeletionTimestamp != nil || !patient
	pending = e.obj == nil && e.minting && patient
	if e.obj == nil && ready && !podHeld && e.lastErr != "" {
		st.s.cfg.Log.Warn("sending a pod without its service-account token; its containers wait for it",
			"pod", p.Namespace+"/"+p.Name, "err", e.lastErr)
	}
	return e.obj, ready, pending
}

// wakeAt makes the session run a pass no later than t.
func (st *state) wakeAt(t time.Time) {
	if !t.IsZero() && (st.tokenWake.IsZero() || t.Before(st.tokenWake)) {
		st.tokenWake = t
	}
}

// startMint requests p's tokens on a goroutine of its own, which lasts
// as long as the requests (at most tokenConcurrency run at once); the
// result comes back through st.minted, and wakes the session.
func (st *state) startMint(p *corev1.Pod, e *podToken) {
	e.minting = true
	node, after := st.s.cfg.Node, st.s.cfg.TokenRefreshAfter
	ns, name, uid := p.Namespace, p.Name, p.UID
	ctx := st.s.ctx()
	if st.mintSem == nil {
		st.mintSem = make(chan struct{}, tokenConcurrency)
	}
	sem := st.mintSem
	st.wg.Go(func() {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		obj, at, err := mintTokens(ctx, st.s.cfg.Client, node, ns, name, uid, after)
		<-sem
		st.mintMu.Lock()
		st.minted = append(st.minted, mintResult{uid: uid, obj: obj, refreshAt: at, err: err})
		st.mintMu.Unlock()
		st.notify()
	})
}

// collectMints takes the finished mints into the session's token state,
// and forgets the tokens of pods no longer live.
func (st *state) collectMints(live map[types.UID]bool) {
	st.mintMu.Lock()
	done := st.minted
	st.minted = nil
	st.mintMu.Unlock()
	now := time.Now()
	for _, r := range done {
		e := st.tokens[r.uid]
		if e == nil {
			continue
		}
		e.minting = false
		if r.err != nil {
			if st.s.ended() {
				return
			}
			e.backoff = min(max(2*e.backoff, tokenBackoffMin), tokenBackoffMax)
			e.retryAt = now.Add(e.backoff)
			e.lastErr = r.err.Error()
			st.s.cfg.Log.Warn("service-account token request failed; will retry", "pod_uid", string(r.uid),
				"err", r.err, "retry_in", e.backoff)
			continue
		}
		obj := r.obj
		e.obj, e.refreshAt, e.backoff, e.retryAt, e.lastErr = &obj, r.refreshAt, 0, time.Time{}, ""
		st.s.cfg.Log.Debug("service-account tokens obtained", "pod", obj.Namespace+"/"+obj.Name,
			"tokens", len(obj.Token.Items), "refresh_at", r.refreshAt.UTC().Format(time.RFC3339))
	}
	for uid := range st.tokens {
		if !live[uid] {
			delete(st.tokens, uid)
		}
	}
}
