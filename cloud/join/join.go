// Package join serves the two HTTP endpoints a new edge node uses once, to
// turn a kubeadm-style bootstrap token into a client certificate:
//
//   - wire.PathJoinCA hands out the relay CA signed with the token's
//     secret, so an agent that knows only its token can trust the relay
//     (the kubeadm cluster-info idea);
//   - wire.PathJoin exchanges the token and a CSR for a node certificate.
//
// Tokens are the Secrets `kubeadm token create` and `outpost-relay token
// create` write in kube-system. Every refusal is a wire.JoinError whose
// reason says what to do next.
//
// A join never takes a name that belongs to a node: a Node of that name
// (an edge node, connected or not, or any other), or an identity record
// (cloud/identity). Only a token bound to the name (AnnotationNode) joins
// it again, which records the new certificate as the node's only one and
// so revokes the earlier ones. A token may be limited in uses
// (AnnotationUses), taken atomically. Nodes are looked up in a Cache, token
// Secrets read by name within a shared budget; every client address has a
// small token bucket.
package join

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/cloud/identity"
	"outpost.dev/cloud/nodes"
	"outpost.dev/cloud/pki"
	"outpost.dev/wire"
)

// NodeGetter reads Nodes. client-go's CoreV1().Nodes() satisfies it.
type NodeGetter interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Node, error)
}

// Identities reads and writes node identity records. *identity.Registry
// satisfies it.
type Identities interface {
	Get(ctx context.Context, node string) (*identity.Record, error)
	Issue(ctx context.Context, node, serial, nodeUID string, rejoin bool) error
}

// Config is what the join handlers need.
type Config struct {
	Secrets SecretUpdater // Secrets in kube-system
	Nodes   NodeGetter
	// Identities records each joined node's certificate (cloud/identity).
	Identities Identities
	CA         *pki.CA
	// NodeCertValidity is how long an issued node certificate lasts.
	NodeCertValidity time.Duration
	Log              *slog.Logger
	// Registerer receives the join attempt counter; nil registers nothing.
	Registerer prometheus.Registerer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// PerIPRate and PerIPBurst limit the requests of one client address
	// (a token bucket each); zero means DefaultPerIPRate and
	// DefaultPerIPBurst.
	PerIPRate  float64
	PerIPBurst int
}

// requestReadTimeout bounds reading one join request, body included; the
// server's own timeouts cannot, as the same server holds agent links open.
const requestReadTimeout = 30 * time.Second

// Handler serves wire.PathJoinCA and wire.PathJoin.
type Handler struct {
	cfg      Config
	attempts *prometheus.CounterVec
	mux      *http.ServeMux
	limit    *ipLimiter
}

// New builds the join handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Secrets == nil || cfg.Nodes == nil || cfg.Identities == nil || cfg.CA == nil {
		return nil, errors.New("join: Secrets, Nodes, Identities and CA are required")
	}
	if cfg.NodeCertValidity <= 0 {
		return nil, errors.New("join: NodeCertValidity must be positive")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PerIPRate <= 0 {
		cfg.PerIPRate = DefaultPerIPRate
	}
	if cfg.PerIPBurst <= 0 {
		cfg.PerIPBurst = DefaultPerIPBurst
	}
	h := &Handler{
		limit: newIPLimiter(cfg.PerIPRate, cfg.PerIPBurst, maxAddresses, cfg.Now),
		cfg:   cfg,
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_relay_join_attempts_total",
			Help: "Join and join-CA requests, by result.",
		}, []string{"endpoint", "result"}),
		mux: http.NewServeMux(),
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(h.attempts); err != nil {
			return nil, fmt.Errorf("join: register metrics: %w", err)
		}
	}
	h.mux.HandleFunc("GET "+wire.PathJoinCA, h.serveCA)
	h.mux.HandleFunc("POST "+wire.PathJoin, h.serveJoin)
	return h, nil
}

