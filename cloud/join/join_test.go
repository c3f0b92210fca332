package join

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"

	"outpost.dev/cloud/identity"
	"outpost.dev/cloud/nodes"
	"outpost.dev/cloud/pki"
	"outpost.dev/wire"
)

// secretMap is an in-memory kube-system. Update checks the
// resourceVersion as the API server does; a Secret put in the map directly
// starts at resourceVersion "".
type secretMap map[string]*corev1.Secret

// secretsMu guards every secretMap: the concurrent-join test updates one
// from several requests at once.
var secretsMu sync.Mutex

func (m secretMap) Get(_ context.Context, name string, _ metav1.GetOptions) (*corev1.Secret, error) {
	secretsMu.Lock()
	defer secretsMu.Unlock()
	if s, ok := m[name]; ok {
		return s.DeepCopy(), nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
}

func (m secretMap) Create(_ context.Context, s *corev1.Secret, _ metav1.CreateOptions) (*corev1.Secret, error) {
	secretsMu.Lock()
	defer secretsMu.Unlock()
	if _, ok := m[s.Name]; ok {
		return nil, apierrors.NewAlreadyExists(schema.GroupResource{Resource: "secrets"}, s.Name)
	}
	m[s.Name] = s.DeepCopy()
	return s, nil
}

func (m secretMap) Update(_ context.Context, s *corev1.Secret, _ metav1.UpdateOptions) (*corev1.Secret, error) {
	secretsMu.Lock()
	defer secretsMu.Unlock()
	cur, ok := m[s.Name]
	if !ok {
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, s.Name)
	}
	if s.ResourceVersion != cur.ResourceVersion {
		return nil, apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, s.Name, errors.New("the object has been modified"))
	}
	n, _ := strconv.Atoi(cur.ResourceVersion)
	upd := s.DeepCopy()
	upd.ResourceVersion = strconv.Itoa(n + 1)
	m[s.Name] = upd
	return upd.DeepCopy(), nil
}

type nodeMap map[string]*corev1.Node

func (m nodeMap) Get(_ context.Context, name string, _ metav1.GetOptions) (*corev1.Node, error) {
	if n, ok := m[name]; ok {
		return n.DeepCopy(), nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "nodes"}, name)
}

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func tokenSecret(id, secret string, mod func(*corev1.Secret)) *corev1.Secret {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: TokenPrefix + id, Namespace: TokenNamespace},
		Type:       TokenSecretType,
		Data: map[string][]byte{
			keyTokenID:     []byte(id),
			keyTokenSecret: []byte(secret),
			keyExpiration:  []byte(now.Add(time.Hour).Format(time.RFC3339)),
			keyUsageJoin:   []byte("true"),
		},
	}
	if mod != nil {
		mod(s)
	}
	return s
}

