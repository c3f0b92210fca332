package link

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// rejoinError is a failure no retry will fix: the node's certificate or
// the relay's CA no longer fit. The link keeps retrying anyway (the clock
// may be wrong, the relay may be misconfigured for a moment) but says
// loudly what to do.
type rejoinError struct{ reason string }

func (e *rejoinError) Error() string { return e.reason + ": re-join this node" }

func (e *rejoinError) fix(server string) string {
	return fmt.Sprintf("outpost-agent join --force --server %s --token NEW_TOKEN, then restart the agent", server)
}

// checkValidity catches an expired certificate before dialing, where the
// reason is still known; after the handshake it is only "bad certificate".
// One expired less than grace ago still dials: the relay renews it
// (Rotation).
func checkValidity(leaf *x509.Certificate, now time.Time, grace time.Duration) error {
	if leaf == nil {
		return nil
	}
	if now.After(leaf.NotAfter) && now.Sub(leaf.NotAfter) > grace {
		why := fmt.Sprintf("node certificate expired %s ago (at %s)", now.Sub(leaf.NotAfter).Round(time.Minute), leaf.NotAfter.UTC().Format(time.RFC3339))
		if grace > 0 {
			why += fmt.Sprintf(", longer than the %s the relay still renews one", grace)
		}
		return &rejoinError{why}
	}
	if now.Before(leaf.NotBefore) {
		// A gateway without a real-time clock boots in 1970: this is
		// usually the clock, not the certificate.
		return fmt.Errorf("node certificate is not valid until %s and the clock says %s: set the clock (enable NTP)", leaf.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// tlsAlerts are the alerts a relay sends when it refuses the node's
// certificate. Go reports remote alerts only as text.
var tlsAlerts = []string{
	"tls: bad certificate", "tls: expired certificate", "tls: revoked certificate",
	"tls: unknown certificate authority", "tls: certificate required", "tls: unknown certificate",
}

// dialError turns a failed dial into a reason that says what to do.
func dialError(err error, resp *http.Response) error {
	var cve *tls.CertificateVerificationError
	if errors.As(err, &cve) {
		var ui x509.UnknownAuthorityError
		var inv x509.CertificateInvalidError
		switch {
		case errors.As(cve.Err, &ui):
			return &rejoinError{"the relay's certificate is not signed by the CA this node joined with (did the relay CA change?)"}
		case errors.As(cve.Err, &inv) && inv.Reason == x509.Expired:
			return fmt.Errorf("the relay's certificate is expired or not yet valid (%v): check the clock here (NTP) and the relay's certificate", inv)
		}
		return fmt.Errorf("the relay's certificate does not verify (%v): check --server", cve.Err)
	}
	msg := err.Error()
	for _, a := range tlsAlerts {
		if strings.Contains(msg, a) {
			return &rejoinError{fmt.Sprintf("the relay refused this node's certificate (%s)", a)}
		}
	}
	if resp != nil {
		var body []byte
		if resp.Body != nil {
			body, _ = io.ReadAll(io.LimitReader(resp.Body, 512))
		}
		detail := fmt.Sprintf("HTTP %d", resp.StatusCode)
		if s := strings.TrimSpace(clean(string(body))); s != "" {
			detail += ": " + s
		}
		switch resp.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return &rejoinError{fmt.Sprintf("the relay refused this node (%s)", detail)}
		case http.StatusNotFound:
			return fmt.Errorf("no WebSocket endpoint at the relay URL (%s): check server in the config", detail)
		case http.StatusServiceUnavailable, http.StatusTooManyRequests:
			if after, ok := retryAfter(resp.Header.Get("Retry-After")); ok {
				return &busyError{after: after, detail: detail}
			}
		}
		return fmt.Errorf("relay refused the connection (%s)", detail)
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return &unreachableError{err}
	}
	return fmt.Errorf("cannot reach relay: %w", err)
}

// maxRetryAfter bounds a relay's Retry-After: the header is the peer's.
const maxRetryAfter = 5 * time.Minute

// busyError is a relay asking the agent to come back later (503 or 429
// with Retry-After, whole seconds).
type busyError struct {
	after  time.Duration
	detail string
}

func (e *busyError) Error() string {
	return fmt.Sprintf("relay busy (%s): retrying after the %s it asked for", e.detail, e.after)
}

func retryAfter(v string) (time.Duration, bool) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 {
		return 0, false
	}
	return min(time.Duration(n)*time.Second, maxRetryAfter), true
}

// unreachableError is a dial that found nobody listening (refused,
// unreachable, timed out): the relay is down or restarting, so the link
// probes for it while it waits (Link.pause).
type unreachableError struct{ err error }

func (e *unreachableError) Error() string { return "cannot reach relay: " + e.err.Error() }
func (e *unreachableError) Unwrap() error { return e.err }
