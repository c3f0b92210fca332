package ociimage

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"io"
	"io/fs"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"outpost.dev/build/cross"
)

var created = time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)

// fakeIndex is an index around stand-in binaries, one per architecture.
func fakeIndex(t *testing.T) v1.ImageIndex {
	t.Helper()
	imgs := map[string]v1.Image{}
	for _, a := range Arches {
		img, err := Image([]byte("relay for "+a), a, "v1.2.3", created)
		if err != nil {
			t.Fatal(err)
		}
		imgs[a] = img
	}
	idx, err := Index(Arches, imgs)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// entry is one tar entry as read back.
type entry struct {
	typ       byte
	mode      int64
	uid, gid  int
	uname     string
	mtime     time.Time
	body      string
	linkname  string
	paxRecord map[string]string
}

func layerEntries(t *testing.T, l v1.Layer) (names []string, entries map[string]entry) {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	entries = map[string]entry{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		entries[h.Name] = entry{typ: h.Typeflag, mode: h.Mode, uid: h.Uid, gid: h.Gid, uname: h.Uname + h.Gname,
			mtime: h.ModTime, body: string(b), linkname: h.Linkname, paxRecord: h.PAXRecords}
	}
	return names, entries
}

func TestIndexHasOneImagePerArch(t *testing.T) {
	idx := fakeIndex(t)
	if err := validate.Index(idx); err != nil {
		t.Fatalf("index does not validate: %v", err)
	}
	if mt, _ := idx.MediaType(); mt != types.OCIImageIndex {
		t.Errorf("index media type %s, want %s", mt, types.OCIImageIndex)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 2 {
		t.Fatalf("%d manifests, want 2 (amd64, arm64)", len(m.Manifests))
	}
	want := []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64", Variant: "v8"}}
	for i, d := range m.Manifests {
		if d.MediaType != types.OCIManifestSchema1 {
			t.Errorf("manifest %d: media type %s", i, d.MediaType)
		}
		if d.Platform == nil || !d.Platform.Equals(want[i]) {
			t.Errorf("manifest %d: platform %v, want %v", i, d.Platform, want[i])
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		// The config's platform is the descriptor's: a runtime that
		// checks the pulled image against the node's architecture agrees.
		if cf.OS != "linux" || cf.Architecture != want[i].Architecture || cf.Variant != want[i].Variant {
			t.Errorf("manifest %d: config says %s/%s/%s, descriptor %v", i, cf.OS, cf.Architecture, cf.Variant, want[i])
		}
		// Each architecture's layer holds that architecture's binary.
		ls, err := img.Layers()
		if err != nil || len(ls) != 1 {
			t.Fatalf("manifest %d: %d layers (%v), want 1", i, len(ls), err)
		}
		_, ents := layerEntries(t, ls[0])
		if got := ents["outpost-relay"].body; got != "relay for "+want[i].Architecture {
			t.Errorf("manifest %d (%s): binary %q", i, want[i].Architecture, got)
		}
	}
}

func TestImageConfig(t *testing.T) {
	img, err := Image([]byte("bin"), "arm64", "v1.2.3", created)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("image does not validate: %v", err)
	}
	if mt, _ := img.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s", mt)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.MediaType != types.OCIConfigJSON || len(m.Layers) != 1 || m.Layers[0].MediaType != types.OCILayer {
		t.Errorf("config %s, layers %v: want OCI config and one OCI gzip layer", m.Config.MediaType, m.Layers)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	for _, tc := range []struct {
		what      string
		got, want any
	}{
		{"user", c.User, "65532:65532"},
		{"entrypoint", c.Entrypoint, []string{"/outpost-relay"}},
		{"cmd", c.Cmd, []string{"serve"}},
		{"env", c.Env, []string(nil)},
		{"working dir", c.WorkingDir, "/"},
		{"version label", c.Labels["org.opencontainers.image.version"], "v1.2.3"},
		{"created", cf.Created.Time.UTC(), created},
		{"history", len(cf.History), 1},
		{"history created", cf.History[0].Created.Time.UTC(), created},
		{"diff IDs", len(cf.RootFS.DiffIDs), 1},
	} {
		if !equal(tc.got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.what, tc.got, tc.want)
		}
	}
	var ports []string
	for p := range c.ExposedPorts {
		ports = append(ports, p)
	}
	slices.Sort(ports)
	if !slices.Equal(ports, []string{"10250/tcp", "8443/tcp"}) {
		t.Errorf("exposed ports %v", ports)
	}
	if strings.HasPrefix(c.User, "0") || c.User == "" || c.User == "root" {
		t.Errorf("runs as root: %q", c.User)
	}
}

func equal(a, b any) bool {
	switch a := a.(type) {
	case []string:
		return slices.Equal(a, b.([]string))
	case time.Time:
		return a.Equal(b.(time.Time))
	}
	return a == b
}

func TestLayerContents(t *testing.T) {
	l, err := Layer([]byte("the relay"), created)
	if err != nil {
		t.Fatal(err)
	}
	names, ents := layerEntries(t, l)
	want := []string{"etc/", "etc/group", "etc/passwd", "home/", "home/nonroot/", "outpost-relay"}
	if !slices.Equal(names, want) {
		t.Fatalf("layer holds %q, want exactly %q in this order", names, want)
	}
	for _, n := range names {
		e := ents[n]
		if !e.mtime.Equal(created) {
			t.Errorf("%s: mtime %v, want %v", n, e.mtime, created)
		}
		if e.uname != "" {
			t.Errorf("%s: owner names %q: a build machine's user names would leak into the digest", n, e.uname)
		}
		if e.typ == tar.TypeSymlink || e.typ == tar.TypeLink {
			t.Errorf("%s: a link", n)
		}
		if e.mode&0o7000 != 0 {
			t.Errorf("%s: setuid, setgid or sticky bit (mode %o)", n, e.mode)
		}
		for k := range e.paxRecord {
			if strings.Contains(k, "time") {
				t.Errorf("%s: PAX record %s carries a time of its own", n, k)
			}
		}
	}
	bin := ents["outpost-relay"]
	if bin.typ != tar.TypeReg || bin.mode != 0o755 || bin.uid != 0 || bin.body != "the relay" {
		t.Errorf("outpost-relay: type %c mode %o uid %d body %q; want a root-owned 0755 file (the relay cannot change its own binary)", bin.typ, bin.mode, bin.uid, bin.body)
	}
	if !strings.Contains(ents["etc/passwd"].body, "nonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd has no nonroot user 65532:\n%s", ents["etc/passwd"].body)
	}
	if !strings.Contains(ents["etc/group"].body, "nonroot:x:65532:") {
		t.Errorf("/etc/group has no nonroot group 65532:\n%s", ents["etc/group"].body)
	}
	if h := ents["home/nonroot/"]; h.uid != UID || h.gid != GID || h.typ != tar.TypeDir {
		t.Errorf("home/nonroot: uid %d gid %d type %c", h.uid, h.gid, h.typ)
	}
	for _, n := range []string{"etc/passwd", "etc/group"} {
		if e := ents[n]; e.uid != 0 || e.mode != 0o644 {
			t.Errorf("%s: uid %d mode %o, want root's 0644", n, e.uid, e.mode)
		}
	}
}