func TestValidateToken(t *testing.T) {
	const id, secret = "abcdef", "0123456789abcdef"
	for _, tc := range []struct {
		name       string
		stored     *corev1.Secret // nil: no secret
		present    string         // secret presented
		wantResult string         // "" for valid
		wantReason string
		wantStatus int
	}{
		{"valid", tokenSecret(id, secret, nil), secret, "", "", 0},
		{"valid without expiration", tokenSecret(id, secret, func(s *corev1.Secret) { delete(s.Data, keyExpiration) }), secret, "", "", 0},
		{"wrong secret", tokenSecret(id, secret, nil), "ffffffffffffffff", ResultTokenRejected, "token rejected", 401},
		{"wrong secret on expired token says nothing more", tokenSecret(id, secret, func(s *corev1.Secret) {
			s.Data[keyExpiration] = []byte(now.Add(-time.Hour).Format(time.RFC3339))
		}), "ffffffffffffffff", ResultTokenRejected, "token rejected", 401},
		{"not found", nil, secret, ResultTokenNotFound, "token abcdef not found", 401},
		{"expired", tokenSecret(id, secret, func(s *corev1.Secret) {
			s.Data[keyExpiration] = []byte(now.Add(-2 * time.Hour).Format(time.RFC3339))
		}), secret, ResultTokenExpired, `token abcdef expired 2h0m0s ago: create a new one with "outpost-relay token create"`, 403},
		{"expires exactly now", tokenSecret(id, secret, func(s *corev1.Secret) {
			s.Data[keyExpiration] = []byte(now.Format(time.RFC3339))
		}), secret, ResultTokenExpired, "expired", 403},
		{"missing usage", tokenSecret(id, secret, func(s *corev1.Secret) { delete(s.Data, keyUsageJoin) }), secret, ResultTokenInvalid, "not marked for Outpost joins", 403},
		{"usage false", tokenSecret(id, secret, func(s *corev1.Secret) { s.Data[keyUsageJoin] = []byte("false") }), secret, ResultTokenInvalid, "not marked for Outpost joins", 403},
		{"a cluster bootstrap token", tokenSecret(id, secret, func(s *corev1.Secret) { s.Data[keyUsageAuth] = []byte("true") }), secret, ResultTokenInvalid, "cluster bootstrap token", 403},
		{"wrong type", tokenSecret(id, secret, func(s *corev1.Secret) { s.Type = corev1.SecretTypeOpaque }), secret, ResultTokenInvalid, `type "Opaque"`, 403},
		{"id mismatch", tokenSecret(id, secret, func(s *corev1.Secret) { s.Data[keyTokenID] = []byte("zzzzzz") }), secret, ResultTokenInvalid, "holds token-id", 403},
		{"malformed expiration", tokenSecret(id, secret, func(s *corev1.Secret) { s.Data[keyExpiration] = []byte("tomorrow") }), secret, ResultTokenInvalid, "unreadable expiration", 403},
		{"empty stored secret", tokenSecret(id, secret, func(s *corev1.Secret) { s.Data[keyTokenSecret] = nil }), "", ResultTokenRejected, "token rejected", 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := secretMap{}
			if tc.stored != nil {
				m[tc.stored.Name] = tc.stored
			}
			_, terr := ValidateToken(context.Background(), m, id, tc.present, now)
			if tc.wantResult == "" {
				if terr != nil {
					t.Fatalf("valid token refused: %v", terr)
				}
				return
			}
			if terr == nil {
				t.Fatal("token accepted")
			}
			if terr.Result != tc.wantResult || terr.Status != tc.wantStatus || !strings.Contains(terr.Reason, tc.wantReason) {
				t.Fatalf("got %d %s %q, want %d %s containing %q", terr.Status, terr.Result, terr.Reason, tc.wantStatus, tc.wantResult, tc.wantReason)
			}
			if tc.wantResult == ResultTokenRejected && terr.Reason != "token rejected" {
				t.Fatalf("wrong secret leaks %q", terr.Reason)
			}
		})
	}
}

func TestMalformedTokens(t *testing.T) {
	for _, tok := range []string{"", "abcdef", "abcdef.0123456789abcde", "ABCDEF.0123456789abcdef", "abcdef-0123456789abcdef", "abcde.f0123456789abcdef", "abcdef.0123456789abcdef\n"} {
		if _, _, err := wire.ParseToken(tok); err == nil {
			t.Errorf("ParseToken(%q) accepted", tok)
		}
	}
}

func TestCreateTokenRoundTrip(t *testing.T) {
	m := secretMap{}
	tok, err := CreateToken(context.Background(), m, TokenOptions{TTL: time.Hour, Description: "gateway 7"}, now)
	if err != nil {
		t.Fatal(err)
	}
	id, secret, err := wire.ParseToken(tok)
	if err != nil {
		t.Fatalf("created token %q does not parse: %v", tok, err)
	}
	sec := m[TokenPrefix+id]
	if sec == nil || sec.Type != TokenSecretType || string(sec.Data[keyDescription]) != "gateway 7" ||
		string(sec.Data[keyExpiration]) != now.Add(time.Hour).Format(time.RFC3339) {
		t.Fatalf("secret %+v", sec)
	}
	if _, terr := ValidateToken(context.Background(), m, id, secret, now); terr != nil {
		t.Fatalf("created token does not validate: %v", terr)
	}
	if _, terr := ValidateToken(context.Background(), m, id, secret, now.Add(2*time.Hour)); terr == nil || terr.Result != ResultTokenExpired {
		t.Fatalf("token valid after its ttl: %v", terr)
	}
}

type fixture struct {
	h       *Handler
	ca      *pki.CA
	secrets secretMap
	nodes   nodeMap
	ids     *identity.Registry
	srv     *httptest.Server
}

