package join

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/cloud/nodes"
)

// Bootstrap token Secrets, as kubeadm lays them out
// (k8s.io/cluster-bootstrap/token/api), so `kubeadm token list` shows ours.
const (
	TokenNamespace  = "kube-system"
	TokenPrefix     = "bootstrap-token-"
	TokenSecretType = corev1.SecretType("bootstrap.kubernetes.io/token")

	keyTokenID     = "token-id"
	keyTokenSecret = "token-secret"
	keyExpiration  = "expiration"
	// keyUsageJoin marks a token for Outpost joins. Outpost's tokens carry
	// it instead of kubeadm's usage-bootstrap-authentication: with that one
	// set, the API server itself accepts the token as a bootstrap
	// credential (group system:bootstrappers, which on kubeadm clusters may
	// request auto-approved kubelet client certificates), so a token meant
	// for one gateway would be a way into the cluster as any node.
	keyUsageJoin = "usage-outpost-join"
	// keyUsageAuth is kubeadm's mark; join refuses tokens that carry it.
	keyUsageAuth   = "usage-bootstrap-authentication"
	keyDescription = "description"
)

// Outpost's own fields of a bootstrap token Secret, beside kubeadm's. They
// are annotations, not data keys: Secret data keys cannot contain "/".
const (
	// AnnotationNode binds a token to one node name: it joins that name
	// only, and it is the one way to join a name that is already an edge
	// node (re-joining revokes that node's current certificate).
	AnnotationNode = "outpost.dev/node"
	// AnnotationUses is how many joins the token allows ("1": single use);
	// absent means any number until it expires.
	AnnotationUses = "outpost.dev/uses"
	// AnnotationUsed counts the joins made with it. The relay consumes a
	// use with an update carrying the resourceVersion it read, so two
	// concurrent joins cannot both take the last one.
	AnnotationUsed = "outpost.dev/used"
)

// MaxTokenUses bounds --uses; more is what an unlimited token is for.
const MaxTokenUses = 1000

// createHint ends every reason that a fresh token would cure.
const createHint = `create a new one with "outpost-relay token create"`

// SecretGetter reads Secrets from kube-system. client-go's
// CoreV1().Secrets("kube-system") satisfies it.
type SecretGetter interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Secret, error)
}

// TokenError is why a bootstrap token was refused. Reason is safe to show
// the caller; Result labels the join-attempt metric.
type TokenError struct {
	Status int
	Result string
	Reason string
}

func (e *TokenError) Error() string { return e.Reason }

// Results of a join attempt, as counted in metrics.
const (
	ResultOK            = "ok"
	ResultBadToken      = "token_malformed"
	ResultTokenNotFound = "token_not_found"
	ResultTokenRejected = "token_rejected"
	ResultTokenExpired  = "token_expired"
	ResultTokenInvalid  = "token_invalid"
	ResultBadRequest    = "bad_request"
	ResultBadCSR        = "bad_csr"
	ResultNameConflict  = "name_conflict"
	ResultNodeExists    = "node_exists"
	ResultTokenBound    = "token_bound"
	ResultTokenUsed     = "token_used_up"
	ResultRateLimited   = "rate_limited"
	ResultInternal      = "internal_error"
)

// getToken reads token id's Secret and checks that it is a bootstrap token
// Secret for that id.
func getToken(ctx context.Context, secrets SecretGetter, id string) (*corev1.Secret, *TokenError) {
	sec, err := secrets.Get(ctx, TokenPrefix+id, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, &TokenError{http.StatusUnauthorized, ResultTokenNotFound,
			fmt.Sprintf("token %s not found (it may have expired and been cleaned up): %s", id, createHint)}
	}
	if apierrors.IsTooManyRequests(err) {
		return nil, &TokenError{http.StatusTooManyRequests, ResultRateLimited,
			"too many joins at once on this relay; try again in a few seconds"}
	}
	if err != nil {
		return nil, &TokenError{http.StatusInternalServerError, ResultInternal,
			fmt.Sprintf("relay cannot read token %s from the API server; try again later", id)}
	}
	if sec.Type != TokenSecretType {
		return nil, &TokenError{http.StatusForbidden, ResultTokenInvalid,
			fmt.Sprintf("token %s: secret %s/%s has type %q, not %q: %s", id, TokenNamespace, sec.Name, sec.Type, TokenSecretType, createHint)}
	}
	if got := string(sec.Data[keyTokenID]); got != id {
		return nil, &TokenError{http.StatusForbidden, ResultTokenInvalid,
			fmt.Sprintf("token %s: secret %s/%s holds token-id %q: %s", id, TokenNamespace, sec.Name, got, createHint)}
	}
	return sec, nil
}