func TestReproducible(t *testing.T) {
	a, b := fakeIndex(t), fakeIndex(t)
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Fatalf("two builds of the same input differ: %s and %s", da, db)
	}
	// Any change to the input changes the digest: the check above is not
	// comparing constants.
	img, err := Image([]byte("relay for amd64"), "amd64", "v1.2.3", created.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	other, err := Index([]string{"amd64"}, map[string]v1.Image{"amd64": img})
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := other.Digest(); d == da {
		t.Fatal("a different creation time gave the same digest")
	}
}

func TestLayoutRoundTripAndPush(t *testing.T) {
	idx := fakeIndex(t)
	dir := filepath.Join(t.TempDir(), "layout")
	// A file left by an earlier build is gone after a new one.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "stale"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteLayout(dir, idx, Tag("v1.2.3+abc")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "stale")); !os.IsNotExist(err) {
		t.Errorf("stale file kept: %v", err)
	}
	for _, f := range []string{"oci-layout", "index.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("layout lacks %s: %v", f, err)
		}
	}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if fi, err := d.Info(); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode %v (%v), want 0644", path, fi.Mode(), err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ij, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var top v1.IndexManifest
	if err := json.Unmarshal(ij, &top); err != nil {
		t.Fatal(err)
	}
	if len(top.Manifests) != 1 || top.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "v1.2.3_abc" {
		t.Errorf("index.json does not name the tag v1.2.3_abc: %s", ij)
	}
	back, err := ReadLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := idx.Digest()
	if got, _ := back.Digest(); got != want {
		t.Fatalf("layout holds %s, built %s", got, want)
	}

	// Push to a registry (go-containerregistry's, in memory) and pull the
	// index back by the digest Push returned.
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	ref, err := Push(context.Background(), back, host+"/outpost/outpost-relay:v1.2.3", true)
	if err != nil {
		t.Fatal(err)
	}
	if ref != host+"/outpost/outpost-relay@"+want.String() {
		t.Errorf("Push returned %s", ref)
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Index(r)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := pulled.Digest(); got != want {
		t.Errorf("registry holds %s", got)
	}
	if _, err := Push(context.Background(), back, "not a reference", true); err == nil {
		t.Error("pushing to a malformed reference succeeded")
	}
}

