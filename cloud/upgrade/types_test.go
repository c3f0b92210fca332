package upgrade

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"outpost.dev/wire"
)

func TestMaxUnavailable(t *testing.T) {
	for _, c := range []struct {
		v       *intstr.IntOrString
		total   int
		want    int
		wantErr bool
	}{
		{nil, 10, 1, false},
		{ptr(intstr.FromInt32(3)), 10, 3, false},
		{ptr(intstr.FromInt32(0)), 10, 0, true},
		{ptr(intstr.FromInt32(-2)), 10, 0, true},
		{ptr(intstr.FromString("25%")), 10, 2, false},
		{ptr(intstr.FromString("25%")), 2, 1, false}, // at least one
		{ptr(intstr.FromString("100%")), 7, 7, false},
		{ptr(intstr.FromString("0%")), 7, 0, true},
		{ptr(intstr.FromString("101%")), 7, 0, true},
		{ptr(intstr.FromString("half")), 7, 0, true},
		{ptr(intstr.FromString("-5%")), 7, 0, true},
	} {
		got, err := MaxUnavailable(c.v, c.total)
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("MaxUnavailable(%v, %d) = %d, %v; want %d (error %v)", c.v, c.total, got, err, c.want, c.wantErr)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func validUpgrade() *AgentUpgrade {
	d := sha256.Sum256([]byte("x"))
	return &AgentUpgrade{ObjectMeta: metav1.ObjectMeta{Name: "u"}, Spec: Spec{Version: "1.0.0", Artifacts: []Artifact{{
		Arch: "arm64", URL: "https://h/a", Size: 1, SHA256: hex.EncodeToString(d[:]), Signature: base64.StdEncoding.EncodeToString(make([]byte, 64)),
	}}}}
}

// TestParseRefusesHostileSpecs: the relay checks again what the API
// server's schema checks, for a CRD installed without it.
func TestParseRefusesHostileSpecs(t *testing.T) {
	if _, err := parse(validUpgrade()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		mod  func(a *AgentUpgrade)
		want string
	}{
		{"unknown arch", func(a *AgentUpgrade) { a.Spec.Artifacts[0].Arch = "mips" }, "arch"},
		{"two of an arch", func(a *AgentUpgrade) { a.Spec.Artifacts = append(a.Spec.Artifacts, a.Spec.Artifacts[0]) }, "two"},
		{"negative size", func(a *AgentUpgrade) { a.Spec.Artifacts[0].Size = -1 }, "size"},
		{"oversize", func(a *AgentUpgrade) { a.Spec.Artifacts[0].Size = wire.MaxUpgradeSize + 1 }, "size"},
		{"file url", func(a *AgentUpgrade) { a.Spec.Artifacts[0].URL = "file:///etc/passwd" }, "url"},
		{"bad digest", func(a *AgentUpgrade) { a.Spec.Artifacts[0].SHA256 = "zz" }, "sha256"},
		{"short signature", func(a *AgentUpgrade) { a.Spec.Artifacts[0].Signature = "AAAA" }, "signature"},
		{"path version", func(a *AgentUpgrade) { a.Spec.Version = "../../x" }, "version"},
		{"no artifacts", func(a *AgentUpgrade) { a.Spec.Artifacts = nil }, "artifacts"},
		{"long trial", func(a *AgentUpgrade) { a.Spec.TrialSeconds = 99999 }, "trial"},
		{"bad selector", func(a *AgentUpgrade) {
			a.Spec.NodeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "k", Operator: "Near"}}}
		}, "nodeSelector"},
	} {
		a := validUpgrade()
		c.mod(a)
		if _, err := parse(a); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: parse = %v, want an error about %q", c.name, err, c.want)
		}
	}
}

func TestCountStatus(t *testing.T) {
	nodes := []NodeStatus{
		{Name: "a", Phase: wire.UpgradeHealthy}, {Name: "b", Phase: wire.UpgradeDownloading},
		{Name: "c", Phase: wire.UpgradeFailed}, {Name: "d", Phase: wire.UpgradeRolledBack},
		{Name: "gone", Phase: wire.UpgradeSwitching}, {Name: "gone2", Phase: wire.UpgradeHealthy},
	}
	got := countStatus(nodes, map[string]bool{"a": true, "b": true, "c": true, "d": true, "e": true})
	// Nodes no longer selected do not count, in flight or not.
	if want := (counts{total: 5, updated: 1, inFlight: 1, failed: 2}); got != want {
		t.Fatalf("counts %+v, want %+v", got, want)
	}
}

