package relay

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The kubelet's webhook authentication and authorization, for the paths
// other clients than the API server call (metrics-server): a client
// certificate signed by the cluster CA (user its common name, groups its
// organizations) or a bearer token the API server confirms with a
// TokenReview; then a SubjectAccessReview for the node's subresource the
// path maps to, as the kubelet maps it (/metrics/* to nodes/metrics,
// /stats/* to nodes/stats). Answers are cached briefly, as the kubelet's
// webhook cache does (2 min allowed, 30 s denied; shorter here).

const (
	authCacheAllowed = 60 * time.Second
	authCacheDenied  = 15 * time.Second
	authCacheMax     = 1024
	// authTimeout bounds one review call.
	authTimeout = 5 * time.Second
)

// webhookSubresource is the nodes subresource a path is authorized as, or
// "" for a path only the API server's certificate may call.
func webhookSubresource(path string) string {
	switch {
	case path == "/metrics" || strings.HasPrefix(path, "/metrics/"):
		return "metrics"
	case path == "/stats" || strings.HasPrefix(path, "/stats/"):
		return "stats"
	}
	return ""
}

type authUser struct {
	name   string
	uid    string
	groups []string
	extra  map[string]authzv1.ExtraValue
}

type authEntry struct {
	user    *authUser // nil: the token was refused
	allowed bool
	reason  string
	until   time.Time
}

// authCache holds token reviews (by token hash) and access reviews (by
// user and attributes).
type authCache struct {
	mu sync.Mutex
	m  map[string]authEntry
}

func (ac *authCache) get(key string, now time.Time) (authEntry, bool) {
	ac.mu.Lock()
	defer ac.mu.Unlock()
	e, ok := ac.m[key]
	if !ok || now.After(e.until) {
		return authEntry{}, false
	}
	return e, true
}

func (ac *authCache) put(key string, e authEntry) {
	ac.mu.Lock()
	defer ac.mu.Unlock()
	if ac.m == nil || len(ac.m) >= authCacheMax {
		ac.m = map[string]authEntry{} // bounded: start again rather than grow
	}
	ac.m[key] = e
}

func ttl(ok bool) time.Duration {
	if ok {
		return authCacheAllowed
	}
	return authCacheDenied
}

// webhookAuth authenticates and authorizes r for the nodes subresource
// sub of the node it names. It answers the request and returns false
// when it may not go on.
func (s *Server) webhookAuth(w http.ResponseWriter, r *http.Request, sub string) bool {
	u, status, reason := s.authenticate(r)
	if status != 0 {
		http.Error(w, reason, status)
		return false
	}
	node, err := requestNode(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return false
	}
	ok, why, err := s.authorize(r.Context(), u, node, sub, strings.ToLower(r.Method))
	if err != nil {
		http.Error(w, "authorization failed; try again: "+err.Error(), http.StatusInternalServerError)
		return false
	}
	if !ok {
		s.log.Warn("kubelet API request forbidden", "remote", r.RemoteAddr, "user", u.name, "node", node, "subresource", sub, "reason", why)
		msg := fmt.Sprintf("Forbidden (user=%s, verb=%s, resource=nodes, subresource=%s)", u.name, strings.ToLower(r.Method), sub)
		if why != "" {
			msg += ": " + why
		}
		http.Error(w, msg, http.StatusForbidden)
		return false
	}
	return true
}

// authenticate finds who r is: its verified client certificate, else its
// bearer token.
func (s *Server) authenticate(r *http.Request) (*authUser, int, string) {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		sub := r.TLS.VerifiedChains[0][0].Subject
		return &authUser{name: sub.CommonName, groups: append([]string{"system:authenticated"}, sub.Organization...)}, 0, ""
	}
	h := r.Header.Get("Authorization")
	token, ok := strings.CutPrefix(h, "Bearer ")
	token = strings.TrimSpace(token)
	if !ok || token == "" {
		return nil, http.StatusUnauthorized, "Unauthorized: present a client certificate signed by the cluster CA or a bearer token"
	}
	sum := sha256.Sum256([]byte(token))
	key := "token/" + hex.EncodeToString(sum[:])
	now := time.Now()
	if e, ok := s.authCache.get(key, now); ok {
		if e.user == nil {
			return nil, http.StatusUnauthorized, "Unauthorized: " + e.reason
		}
		return e.user, 0, ""
	}
	ctx, cancel := context.WithTimeout(r.Context(), authTimeout)
	defer cancel()
	tr, err := s.cfg.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return nil, http.StatusInternalServerError, "token review failed; try again: " + err.Error()
	}
	if !tr.Status.Authenticated {
		why := tr.Status.Error
		if why == "" {
			why = "the token was not accepted"
		}
		s.authCache.put(key, authEntry{reason: why, until: now.Add(ttl(false))})
		return nil, http.StatusUnauthorized, "Unauthorized: " + why
	}
	u := &authUser{name: tr.Status.User.Username, uid: tr.Status.User.UID, groups: tr.Status.User.Groups}
	if len(tr.Status.User.Extra) > 0 {
		u.extra = map[string]authzv1.ExtraValue{}
		for k, v := range tr.Status.User.Extra {
			u.extra[k] = authzv1.ExtraValue(v)
		}
	}
	s.authCache.put(key, authEntry{user: u, until: now.Add(ttl(true))})
	return u, 0, ""
}

// authorize asks the API server whether u may verb nodes/sub of node.
func (s *Server) authorize(ctx context.Context, u *authUser, node, sub, verb string) (bool, string, error) {
	groups := slices.Clone(u.groups)
	slices.Sort(groups)
	key := strings.Join([]string{"sar", u.name, u.uid, strings.Join(groups, ","), fmt.Sprint(u.extra), verb, sub, node}, "\x00")
	now := time.Now()
	if e, ok := s.authCache.get(key, now); ok {
		return e.allowed, e.reason, nil
	}
	ctx, cancel := context.WithTimeout(ctx, authTimeout)
	defer cancel()
	sar, err := s.cfg.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: u.name, UID: u.uid, Groups: u.groups, Extra: u.extra,
		ResourceAttributes: &authzv1.ResourceAttributes{Verb: verb, Resource: "nodes", Subresource: sub, Name: node},
	}}, metav1.CreateOptions{})
	if err != nil {
		return false, "", err
	}
	ok := sar.Status.Allowed && !sar.Status.Denied
	s.authCache.put(key, authEntry{allowed: ok, reason: sar.Status.Reason, until: now.Add(ttl(ok))})
	return ok, sar.Status.Reason, nil
}