// ServeHTTP implements http.Handler. Each client address gets a small
// token bucket; a request beyond it is answered 429 without a lookup.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.limit.allow(clientIP(r)) {
		endpoint := "join"
		if r.URL.Path == wire.PathJoinCA {
			endpoint = "ca"
		}
		// Counted, not logged: a flood would flood the log too.
		h.attempts.WithLabelValues(endpoint, ResultRateLimited).Inc()
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(1/h.cfg.PerIPRate))))
		writeJSON(w, http.StatusTooManyRequests, wire.JoinError{Reason: "too many join requests from this address; try again in a few seconds"})
		return
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(requestReadTimeout))
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) serveCA(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("token-id")
	log := h.cfg.Log.With("remote", r.RemoteAddr, "token", id)
	if _, _, err := wire.ParseToken(id + ".0000000000000000"); err != nil {
		h.fail(w, log, "ca", http.StatusBadRequest, ResultBadToken,
			"token-id must be the 6 characters before the dot of a bootstrap token (a-z, 0-9)")
		return
	}
	sec, terr := lookupToken(r.Context(), h.cfg.Secrets, id, h.cfg.Now())
	if terr != nil {
		h.fail(w, log, "ca", terr.Status, terr.Result, terr.Reason)
		return
	}
	h.attempts.WithLabelValues("ca", ResultOK).Inc()
	writeJSON(w, http.StatusOK, wire.JoinCA{
		CA:        string(h.cfg.CA.CertPEM),
		Signature: wire.CASignature(string(sec.Data[keyTokenSecret]), h.cfg.CA.CertPEM),
	})
}

func (h *Handler) serveJoin(w http.ResponseWriter, r *http.Request) {
	log := h.cfg.Log.With("remote", r.RemoteAddr)
	bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		h.fail(w, log, "join", http.StatusUnauthorized, ResultBadToken,
			`no bootstrap token: send "Authorization: Bearer ID.SECRET"; `+createHint)
		return
	}
	id, secret, err := wire.ParseToken(strings.TrimSpace(bearer))
	if err != nil {
		h.fail(w, log, "join", http.StatusUnauthorized, ResultBadToken, err.Error())
		return
	}
	log = log.With("token", id)
	tokSec, terr := ValidateToken(r.Context(), h.cfg.Secrets, id, secret, h.cfg.Now())
	if terr != nil {
		h.fail(w, log, "join", terr.Status, terr.Result, terr.Reason)
		return
	}

	var req wire.JoinRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, wire.MaxJoinBody))
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.fail(w, log, "join", http.StatusRequestEntityTooLarge, ResultBadRequest,
				fmt.Sprintf("join request larger than %d bytes", wire.MaxJoinBody))
			return
		}
		h.fail(w, log, "join", http.StatusBadRequest, ResultBadRequest, "join request is not JSON: "+err.Error())
		return
	}
	log = log.With("node", req.NodeName)
	if err := nodes.CheckName(req.NodeName); err != nil {
		h.fail(w, log, "join", http.StatusBadRequest, ResultBadRequest, err.Error())
		return
	}
	csr, err := pki.ParseCSR([]byte(req.CSR))
	if err != nil {
		h.fail(w, log, "join", http.StatusBadRequest, ResultBadCSR, err.Error())
		return
	}
	bound, _ := tokenNode(tokSec) // usable checked it
	if bound != "" && bound != req.NodeName {
		h.fail(w, log, "join", http.StatusForbidden, ResultTokenBound,
			fmt.Sprintf("token %s is bound to node %q and cannot join %q: join as %s, or create a token for %s with \"outpost-relay token create --node %s\"",
				id, bound, req.NodeName, bound, req.NodeName, req.NodeName))
		return
	}
	state, err := h.nodeState(r.Context(), req.NodeName)
	if err != nil {
		log.Error("join: read node", "err", err)
		h.fail(w, log, "join", http.StatusServiceUnavailable, ResultInternal,
			"relay cannot read nodes from the API server; try again later")
		return
	}
	if state.notEdge {
		h.fail(w, log, "join", http.StatusConflict, ResultNameConflict,
			fmt.Sprintf("node %q already exists and is not an Outpost edge node (no %s label): choose another node name",
				req.NodeName, nodes.EdgeRoleLabel))
		return
	}
	if state.known() {
		if bound == "" {
			h.fail(w, log, "join", http.StatusConflict, ResultNodeExists,
				fmt.Sprintf("node %q %s; a join cannot take over a node: to re-join it (revoking its current certificate), create a token bound to it with \"outpost-relay token create --node %s --uses 1\", or choose another node name",
					req.NodeName, state.describe(), req.NodeName))
			return
		}
		log.Warn("re-joining a known node with a token bound to it; its earlier certificates are revoked",
			"state", state.describe())
	}
	if terr := consume(r.Context(), h.cfg.Secrets, tokSec, id, h.cfg.Now()); terr != nil {
		h.fail(w, log, "join", terr.Status, terr.Result, terr.Reason)
		return
	}
	cert, err := h.cfg.CA.SignNode(csr.PublicKey, req.NodeName, h.cfg.NodeCertValidity)
	if err != nil {
		log.Error("join: sign", "err", err)
		h.fail(w, log, "join", http.StatusInternalServerError, ResultInternal, "relay could not sign the certificate; try again later")
		return
	}
	// The new certificate becomes the node's only one: a re-join revokes
	// every earlier certificate of the node, on every replica.
	if err := h.cfg.Identities.Issue(r.Context(), req.NodeName, identity.Serial(cert), state.uid, bound != ""); err != nil {
		if errors.Is(err, identity.ErrTaken) {
			h.fail(w, log, "join", http.StatusConflict, ResultNodeExists,
				fmt.Sprintf("node %q was joined by another token a moment ago: choose another node name", req.NodeName))
			return
		}
		log.Error("join: record identity", "err", err)
		h.fail(w, log, "join", http.StatusServiceUnavailable, ResultInternal,
			"relay cannot record the node's certificate in the API server; try again later with a new token if this one was single-use")
		return
	}
	h.attempts.WithLabelValues("join", ResultOK).Inc()
	log.Info("node joined", "expires", cert.NotAfter.Format(time.RFC3339), "serial", identity.Serial(cert), "rejoin", state.known())
	writeJSON(w, http.StatusOK, wire.JoinResponse{
		NodeName:    req.NodeName,
		Certificate: string(pki.EncodeCert(cert)),
		CA:          string(h.cfg.CA.CertPEM),
	})
}