// usable checks that a token may be used at now: not expired, and marked
// for authentication.
func usable(sec *corev1.Secret, id string, now time.Time) *TokenError {
	if exp, ok := sec.Data[keyExpiration]; ok {
		t, err := time.Parse(time.RFC3339, string(exp))
		if err != nil {
			return &TokenError{http.StatusForbidden, ResultTokenInvalid,
				fmt.Sprintf("token %s has an unreadable expiration %q: %s", id, exp, createHint)}
		}
		if !now.Before(t) {
			return &TokenError{http.StatusForbidden, ResultTokenExpired,
				fmt.Sprintf("token %s expired %s ago: %s", id, now.Sub(t).Round(time.Second), createHint)}
		}
	}
	if string(sec.Data[keyUsageAuth]) == "true" {
		return &TokenError{http.StatusForbidden, ResultTokenInvalid,
			fmt.Sprintf("token %s is a cluster bootstrap token (%s is \"true\"), which the API server accepts too, so Outpost does not use it to join: %s", id, keyUsageAuth, createHint)}
	}
	if string(sec.Data[keyUsageJoin]) != "true" {
		return &TokenError{http.StatusForbidden, ResultTokenInvalid,
			fmt.Sprintf("token %s is not marked for Outpost joins (%s is not \"true\"): %s", id, keyUsageJoin, createHint)}
	}
	if len(sec.Data[keyTokenSecret]) == 0 {
		return &TokenError{http.StatusForbidden, ResultTokenInvalid,
			fmt.Sprintf("token %s has no token-secret: %s", id, createHint)}
	}
	if _, err := tokenNode(sec); err != nil {
		return &TokenError{http.StatusForbidden, ResultTokenInvalid, fmt.Sprintf("token %s: %v: %s", id, err, createHint)}
	}
	uses, used, err := tokenUses(sec)
	if err != nil {
		return &TokenError{http.StatusForbidden, ResultTokenInvalid, fmt.Sprintf("token %s: %v: %s", id, err, createHint)}
	}
	if uses > 0 && used >= uses {
		return usedUp(id, uses)
	}
	return nil
}

func usedUp(id string, uses int) *TokenError {
	return &TokenError{http.StatusForbidden, ResultTokenUsed,
		fmt.Sprintf("token %s was made for %d join(s) and has been used: %s", id, uses, createHint)}
}

// tokenNode is the node name a token is bound to, "" for none.
func tokenNode(sec *corev1.Secret) (string, error) {
	n, ok := sec.Annotations[AnnotationNode]
	if !ok {
		return "", nil
	}
	if err := nodes.CheckName(n); err != nil {
		return "", fmt.Errorf("annotation %s: %w", AnnotationNode, err)
	}
	return n, nil
}