const goodToken = "abcdef.0123456789abcdef"

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ca, err := pki.Generate(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{ca: ca, secrets: secretMap{}, nodes: nodeMap{}}
	f.secrets[TokenPrefix+"abcdef"] = tokenSecret("abcdef", "0123456789abcdef", nil)
	f.ids = identity.New(fake.NewClientset(), "outpost-system")
	f.h, err = New(Config{Secrets: f.secrets, Nodes: f.nodes, Identities: f.ids, CA: ca, NodeCertValidity: time.Hour, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(f.h)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) join(t *testing.T, token string, body []byte) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", f.srv.URL+wire.PathJoin, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes()
}

func csr(t *testing.T) (string, *ecdsa.PrivateKey) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), key
}

func body(name, csr string) []byte {
	b, _ := json.Marshal(wire.JoinRequest{NodeName: name, CSR: csr})
	return b
}

func TestJoin(t *testing.T) {
	f := newFixture(t)
	c, key := csr(t)
	status, b := f.join(t, goodToken, body("gw-1", c))
	if status != 200 {
		t.Fatalf("status %d: %s", status, b)
	}
	var resp wire.JoinResponse
	if err := json.Unmarshal(b, &resp); err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(resp.Certificate))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "gw-1" || !key.PublicKey.Equal(cert.PublicKey) || resp.CA != string(f.ca.CertPEM) {
		t.Fatalf("certificate %v", cert.Subject)
	}
}