// nodeState is what the API server says about a node name at join.
type nodeState struct {
	notEdge   bool   // a Node of that name that is not an edge node
	edge      bool   // an edge Node of that name exists
	connected bool   // its EdgeLinkReady is True: an agent is on a relay now
	uid       string // the edge Node's UID
	recorded  bool   // the name has an identity record: it was joined
	revoked   bool   // ... and its certificates are revoked
}

// known says whether the name belongs to a node already.
func (s nodeState) known() bool { return s.edge || s.recorded }

func (s nodeState) describe() string {
	switch {
	case s.connected:
		return "is connected to a relay now"
	case s.edge:
		return "already exists as an edge node"
	case s.revoked:
		return "was joined before and its certificates are revoked"
	default:
		return "was joined before (its identity is recorded)"
	}
}

func (h *Handler) nodeState(ctx context.Context, name string) (nodeState, error) {
	var st nodeState
	n, err := h.cfg.Nodes.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return st, err
	case !nodes.IsEdge(n):
		st.notEdge = true
		return st, nil
	default:
		st.edge, st.uid = true, string(n.UID)
		for _, c := range n.Status.Conditions {
			if c.Type == nodes.ConditionLinkReady && c.Status == corev1.ConditionTrue {
				st.connected = true
			}
		}
	}
	rec, err := h.cfg.Identities.Get(ctx, name)
	if err != nil {
		return st, err
	}
	if rec != nil {
		st.recorded, st.revoked = true, !rec.Revoked.IsZero()
	}
	return st, nil
}

func (h *Handler) fail(w http.ResponseWriter, log *slog.Logger, endpoint string, status int, result, reason string) {
	h.attempts.WithLabelValues(endpoint, result).Inc()
	log.Warn("join refused", "endpoint", endpoint, "status", status, "result", result, "reason", reason)
	writeJSON(w, status, wire.JoinError{Reason: reason})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
