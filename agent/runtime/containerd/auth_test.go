package containerd_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"outpost.dev/agent/runtime/containerd"
	"outpost.dev/test/harness"
)

// TestPullAuthAndCA pulls from a registry that serves HTTPS with a
// certificate from a private CA and wants a login, as a real private
// registry does.
func TestPullAuthAndCA(t *testing.T) {
	tlsDir := t.TempDir()
	e := startWith(t, harness.RegistryOptions{Username: "edge", Password: "s3cret", TLSDir: tlsDir})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	img := e.images[0]

	runtime := func(t *testing.T, reg containerd.Registry) *containerd.Runtime {
		t.Helper()
		rt, err := containerd.New(ctx, containerd.Config{Address: e.ctrd.Address, Namespace: e.ns,
			Registries: map[string]containerd.Registry{e.reg.Host: reg}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rt.Close() })
		return rt
	}
	withCA := runtime(t, containerd.Registry{CA: e.reg.CACert})
	good := containerd.Credential{Registry: e.reg.Host, Username: "edge", Password: "s3cret"}

	for _, tc := range []struct {
		name    string
		rt      *containerd.Runtime
		creds   []containerd.Credential
		wantErr []string // substrings; none means the pull succeeds
	}{
		{name: "no CA", rt: e.rt, creds: []containerd.Credential{good},
			wantErr: []string{"certificate", "containerd.registries", ".ca"}},
		{name: "CA, no credentials", rt: withCA,
			wantErr: []string{"unauthorized", "no credentials match"}},
		{name: "CA, wrong password", rt: withCA,
			creds:   []containerd.Credential{{Registry: e.reg.Host, Username: "edge", Password: "nope"}},
			wantErr: []string{"unauthorized", "rejected the 1 credential"}},
		{name: "credentials for another registry", rt: withCA,
			creds:   []containerd.Credential{{Registry: "other.example:5000", Username: "edge", Password: "s3cret"}},
			wantErr: []string{"no credentials match"}},
		{name: "wrong then right (scheme and /v1/ in the key)", rt: withCA,
			creds: []containerd.Credential{{Registry: "https://" + e.reg.Host + "/v1/", Username: "edge", Password: "nope"},
				{Registry: e.reg.Host + "/test", Username: "edge", Password: "s3cret"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Each case pulls afresh: remove what an earlier one pulled.
			_, _ = e.ctrd.Ctr(ctx, "-n", e.ns, "images", "rm", "--sync", img.Ref)
			got, err := tc.rt.PullWith(ctx, img.Ref, tc.creds, nil)
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if got.Digest != img.Digest {
					t.Errorf("digest %s, want %s", got.Digest, img.Digest)
				}
				return
			}
			if err == nil {
				t.Fatalf("pull succeeded; want an error with %q", tc.wantErr)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "nope") {
				t.Errorf("error %q shows a password", err)
			}
		})
	}

	t.Run("configured login", func(t *testing.T) {
		_, _ = e.ctrd.Ctr(ctx, "-n", e.ns, "images", "rm", "--sync", img.Ref)
		rt := runtime(t, containerd.Registry{CA: e.reg.CACert, Username: "edge", Password: "s3cret"})
		if _, err := rt.Pull(ctx, img.Ref, nil); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("bad CA file", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(bad, []byte("not a certificate"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := containerd.New(ctx, containerd.Config{Address: e.ctrd.Address, Namespace: e.ns,
			Registries: map[string]containerd.Registry{e.reg.Host: {CA: bad}}})
		if err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
			t.Errorf("New with a bad CA file: %v", err)
		}
	})
}
