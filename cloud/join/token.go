package join

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	keyUsageAuth   = "usage-bootstrap-authentication"
	keyDescription = "description"
)

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
	if string(sec.Data[keyUsageAuth]) != "true" {
		return &TokenError{http.StatusForbidden, ResultTokenInvalid,
			fmt.Sprintf("token %s is not marked for authentication (%s is not \"true\"): %s", id, keyUsageAuth, createHint)}
	}
	if len(sec.Data[keyTokenSecret]) == 0 {
		return &TokenError{http.StatusForbidden, ResultTokenInvalid,
			fmt.Sprintf("token %s has no token-secret: %s", id, createHint)}
	}
	return nil
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
// secret must match (compared in constant time), it must not be expired and
// must be usable for authentication. A wrong secret is reported only as
// "token rejected", before anything else is said about the token.
func ValidateToken(ctx context.Context, secrets SecretGetter, id, secret string, now time.Time) *TokenError {
	sec, terr := getToken(ctx, secrets, id)
	if terr != nil {
		return terr
	}
	stored := sec.Data[keyTokenSecret]
	if len(stored) == 0 || subtle.ConstantTimeCompare(stored, []byte(secret)) != 1 {
		return rejected()
	}
	return usable(sec, id, now)
}

func rejected() *TokenError {
	return &TokenError{http.StatusUnauthorized, ResultTokenRejected, "token rejected"}
}

// TokenCreator creates Secrets in kube-system. client-go's
// CoreV1().Secrets("kube-system") satisfies it.
type TokenCreator interface {
	Create(ctx context.Context, s *corev1.Secret, opts metav1.CreateOptions) (*corev1.Secret, error)
}

// CreateToken makes a new bootstrap token valid for ttl and stores it as a
// kubeadm-style Secret. It returns "id.secret", the only copy of the secret
// outside the cluster.
func CreateToken(ctx context.Context, secrets TokenCreator, ttl time.Duration, description string, now time.Time) (string, error) {
	if ttl <= 0 {
		return "", fmt.Errorf("token ttl must be positive, got %s", ttl)
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
				keyUsageAuth:   []byte("true"),
			},
		}
		if description != "" {
			sec.Data[keyDescription] = []byte(description)
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
