// Package join turns a bootstrap token into the node's identity: a private
// key generated on the gateway, a client certificate signed by the relay,
// and the CA that proves the relay is the right one.
//
// Without a CA file the agent trusts nothing yet, so it fetches the relay's
// CA over unverified TLS and accepts it only if it carries an HMAC keyed
// with the token's secret, which only the token's issuer knows (kubeadm's
// cluster-info discovery). An optional pin of the CA's public key guards
// against a leaked token. Everything after that runs over TLS verified
// against that CA.
package join

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"outpost.dev/agent/store"
	"outpost.dev/wire"
)

// Options are the inputs of a join.
type Options struct {
	// Server is the relay, https://HOST:PORT.
	Server string
	// Token is the bootstrap token, ID.SECRET.
	Token    string
	NodeName string
	// CAPEM, when set, is trusted as the relay's CA and nothing is fetched.
	CAPEM []byte
	// CACertHashes pin the CA: "sha256:<hex>" of a CA certificate's
	// SubjectPublicKeyInfo, as kubeadm prints it. Any one must match.
	CACertHashes []string
	Log          *slog.Logger
}

// requestTimeout bounds each HTTP exchange; a join on a slow cellular link
// still completes well within it.
const requestTimeout = 30 * time.Second

// Join runs the join against the relay and returns the identity to store.
// Errors say what went wrong and what to do; they do not start with
// "join:", the caller adds that.
func Join(ctx context.Context, o Options) (store.Identity, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	id, secret, err := wire.ParseToken(o.Token)
	if err != nil {
		return store.Identity{}, fmt.Errorf("--token: %w", err)
	}
	base, err := url.Parse(o.Server)
	if err != nil || base.Scheme != "https" || base.Host == "" {
		return store.Identity{}, fmt.Errorf("--server %q must look like https://HOST:PORT", o.Server)
	}
	base.Path, base.RawQuery = "", ""
	pins, err := parsePins(o.CACertHashes)
	if err != nil {
		return store.Identity{}, err
	}

	caPEM := o.CAPEM
	if caPEM == nil {
		caPEM, err = fetchCA(ctx, base, id, secret)
		if err != nil {
			return store.Identity{}, err
		}
		log.Info("relay CA verified with the token's secret", "server", base.String())
	}
	roots, cas, err := parseCAs(caPEM)
	if err != nil {
		return store.Identity{}, err
	}
	if len(pins) > 0 {
		if err := checkPins(cas, pins); err != nil {
			return store.Identity{}, err
		}
	} else if o.CAPEM == nil {
		log.Warn("relay CA trusted on the token alone; pass --ca-cert-hash to pin it", "ca-cert-hash", SPKIHash(cas[0]))
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return store.Identity{}, fmt.Errorf("generate key: %w", err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		// The kubelet's naming, so the relay and RBAC can treat the node
		// the way Kubernetes treats any node.
		Subject: pkix.Name{CommonName: "system:node:" + o.NodeName, Organization: []string{"system:nodes"}},
	}, key)
	if err != nil {
		return store.Identity{}, fmt.Errorf("create CSR: %w", err)
	}
	reqBody, _ := json.Marshal(wire.JoinRequest{
		NodeName: o.NodeName,
		CSR:      string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})),
	})
	c := client(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
	u := *base
	u.Path = wire.PathJoin
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(reqBody))
	if err != nil {
		return store.Identity{}, err
	}
	req.Header.Set("Authorization", "Bearer "+o.Token)
	req.Header.Set("Content-Type", "application/json")
	var resp wire.JoinResponse
	if err := do(c, req, base, &resp); err != nil {
		return store.Identity{}, err
	}

	certPEM, err := checkCert(resp, key, roots, o.NodeName)
	if err != nil {
		return store.Identity{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return store.Identity{}, err
	}
	name := o.NodeName
	if resp.NodeName != "" {
		name = resp.NodeName
	}
	return store.Identity{
		NodeName: name,
		Server:   base.String(),
		KeyPEM:   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		CertPEM:  certPEM,
		// The CA that verified the relay, not resp.CA: the link needs the
		// CA of the relay's serving certificate, which is what was proven.
		CAPEM: caPEM,
	}, nil
}

