// Package ociimage builds the relay's container image without Docker: the
// static outpost-relay (CGO_ENABLED=0, built as build/cross builds) in one
// layer with /etc/passwd and /etc/group naming the non-root user it runs
// as, and nothing else: no shell, no package manager, no CA bundle (the
// relay trusts only the cluster's CA, which Kubernetes mounts with the
// service account token, and the relay CA it keeps in a Secret). One image
// per architecture goes into an OCI image index, written as an OCI image
// layout and optionally pushed to a registry with go-containerregistry.
//
// Every timestamp in the image (config, history, tar entries) is the given
// creation time, tar entries carry no owner names, and the gzip stream no
// name or time, so the same source and time give the same digests.
package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"outpost.dev/build/cross"
)

const (
	// Binary is where the relay is in the image, and the entrypoint.
	Binary = "/outpost-relay"
	// UID and GID are the user the relay runs as: not root, and the
	// "nonroot" user of distroless images, so a PodSecurity or admission
	// rule written for those fits this image too.
	UID, GID = 65532, 65532
	// User is the image config's User.
	User = "65532:65532"
	// Package is the relay's main package.
	Package = "./cloud/cmd/outpost-relay"
)

// Arches are the architectures the image is built for by default.
var Arches = []string{"amd64", "arm64"}

// Ports the relay listens on in its Deployment (cloud/deploy/relay.yaml):
// agents' HTTPS and the kubelet API for edge nodes.
var Ports = []string{"8443/tcp", "10250/tcp"}

// Options are what varies between builds.
type Options struct {
	// ModuleRoot is the directory holding outpost.dev's go.mod.
	ModuleRoot string
	// Version is stamped as main.version and the image's version label.
	Version string
	// Created is every timestamp in the image.
	Created time.Time
	// Arches are GOARCH values; Arches when empty.
	Arches []string
}

// Build compiles the relay for each architecture (into a temporary
// directory) and returns the image index holding one image per
// architecture, in the order given.
func Build(ctx context.Context, o Options) (v1.ImageIndex, error) {
	arches := o.Arches
	if len(arches) == 0 {
		arches = Arches
	}
	tmp, err := os.MkdirTemp("", "outpost-relayimage-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	imgs := map[string]v1.Image{}
	for _, arch := range arches {
		if arch != "amd64" && arch != "arm64" {
			return nil, fmt.Errorf("architecture %q: the relay image is built for amd64 and arm64", arch)
		}
		out := filepath.Join(tmp, "outpost-relay-"+arch)
		t := cross.Target{GOARCH: arch, Deb: arch}
		if err := cross.Build(ctx, t, out, cross.Options{ModuleRoot: o.ModuleRoot, Version: o.Version, Package: Package}); err != nil {
			return nil, err
		}
		bin, err := os.ReadFile(out)
		if err != nil {
			return nil, err
		}
		if imgs[arch], err = Image(bin, arch, o.Version, o.Created); err != nil {
			return nil, err
		}
	}
	return Index(arches, imgs)
}

// platform is the OCI platform of a GOARCH, with arm64's usual variant.
func platform(arch string) v1.Platform {
	p := v1.Platform{OS: "linux", Architecture: arch}
	if arch == "arm64" {
		p.Variant = "v8"
	}
	return p
}

// Image is the image for one architecture around the relay binary bin.
func Image(bin []byte, arch, version string, created time.Time) (v1.Image, error) {
	layer, err := Layer(bin, created)
	if err != nil {
		return nil, err
	}
	p := platform(arch)
	cfg := &v1.ConfigFile{
		Architecture: p.Architecture,
		Variant:      p.Variant,
		OS:           p.OS,
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			User:       User,
			Entrypoint: []string{Binary},
			Cmd:        []string{"serve"},
			WorkingDir: "/",
			Labels: map[string]string{
				"org.opencontainers.image.title":       "outpost-relay",
				"org.opencontainers.image.description": "The cloud end of Outpost: serves edge agents and acts for their nodes",
				"org.opencontainers.image.version":     version,
			},
			ExposedPorts: map[string]struct{}{},
		},
	}
	for _, port := range Ports {
		cfg.Config.ExposedPorts[port] = struct{}{}
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return nil, err
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: created}, CreatedBy: "build/relayimage", Comment: "outpost-relay " + version},
	})
	if err != nil {
		return nil, err
	}
	return mutate.CreatedAt(img, v1.Time{Time: created})
}

// file is one entry of the layer.
type file struct {
	mode int64
	dir  bool
	data []byte
}