func TestJoinRefusals(t *testing.T) {
	f := newFixture(t)
	f.nodes["worker-1"] = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-1"}}
	f.nodes["gw-old"] = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gw-old", Labels: map[string]string{nodes.EdgeRoleLabel: ""}}}
	c, _ := csr(t)
	for _, tc := range []struct {
		name   string
		token  string
		body   []byte
		status int
		reason string
	}{
		{"no token", "", body("gw-1", c), 401, "Authorization: Bearer"},
		{"malformed token", "abc.def", body("gw-1", c), 401, "bootstrap token must look like"},
		{"unknown token", "zzzzzz.0123456789abcdef", body("gw-1", c), 401, "token zzzzzz not found"},
		{"wrong secret", "abcdef.ffffffffffffffff", body("gw-1", c), 401, "token rejected"},
		{"not json", goodToken, []byte("{"), 400, "not JSON"},
		{"too big", goodToken, bytes.Repeat([]byte(" "), wire.MaxJoinBody+10), 413, "larger than"},
		{"bad name", goodToken, body("GW_1", c), 400, "not valid"},
		{"long name", goodToken, body(strings.Repeat("a", 64), c), 400, "at most 63"},
		{"bad csr", goodToken, body("gw-1", "nope"), 400, "not PEM"},
		{"kubelet node", goodToken, body("worker-1", c), 409, "not an Outpost edge node"},
		{"edge node exists", goodToken, body("gw-old", c), 409, `node "gw-old" already exists as an edge node; a join cannot take over a node: to re-join it (revoking its current certificate), create a token bound to it with "outpost-relay token create --node gw-old --uses 1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, b := f.join(t, tc.token, tc.body)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, b)
			}
			if tc.reason == "" {
				return
			}
			var je wire.JoinError
			if err := json.Unmarshal(b, &je); err != nil || !strings.Contains(je.Reason, tc.reason) {
				t.Fatalf("reason %q (%v), want containing %q", je.Reason, err, tc.reason)
			}
		})
	}
}

func TestJoinCA(t *testing.T) {
	f := newFixture(t)
	f.secrets[TokenPrefix+"expird"] = tokenSecret("expird", "0123456789abcdef", func(s *corev1.Secret) {
		s.Data[keyExpiration] = []byte(now.Add(-time.Minute).Format(time.RFC3339))
	})
	get := func(q string) (int, []byte) {
		resp, err := http.Get(f.srv.URL + wire.PathJoinCA + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		return resp.StatusCode, buf.Bytes()
	}
	status, b := get("?token-id=abcdef")
	if status != 200 {
		t.Fatalf("status %d: %s", status, b)
	}
	var jc wire.JoinCA
	if err := json.Unmarshal(b, &jc); err != nil {
		t.Fatal(err)
	}
	if jc.CA != string(f.ca.CertPEM) || !wire.CheckCASignature("0123456789abcdef", []byte(jc.CA), jc.Signature) {
		t.Fatal("CA signature does not check with the token secret")
	}
	for q, want := range map[string]int{"": 400, "?token-id=ABC": 400, "?token-id=zzzzzz": 401, "?token-id=expird": 403} {
		if status, b := get(q); status != want {
			t.Errorf("%q: status %d, want %d: %s", q, status, want, b)
		}
	}
}

func Example() {
	// The relay mounts the join handler next to its WebSocket endpoint;
	// in tests it can run alone.
	ca, _ := pki.Generate(time.Now())
	h, _ := New(Config{Secrets: secretMap{}, Nodes: nodeMap{},
		Identities: identity.New(fake.NewClientset(), "outpost-system"), CA: ca, NodeCertValidity: 365 * 24 * time.Hour})
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, _ := http.Get(srv.URL + wire.PathJoinCA + "?token-id=abcdef")
	fmt.Println(resp.StatusCode)
	// Output: 401
}

func edgeNode(name string, connected bool) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{nodes.EdgeRoleLabel: ""}}}
	if connected {
		n.Status.Conditions = []corev1.NodeCondition{{Type: nodes.ConditionLinkReady, Status: corev1.ConditionTrue}}
	}
	return n
}

// putToken stores token id with secret "0123456789abcdef", bound to node
// (if not "") and limited to uses (if positive), and returns it.
func (f *fixture) putToken(id, node string, uses int) string {
	f.secrets[TokenPrefix+id] = tokenSecret(id, "0123456789abcdef", func(s *corev1.Secret) {
		s.Annotations = map[string]string{}
		if node != "" {
			s.Annotations[AnnotationNode] = node
		}
		if uses > 0 {
			s.Annotations[AnnotationUses] = strconv.Itoa(uses)
		}
	})
	return id + ".0123456789abcdef"
}

func reason(t *testing.T, b []byte) string {
	t.Helper()
	var je wire.JoinError
	if err := json.Unmarshal(b, &je); err != nil {
		t.Fatalf("answer %q is not a JoinError: %v", b, err)
	}
	if strings.Contains(je.Reason, "\n") {
		t.Errorf("reason is not one line: %q", je.Reason)
	}
	return je.Reason
}

// A join cannot take a name that belongs to a node: connected, or existing
// as an edge node. Only a token bound to the name can.
func TestJoinCannotTakeOverNode(t *testing.T) {
	f := newFixture(t)
	f.nodes["gw-live"] = edgeNode("gw-live", true)
	f.nodes["gw-idle"] = edgeNode("gw-idle", false)
	c, _ := csr(t)
	for name, want := range map[string]string{
		"gw-live": `node "gw-live" is connected to a relay now; a join cannot take over a node`,
		"gw-idle": `node "gw-idle" already exists as an edge node`,
	} {
		status, b := f.join(t, goodToken, body(name, c))
		if got := reason(t, b); status != http.StatusConflict || !strings.Contains(got, want) ||
			!strings.Contains(got, "outpost-relay token create --node "+name) {
			t.Errorf("%s: %d %q, want 409 containing %q and the token create hint", name, status, got, want)
		}
	}
	// A token bound to the node re-joins it, connected or not.
	for _, name := range []string{"gw-live", "gw-idle"} {
		tok := f.putToken("bound"+name[3:4], name, 1)
		if status, b := f.join(t, tok, body(name, c)); status != 200 {
			t.Errorf("bound token for %s: %d %s", name, status, b)
		}
	}
}

func TestBoundSingleUseToken(t *testing.T) {
	f := newFixture(t)
	tok := f.putToken("bound1", "gw-7", 1)
	c, _ := csr(t)
	status, b := f.join(t, tok, body("gw-8", c))
	if got := reason(t, b); status != http.StatusForbidden || !strings.Contains(got, `token bound1 is bound to node "gw-7" and cannot join "gw-8"`) {
		t.Fatalf("other name: %d %q", status, got)
	}
	if status, b := f.join(t, tok, body("gw-7", c)); status != 200 {
		t.Fatalf("first use: %d %s", status, b)
	}
	if got := f.secrets[TokenPrefix+"bound1"].Annotations[AnnotationUsed]; got != "1" {
		t.Errorf("%s = %q after one join, want 1", AnnotationUsed, got)
	}
	status, b = f.join(t, tok, body("gw-7", c))
	if got := reason(t, b); status != http.StatusForbidden || !strings.Contains(got, "token bound1 was made for 1 join(s) and has been used") {
		t.Fatalf("second use: %d %q", status, got)
	}
	// The refused name-mismatch attempt used nothing; a two-use token
	// unbound to a name joins two different names, then no more.
	tok2 := f.putToken("twouse", "", 2)
	for i, name := range []string{"gw-a", "gw-b", "gw-c"} {
		status, _ := f.join(t, tok2, body(name, c))
		if want := map[bool]int{true: 200, false: 403}[i < 2]; status != want {
			t.Errorf("use %d (%s): status %d, want %d", i+1, name, status, want)
		}
	}
}

// Concurrent joins with one single-use token: the use is taken with an
// update carrying the resourceVersion read, so exactly one wins.
func TestSingleUseTokenConcurrentJoins(t *testing.T) {
	f := newFixture(t)
	tok := f.putToken("single", "gw-9", 1)
	const n = 8
	c, _ := csr(t)
	var wg sync.WaitGroup
	statuses := make(chan int, n)
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			status, _ := f.join(t, tok, body("gw-9", c))
			statuses <- status
		})
	}
	close(start)
	wg.Wait()
	close(statuses)
	won := 0
	for s := range statuses {
		switch s {
		case 200:
			won++
		case http.StatusForbidden:
		default:
			t.Errorf("unexpected status %d", s)
		}
	}
	if won != 1 {
		t.Fatalf("%d joins won a single-use token, want exactly 1", won)
	}
}

func TestCreateTokenBinding(t *testing.T) {
	m := secretMap{}
	tok, err := CreateToken(context.Background(), m, TokenOptions{TTL: time.Hour, Node: "gw-3", Uses: 1}, now)
	if err != nil {
		t.Fatal(err)
	}
	id, _, _ := wire.ParseToken(tok)
	a := m[TokenPrefix+id].Annotations
	if a[AnnotationNode] != "gw-3" || a[AnnotationUses] != "1" || a[AnnotationUsed] != "0" {
		t.Fatalf("annotations %v", a)
	}
	for _, o := range []TokenOptions{{TTL: time.Hour, Node: "GW_3"}, {TTL: time.Hour, Uses: -1}, {TTL: time.Hour, Uses: MaxTokenUses + 1}} {
		if _, err := CreateToken(context.Background(), m, o, now); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}

// A join records its certificate as the node's only one: the name is
// taken from then on, and a bound re-join replaces the certificate.
func TestJoinRecordsIdentity(t *testing.T) {
	f := newFixture(t)
	c, _ := csr(t)
	serialOf := func(b []byte) string {
		var resp wire.JoinResponse
		if err := json.Unmarshal(b, &resp); err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode([]byte(resp.Certificate))
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return identity.Serial(cert)
	}
	status, b := f.join(t, goodToken, body("gw-new", c))
	if status != 200 {
		t.Fatalf("%d %s", status, b)
	}
	first := serialOf(b)
	rec, err := f.ids.Fresh(context.Background(), "gw-new")
	if err != nil || rec == nil || !rec.Accepts(first) {
		t.Fatalf("record %+v (%v) does not accept the issued certificate", rec, err)
	}
	// Not connected yet, no Node: the name is taken all the same.
	status, b = f.join(t, goodToken, body("gw-new", c))
	if got := reason(t, b); status != http.StatusConflict || !strings.Contains(got, `node "gw-new" was joined before`) {
		t.Fatalf("second join: %d %q", status, got)
	}
	if err := f.ids.Revoke(context.Background(), "gw-new", "test"); err != nil {
		t.Fatal(err)
	}
	status, b = f.join(t, goodToken, body("gw-new", c))
	if got := reason(t, b); status != http.StatusConflict || !strings.Contains(got, "its certificates are revoked") {
		t.Fatalf("join after revoke: %d %q", status, got)
	}
	status, b = f.join(t, f.putToken("again1", "gw-new", 1), body("gw-new", c))
	if status != 200 {
		t.Fatalf("bound re-join: %d %s", status, b)
	}
	second := serialOf(b)
	rec, _ = f.ids.Fresh(context.Background(), "gw-new")
	if !rec.Accepts(second) || rec.Accepts(first) {
		t.Fatalf("after the re-join the record accepts %v, want only %s", rec.Serials, second)
	}
}