func fetchCA(ctx context.Context, base *url.URL, id, secret string) ([]byte, error) {
	// Unverified on purpose: the answer is checked with the token's secret.
	c := client(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	u := *base
	u.Path = wire.PathJoinCA
	u.RawQuery = url.Values{"token-id": {id}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	var ca wire.JoinCA
	if err := do(c, req, base, &ca); err != nil {
		return nil, err
	}
	if !wire.CheckCASignature(secret, []byte(ca.CA), ca.Signature) {
		return nil, fmt.Errorf("the CA offered by %s is not signed with this token's secret: "+
			"either the token is for another relay or something is intercepting the connection; "+
			"check --server and --token, or pass the relay's CA with --ca-file", base.Host)
	}
	return []byte(ca.CA), nil
}

func client(tc *tls.Config) *http.Client {
	return &http.Client{
		Timeout: requestTimeout,
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			TLSClientConfig:     tc,
			TLSHandshakeTimeout: 10 * time.Second,
			ForceAttemptHTTP2:   false,
		},
		// A redirect would carry the token somewhere unverified.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// do runs req and decodes a 200 answer into out, or turns the relay's
// JoinError into an error. Reads are bounded by wire.MaxJoinBody.
func do(c *http.Client, req *http.Request, base *url.URL, out any) error {
	resp, err := c.Do(req)
	if err != nil {
		var cve *tls.CertificateVerificationError
		if errors.As(err, &cve) {
			return fmt.Errorf("the relay's certificate is not signed by the CA it published (%v): check --server, or pass the right --ca-file", cve.Err)
		}
		return fmt.Errorf("cannot reach relay at %s (%v): check --server and that the relay is running", base.Host, unwrapURL(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, wire.MaxJoinBody+1))
	if err != nil {
		return fmt.Errorf("reading relay answer to %s: %w", req.URL.Path, err)
	}
	if len(body) > wire.MaxJoinBody {
		return fmt.Errorf("relay answer to %s exceeds %d KiB: is --server an Outpost relay?", req.URL.Path, wire.MaxJoinBody>>10)
	}
	if resp.StatusCode != http.StatusOK {
		reason := fmt.Sprintf("HTTP %d", resp.StatusCode)
		var je wire.JoinError
		if json.Unmarshal(body, &je) == nil && je.Reason != "" {
			reason = clean(je.Reason)
		} else if resp.StatusCode == http.StatusNotFound {
			reason += ": no join endpoint here; is --server an Outpost relay?"
		}
		switch resp.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("token rejected by relay (%s)", reason)
		default:
			return fmt.Errorf("relay refused the join (%s)", reason)
		}
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("relay answer to %s is not valid JSON (%v): is --server an Outpost relay?", req.URL.Path, err)
	}
	return nil
}

// checkCert makes sure the relay issued a usable client certificate for
// our key, so a broken relay fails the join rather than every later connect.
func checkCert(resp wire.JoinResponse, key *ecdsa.PrivateKey, roots *x509.CertPool, name string) ([]byte, error) {
	b, rest := pem.Decode([]byte(resp.Certificate))
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("relay returned no certificate: check the relay's logs")
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("relay returned an unreadable certificate: %w", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("relay returned a certificate for another key: check the relay's logs")
	}
	inter := x509.NewCertPool()
	for len(bytes.TrimSpace(rest)) > 0 {
		var ib *pem.Block
		if ib, rest = pem.Decode(rest); ib == nil {
			break
		}
		if c, err := x509.ParseCertificate(ib.Bytes); err == nil {
			inter.AddCert(c)
		}
	}
	vroots := roots
	if resp.CA != "" {
		// Node certificates may come from a different CA than the
		// relay's serving certificate; the answer is authenticated, so
		// its CA is good for this check.
		vroots = roots.Clone()
		vroots.AppendCertsFromPEM([]byte(resp.CA))
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots: vroots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, fmt.Errorf("relay returned a certificate that will not authenticate this node (%v): check the relay's CA configuration", err)
	}
	if resp.NodeName != "" && resp.NodeName != name {
		return nil, fmt.Errorf("relay issued a certificate for node %q, not %q", resp.NodeName, name)
	}
	return []byte(resp.Certificate), nil
}

func parseCAs(caPEM []byte) (*x509.CertPool, []*x509.Certificate, error) {
	pool := x509.NewCertPool()
	var cas []*x509.Certificate
	rest := caPEM
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("relay CA: %w", err)
		}
		pool.AddCert(c)
		cas = append(cas, c)
	}
	if len(cas) == 0 {
		return nil, nil, errors.New("relay CA: no PEM certificate found: check --ca-file")
	}
	return pool, cas, nil
}

// SPKIHash is a CA's pin as kubeadm prints it: "sha256:" and the hex
// SHA-256 of the certificate's SubjectPublicKeyInfo.
func SPKIHash(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func parsePins(in []string) ([]string, error) {
	var out []string
	for _, p := range in {
		pin, err := ParsePin(p)
		if err != nil {
			return nil, err
		}
		out = append(out, pin)
	}
	return out, nil
}

// ParsePin checks a --ca-cert-hash value and returns it in the form
// SPKIHash prints. Image builders check a pin with it before flashing it.
func ParsePin(p string) (string, error) {
	h, ok := strings.CutPrefix(strings.ToLower(strings.TrimSpace(p)), "sha256:")
	if b, err := hex.DecodeString(h); !ok || err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("--ca-cert-hash %q must be sha256: followed by 64 hex digits", p)
	}
	return "sha256:" + h, nil
}

func checkPins(cas []*x509.Certificate, pins []string) error {
	for _, c := range cas {
		h := SPKIHash(c)
		for _, p := range pins {
			if h == p {
				return nil
			}
		}
	}
	return fmt.Errorf("relay CA does not match --ca-cert-hash (its hash is %s): check the hash, or that --server is the right relay", SPKIHash(cas[0]))
}

func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// clean keeps a relay-supplied reason on one short line: it ends up in a
// one-line error and in logs, and the relay is not trusted to be tidy.
func clean(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) > 300 {
		s = strings.ToValidUTF8(s[:300], "") + "…"
	}
	return s
}