// layerFiles returns the layer's entries by path (without the leading slash):
// the relay, the passwd and group files naming its user, and their
// directory.
func layerFiles(bin []byte) map[string]file {
	return map[string]file{
		"etc/":          {mode: 0o755, dir: true},
		"etc/passwd":    {mode: 0o644, data: fmt.Appendf(nil, "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", UID, GID)},
		"etc/group":     {mode: 0o644, data: fmt.Appendf(nil, "root:x:0:\nnonroot:x:%d:\n", GID)},
		Binary[1:]:      {mode: 0o755, data: bin},
		"home/":         {mode: 0o755, dir: true},
		"home/nonroot/": {mode: 0o700, dir: true},
	}
}

// Layer is the gzip-compressed tar of layerFiles, entries sorted by path,
// owned by root but for the user's home directory, every time created.
func Layer(bin []byte, created time.Time) (v1.Layer, error) {
	files := layerFiles(bin)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	for _, n := range names {
		f := files[n]
		h := &tar.Header{Name: n, Mode: f.mode, ModTime: created, Format: tar.FormatPAX}
		if f.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(f.data))
		}
		if n == "home/nonroot/" {
			h.Uid, h.Gid = UID, GID
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(tarBuf.Bytes()); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	compressed := gz.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(compressed)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	return plainLayer{l}, nil
}

// plainLayer hides the tarball layer's own descriptor, whose empty
// annotations map would make the manifest differ from its own JSON (which
// drops it); the descriptor is then made from digest, size and media type.
type plainLayer struct{ v1.Layer }

// Index is the OCI image index of imgs, one manifest per architecture in
// the order of arches, each with its platform.
func Index(arches []string, imgs map[string]v1.Image) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var adds []mutate.IndexAddendum
	for _, arch := range arches {
		img, ok := imgs[arch]
		if !ok {
			return nil, fmt.Errorf("no image for %s", arch)
		}
		p := platform(arch)
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{MediaType: types.OCIManifestSchema1, Platform: &p}})
	}
	return mutate.AppendManifests(idx, adds...), nil
}

// WriteLayout writes idx as an OCI image layout in dir, replacing what was
// there: index.json names the image index with refName
// (org.opencontainers.image.ref.name), which ctr images import and
// skopeo's oci: transport take as its tag.
func WriteLayout(dir string, idx v1.ImageIndex, refName string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": refName})); err != nil {
		return err
	}
	// Blobs are written with whatever mode their temporary file had;
	// every file of the layout is data anyone may read.
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		return os.Chmod(path, 0o644)
	})
}

// ReadLayout returns the image index WriteLayout wrote in dir.
func ReadLayout(dir string) (v1.ImageIndex, error) {
	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, err
	}
	m, err := top.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(m.Manifests) != 1 || !m.Manifests[0].MediaType.IsIndex() {
		return nil, fmt.Errorf("%s: index.json must name exactly one image index, as build/relayimage writes it", dir)
	}
	return top.ImageIndex(m.Manifests[0].Digest)
}

// Push writes idx to the registry as ref (registry/repository:tag), with
// the credentials of the user's Docker config (docker login, crane auth
// login). insecure allows plain HTTP. It returns the pushed reference by
// digest.
func Push(ctx context.Context, idx v1.ImageIndex, ref string, insecure bool) (string, error) {
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return "", fmt.Errorf("push: %w", err)
	}
	if err := remote.WriteIndex(r, idx, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		return "", err
	}
	return r.Context().Digest(d.String()).String(), nil
}

// Size is one architecture's image: what a node pulls for it.
type Size struct {
	Arch string
	// Compressed is the sum of its layers' compressed sizes.
	Compressed int64
}

// Sizes reports each architecture's pull size in idx, in its order.
func Sizes(idx v1.ImageIndex) ([]Size, error) {
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var out []Size
	for _, d := range m.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, err
		}
		man, err := img.Manifest()
		if err != nil {
			return nil, err
		}
		s := Size{Arch: d.Platform.Architecture}
		for _, l := range man.Layers {
			s.Compressed += l.Size
		}
		out = append(out, s)
	}
	return out, nil
}

// Tag is version as an image tag: each character a tag may not hold (the
// '+' of a build suffix) becomes '_', and it is cut to a tag's 128
// characters.
func Tag(version string) string {
	b := []byte(version)
	for i, c := range b {
		ok := c == '_' || c == '.' || c == '-' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
		if !ok || (i == 0 && (c == '.' || c == '-')) {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "latest"
	}
	return string(b[:min(len(b), 128)])
}
