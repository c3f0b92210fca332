package pods

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"outpost.dev/wire"
)

// kubeAPIAccess is the volume the API server adds to every pod that mounts
// a service-account token.
func kubeAPIAccess(name string) wire.Volume {
	return wire.Volume{Name: name, Projected: &wire.Projected{DefaultMode: 0o644, Sources: []wire.ProjectedSource{
		{ServiceAccountToken: &wire.TokenSource{Path: "token", ExpirationSeconds: 3607}},
		{ConfigMap: &wire.FilesVolume{Name: "kube-root-ca.crt", Items: []wire.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
		{DownwardAPI: []wire.FieldFile{{Path: "namespace", Field: "metadata.namespace"}}},
	}}}
}

func TestProjectedVolumeFiles(t *testing.T) {
	rf := &refs{
		configMaps: map[string]*wire.ConfigMap{
			"ns1/kube-root-ca.crt": {Data: map[string]string{"ca.crt": "CA PEM"}},
			"ns1/app":              {Data: map[string]string{"mode": "edge", "other": "x"}},
		},
		secrets: map[string]*wire.Secret{"ns1/creds": {Data: map[string][]byte{"password": []byte("s3cret")}}},
		tokens: map[string]*wire.PodTokens{"uid-1": {Items: []wire.Token{
			{Volume: "kube-api-access-x", Path: "token", Token: "default-token", Expires: 1},
			{Volume: "mixed", Path: "vault/token", Token: "vault-token", Expires: 1},
		}}},
	}
	mixed := wire.Volume{Name: "mixed", Projected: &wire.Projected{DefaultMode: 0o440, Sources: []wire.ProjectedSource{
		{Secret: &wire.FilesVolume{Name: "creds", Items: []wire.KeyToPath{{Key: "password", Path: "db/password", Mode: 0o400}}}},
		{ConfigMap: &wire.FilesVolume{Name: "app", Items: []wire.KeyToPath{{Key: "mode", Path: "mode"}}}},
		{DownwardAPI: []wire.FieldFile{{Path: "pod", Field: "metadata.name"}, {Path: "sa", Field: "spec.serviceAccountName"}}},
		{ServiceAccountToken: &wire.TokenSource{Path: "vault/token", Audience: "vault", ExpirationSeconds: 600}},
	}}}
	type want struct {
		data string
		mode os.FileMode
	}
	for _, tc := range []struct {
		name    string
		uid     string
		vol     wire.Volume
		want    map[string]want
		wantErr string
	}{
		{name: "default kube-api-access", uid: "uid-1", vol: kubeAPIAccess("kube-api-access-x"), want: map[string]want{
			"token": {"default-token", 0o644}, "ca.crt": {"CA PEM", 0o644}, "namespace": {"ns1", 0o644},
		}},
		{name: "secret, configMap, downwardAPI and token", uid: "uid-1", vol: mixed, want: map[string]want{
			"db/password": {"s3cret", 0o400}, "mode": {"edge", 0o440}, "pod": {"p1", 0o440}, "sa": {"builder", 0o440},
			"vault/token": {"vault-token", 0o440},
		}},
		{name: "no token yet", uid: "uid-2", vol: kubeAPIAccess("kube-api-access-x"), wantErr: "no service-account token for token yet"},
		{name: "token of another volume only", uid: "uid-1", vol: kubeAPIAccess("kube-api-access-y"), wantErr: "no service-account token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorker(New(Config{}), tc.uid)
			o := &wire.Object{Kind: wire.KindPod, UID: tc.uid, Namespace: "ns1", Name: "p1", Version: "1",
				Pod: &wire.Pod{ServiceAccountName: "builder", Volumes: []wire.Volume{tc.vol}}}
			files, err := w.volumeFiles(o, rf, &o.Pod.Volumes[0])
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(files) != len(tc.want) {
				t.Errorf("got %d files, want %d", len(files), len(tc.want))
			}
			for p, wf := range tc.want {
				f, ok := files[p]
				if !ok || string(f.data) != wf.data || f.mode != wf.mode {
					t.Errorf("%s: got %q mode %o (present %v), want %q mode %o", p, f.data, f.mode, ok, wf.data, wf.mode)
				}
			}
		})
	}
}

// TestTokenRefreshSwapsData checks a refreshed token reaches the volume as
// the kubelet's AtomicWriter does it: a new timestamped directory, the
// ..data symlink swapped to it, the old one removed; the file name the
// container reads stays the same.
func TestTokenRefreshSwapsData(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kube-api-access-x")
	files := func(tok string) map[string]file {
		return map[string]file{"token": {[]byte(tok), 0o644}, "ca.crt": {[]byte("CA"), 0o644}, "namespace": {[]byte("ns1"), 0o644}}
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := writeAtomic(dir, files("first"), now); err != nil {
		t.Fatal(err)
	}
	first, err := os.Readlink(filepath.Join(dir, "..data"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(first, "..2026_01_02_03_04_05.") {
		t.Errorf("data directory %q is not named like the kubelet's", first)
	}
	if l, _ := os.Readlink(filepath.Join(dir, "token")); l != "..data/token" {
		t.Errorf("token links to %q, want ..data/token", l)
	}
	read := func() string {
		b, err := os.ReadFile(filepath.Join(dir, "token"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := read(); got != "first" {
		t.Fatalf("token = %q", got)
	}
	// The same payload again writes nothing.
	if err := writeAtomic(dir, files("first"), now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if l, _ := os.Readlink(filepath.Join(dir, "..data")); l != first {
		t.Errorf("unchanged payload moved ..data from %q to %q", first, l)
	}
	if err := writeAtomic(dir, files("second"), now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	second, _ := os.Readlink(filepath.Join(dir, "..data"))
	if second == first || read() != "second" {
		t.Errorf("after refresh: ..data %q (was %q), token %q", second, first, read())
	}
	if _, err := os.Stat(filepath.Join(dir, first)); !os.IsNotExist(err) {
		t.Errorf("old data directory %s still there (err %v)", first, err)
	}
	st, err := os.Stat(filepath.Join(dir, "token"))
	if err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("token mode: %v, %v", st.Mode(), err)
	}
}