// TestArtifactCache: fetched once, served from disk after; wrong bytes
// and too many bytes are never kept.
func TestArtifactCache(t *testing.T) {
	good := []byte("the agent binary")
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write(good)
	}))
	defer srv.Close()
	dir := filepath.Join(t.TempDir(), "made", "by-the-first-fetch")
	a, err := newArtifacts(dir, nil, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the cache directory exists before any fetch: %v", err)
	}
	ctx := context.Background()
	sum := sha256.Sum256(good)
	for range 3 {
		f, err := a.open(ctx, srv.URL, int64(len(good)), sum[:])
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	if hits.Load() != 1 {
		t.Fatalf("fetched %d times", hits.Load())
	}
	other := sha256.Sum256([]byte("something else"))
	if _, err := a.open(ctx, srv.URL, int64(len(good)), other[:]); err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("wrong digest: %v", err)
	}
	if _, err := a.open(ctx, srv.URL, int64(len(good))-1, sum[:]); err == nil || !strings.Contains(err.Error(), "bytes") {
		t.Fatalf("more bytes than the spec says: %v", err)
	}
	if _, err := a.open(ctx, srv.URL+"/x", int64(len(good))+1, sum[:]); err == nil {
		t.Fatal("fewer bytes than the spec says: served")
	}

	// A cache that cannot be made (here under a regular file, as a
	// read-only root without a cache mount would refuse it) does not
	// stop the replica; the fetch that needs it fails, saying why.
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := newArtifacts(filepath.Join(file, "cache"), nil, 2)
	if err != nil {
		t.Fatalf("a cache directory that cannot be made refused before it is needed: %v", err)
	}
	if _, err := b.open(ctx, srv.URL, int64(len(good)), sum[:]); err == nil || !strings.Contains(err.Error(), "artifact cache") {
		t.Fatalf("fetch into a cache that cannot be made: %v", err)
	}
}

func TestDeployedCRDIsTheEmbeddedOne(t *testing.T) {
	b, err := os.ReadFile("../deploy/agentupgrades-crd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != string(CRDManifest) {
		t.Fatal("cloud/deploy/agentupgrades-crd.yaml differs from cloud/upgrade/crd.yaml: copy one over the other")
	}
}

// TestCRDSizeIsTheWireBound: the API server refuses an artifact over
// the size the relay validates (wire.MaxUpgradeSize), which is also the
// agent's slot bound, and takes one of that size; so does parse.
func TestCRDSizeIsTheWireBound(t *testing.T) {
	var crd struct {
		Spec struct {
			Versions []struct {
				Name   string
				Schema struct {
					OpenAPIV3Schema struct {
						Properties struct {
							Spec struct {
								Properties struct {
									Artifacts struct {
										Items struct {
											Properties struct {
												Size struct {
													Minimum, Maximum *int64
												}
											}
										}
									}
								}
							}
						}
					} `json:"openAPIV3Schema"`
				}
			}
		}
	}
	if err := yaml.Unmarshal(CRDManifest, &crd); err != nil {
		t.Fatal(err)
	}
	if len(crd.Spec.Versions) == 0 {
		t.Fatal("the CRD has no versions")
	}
	for _, v := range crd.Spec.Versions {
		size := v.Schema.OpenAPIV3Schema.Properties.Spec.Properties.Artifacts.Items.Properties.Size
		if size.Minimum == nil || *size.Minimum != 1 || size.Maximum == nil || *size.Maximum != wire.MaxUpgradeSize {
			t.Errorf("CRD %s: artifacts[].size minimum %v, maximum %v; want 1 and wire.MaxUpgradeSize (%d)", v.Name, size.Minimum, size.Maximum, wire.MaxUpgradeSize)
		}
	}
	for size, ok := range map[int64]bool{wire.MaxUpgradeSize: true, wire.MaxUpgradeSize + 1: false, 0: false} {
		a := validUpgrade()
		a.Spec.Artifacts[0].Size = size
		if _, err := parse(a); (err == nil) != ok {
			t.Errorf("parse with an artifact of %d bytes: %v", size, err)
		}
	}
}

func TestChangeMerge(t *testing.T) {
	a := newChange("")
	a.set["gw"] = NodeStatus{Name: "gw", Phase: wire.UpgradeHealthy}
	a.about["gw"] = "1.1.0"
	b := newChange("uid-1")
	b.set["gw"] = NodeStatus{Name: "gw", Phase: wire.UpgradeDownloading}
	b.admit["gw-2"] = true
	m := a.merge(b)
	if m.set["gw"].Phase != wire.UpgradeHealthy || !m.admit["gw-2"] || m.uid != "uid-1" {
		t.Fatalf("merged %+v", m)
	}
	// A change decided on a replaced object gives way, its waiters told.
	told := false
	c := newChange("uid-0")
	c.done = append(c.done, func() { told = true })
	if m := c.merge(b); m != b || !told {
		t.Fatal("a change for a replaced object was kept")
	}
}

// The cache's transform drops managedFields from a copy, leaving the
// object it is given as it was (watchcache.Options.Transform).
func TestWithoutManagedFieldsLeavesItsArgument(t *testing.T) {
	u := &unstructured.Unstructured{Object: map[string]any{
		"kind":     "AgentUpgrade",
		"metadata": map[string]any{"name": "u1", "managedFields": []any{map[string]any{"manager": "kubectl"}}},
		"spec":     map[string]any{"version": "v1"},
	}}
	before := u.DeepCopy()
	got := withoutManagedFields(u).(*unstructured.Unstructured)
	if !reflect.DeepEqual(u.Object, before.Object) {
		t.Errorf("argument changed: %v", u.Object)
	}
	if got.GetManagedFields() != nil || got.GetName() != "u1" || got.Object["spec"] == nil {
		t.Errorf("transformed %v, want the object without managedFields", got.Object)
	}
	plain := &unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"name": "u2"}}}
	if withoutManagedFields(plain) != runtime.Object(plain) {
		t.Error("an object without managedFields was copied")
	}
}