// tokenUses reads the use limit (0: unlimited) and the uses so far.
func tokenUses(sec *corev1.Secret) (uses, used int, err error) {
	num := func(key string) (int, error) {
		v, ok := sec.Annotations[key]
		if !ok {
			return 0, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > MaxTokenUses {
			return 0, fmt.Errorf("annotation %s is %q, not a count from 0 to %d", key, v, MaxTokenUses)
		}
		return n, nil
	}
	if uses, err = num(AnnotationUses); err != nil {
		return 0, 0, err
	}
	if _, ok := sec.Annotations[AnnotationUses]; ok && uses == 0 {
		return 0, 0, fmt.Errorf("annotation %s is 0: such a token can never join", AnnotationUses)
	}
	if used, err = num(AnnotationUsed); err != nil {
		return 0, 0, err
	}
	return uses, used, nil
}

// SecretUpdater updates Secrets in kube-system. client-go's
// CoreV1().Secrets("kube-system") satisfies it.
type SecretUpdater interface {
	SecretGetter
	Update(ctx context.Context, s *corev1.Secret, opts metav1.UpdateOptions) (*corev1.Secret, error)
}

// consume takes one use of a token with a use limit, sec being the Secret
// as ValidateToken read it. The update carries sec's resourceVersion: when
// another join updated the Secret first, it reads the Secret again (from
// the API server, not a cache) and tries once more while uses are left, so
// two concurrent joins never both take the last use. Tokens without a
// limit are not written.
func consume(ctx context.Context, secrets SecretUpdater, sec *corev1.Secret, id string, now time.Time) *TokenError {
	for attempt := 0; ; attempt++ {
		uses, used, err := tokenUses(sec)
		if err != nil {
			return &TokenError{http.StatusForbidden, ResultTokenInvalid, fmt.Sprintf("token %s: %v: %s", id, err, createHint)}
		}
		if uses == 0 {
			return nil
		}
		if used >= uses {
			return usedUp(id, uses)
		}
		upd := sec.DeepCopy()
		upd.Annotations[AnnotationUsed] = strconv.Itoa(used + 1)
		_, err = secrets.Update(ctx, upd, metav1.UpdateOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsConflict(err) || attempt >= 5 {
			return &TokenError{http.StatusServiceUnavailable, ResultInternal,
				fmt.Sprintf("relay cannot record the use of token %s in the API server; try again later", id)}
		}
		fresh, terr := getToken(ctx, secrets, id)
		if terr != nil {
			return terr
		}
		if terr := usable(fresh, id, now); terr != nil {
			return terr
		}
		sec = fresh
	}
}

// lookupToken returns the Secret of a token that may be used now, without
// looking at the secret half; PathJoinCA needs exactly that.
func lookupToken(ctx context.Context, secrets SecretGetter, id string, now time.Time) (*corev1.Secret, *TokenError) {
	sec, terr := getToken(ctx, secrets, id)
	if terr != nil {
		return nil, terr
	}
	if terr := usable(sec, id, now); terr != nil {
		return nil, terr
	}
	return sec, nil
}

// ValidateToken checks a presented bootstrap token "id.secret" against its
// Secret in kube-system: it must exist, have the bootstrap token type, its
// secret must match (compared in constant time), it must not be expired,
// must be usable for authentication and must have uses left. A wrong
// secret is reported only as "token rejected", before anything else is
// said about the token. It returns the Secret as read.
func ValidateToken(ctx context.Context, secrets SecretGetter, id, secret string, now time.Time) (*corev1.Secret, *TokenError) {
	sec, terr := getToken(ctx, secrets, id)
	if terr != nil {
		return nil, terr
	}
	stored := sec.Data[keyTokenSecret]
	if len(stored) == 0 || subtle.ConstantTimeCompare(stored, []byte(secret)) != 1 {
		return nil, rejected()
	}
	if terr := usable(sec, id, now); terr != nil {
		return nil, terr
	}
	return sec, nil
}

func rejected() *TokenError {
	return &TokenError{http.StatusUnauthorized, ResultTokenRejected, "token rejected"}
}

// TokenCreator creates Secrets in kube-system. client-go's
// CoreV1().Secrets("kube-system") satisfies it.
type TokenCreator interface {
	Create(ctx context.Context, s *corev1.Secret, opts metav1.CreateOptions) (*corev1.Secret, error)
}

// TokenOptions describe a new bootstrap token.
type TokenOptions struct {
	// TTL is how long the token may be used; it must be positive.
	TTL         time.Duration
	Description string
	// Node, if set, binds the token to that node name (AnnotationNode).
	Node string
	// Uses, if positive, limits the joins made with it (AnnotationUses).
	Uses int
}

// CreateToken makes a new bootstrap token and stores it as a kubeadm-style
// Secret. It returns "id.secret", the only copy of the secret outside the
// cluster.
func CreateToken(ctx context.Context, secrets TokenCreator, o TokenOptions, now time.Time) (string, error) {
	ttl := o.TTL
	if ttl <= 0 {
		return "", fmt.Errorf("token ttl must be positive, got %s", ttl)
	}
	if o.Node != "" {
		if err := nodes.CheckName(o.Node); err != nil {
			return "", fmt.Errorf("--node: %w", err)
		}
	}
	if o.Uses < 0 || o.Uses > MaxTokenUses {
		return "", fmt.Errorf("--uses %d: give 1 to %d, or 0 for any number until the token expires", o.Uses, MaxTokenUses)
	}
	for attempt := 0; ; attempt++ {
		id, secret := randomToken(6), randomToken(16)
		sec := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: TokenPrefix + id, Namespace: TokenNamespace},
			Type:       TokenSecretType,
			Data: map[string][]byte{
				keyTokenID:     []byte(id),
				keyTokenSecret: []byte(secret),
				keyExpiration:  []byte(now.Add(ttl).UTC().Format(time.RFC3339)),
				keyUsageJoin:   []byte("true"),
			},
		}
		if o.Description != "" {
			sec.Data[keyDescription] = []byte(o.Description)
		}
		if o.Node != "" || o.Uses > 0 {
			sec.Annotations = map[string]string{}
		}
		if o.Node != "" {
			sec.Annotations[AnnotationNode] = o.Node
		}
		if o.Uses > 0 {
			sec.Annotations[AnnotationUses] = strconv.Itoa(o.Uses)
			sec.Annotations[AnnotationUsed] = "0"
		}
		_, err := secrets.Create(ctx, sec, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) && attempt < 3 {
			continue // an id collision; 36^6 ids make a retry enough
		}
		if err != nil {
			return "", fmt.Errorf("create secret %s/%s: %w", TokenNamespace, sec.Name, err)
		}
		return id + "." + secret, nil
	}
}

const tokenAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// randomToken draws n characters of [a-z0-9] uniformly from crypto/rand.
func randomToken(n int) string {
	out := make([]byte, 0, n)
	var buf [32]byte
	for len(out) < n {
		if _, err := rand.Read(buf[:]); err != nil {
			panic(err) // crypto/rand does not fail on supported platforms
		}
		for _, b := range buf {
			// 252 = 7*36: rejecting larger bytes keeps the draw uniform.
			if b < 252 && len(out) < n {
				out = append(out, tokenAlphabet[int(b)%len(tokenAlphabet)])
			}
		}
	}
	return string(out)
}