func TestSizes(t *testing.T) {
	sizes, err := Sizes(fakeIndex(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(sizes) != 2 || sizes[0].Arch != "amd64" || sizes[1].Arch != "arm64" {
		t.Fatalf("sizes %+v", sizes)
	}
	for _, s := range sizes {
		l, _ := Layer([]byte("relay for "+s.Arch), created)
		n, _ := l.Size()
		if s.Compressed != n {
			t.Errorf("%s: %d bytes, the layer is %d", s.Arch, s.Compressed, n)
		}
	}
}

func TestTag(t *testing.T) {
	for in, want := range map[string]string{
		"v0.1.0":                  "v0.1.0",
		"v0.1.0-dev+0123456789ab": "v0.1.0-dev_0123456789ab",
		"":                        "latest",
		".hidden":                 "_hidden",
		"a/b:c":                   "a_b_c",
		strings.Repeat("x", 200):  strings.Repeat("x", 128),
	} {
		got := Tag(in)
		if got != want {
			t.Errorf("Tag(%q) = %q, want %q", in, got, want)
		}
		if _, err := name.NewTag("example.com/r:" + got); err != nil {
			t.Errorf("Tag(%q) = %q is not a valid tag: %v", in, got, err)
		}
	}
}

func TestBuildRefusesOtherArches(t *testing.T) {
	root, err := cross.ModuleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Build(context.Background(), Options{ModuleRoot: root, Arches: []string{"riscv64"}}); err == nil || !strings.Contains(err.Error(), "amd64 and arm64") {
		t.Errorf("riscv64: %v", err)
	}
}

// TestBuildStatic builds the real relay for this machine's architecture
// and checks the image's binary is static: the image has no libc.
func TestBuildStatic(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the relay")
	}
	root, err := cross.ModuleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	idx, err := Build(context.Background(), Options{ModuleRoot: root, Version: "v0.0.1-test", Created: created, Arches: []string{"amd64"}})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := idx.IndexManifest()
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	ls, _ := img.Layers()
	_, ents := layerEntries(t, ls[0])
	bin := []byte(ents["outpost-relay"].body)
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("outpost-relay is not an ELF file: %v", err)
	}
	if f.Machine != elf.EM_X86_64 {
		t.Errorf("amd64 image holds a binary for %v", f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("outpost-relay is dynamically linked (%v): built with cgo?", p.Type)
		}
	}
	if !bytes.Contains(bin, []byte("v0.0.1-test")) {
		t.Error("the version is not stamped into the binary")
	}
}
