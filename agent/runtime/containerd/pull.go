package containerd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Media types of manifests this package pulls.
const (
	mediaOCIIndex       = "application/vnd.oci.image.index.v1+json"
	mediaOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	mediaDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
)

// maxManifest bounds manifests, indexes and image configs read into memory.
const maxManifest = 4 << 20

// Progress reports how far a pull is; Pull calls its callback after every
// chunk written to containerd and once per blob when done.
type Progress struct {
	Image     string
	Digest    string // blob being fetched
	Kind      string // "manifest", "config", "layer" or "unpack"
	Done      int64  // bytes written so far
	Total     int64  // bytes in the blob
	Completed bool   // the blob is in containerd's content store (or unpacked)
}

// Image is a pulled, unpacked image.
type Image struct {
	// Name is the reference as given to Pull (containerd's image name).
	Name string
	// Digest is the digest of the image manifest for this platform.
	Digest string
	// ChainID names the committed snapshot of its top layer.
	ChainID string
	// Config is the image configuration (entrypoint, cmd, env…).
	Config ImageConfig
}

// ImageConfig is the part of an OCI image configuration a container
// inherits.
type ImageConfig struct {
	User       string   `json:"User,omitempty"`
	Env        []string `json:"Env,omitempty"`
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	WorkingDir string   `json:"WorkingDir,omitempty"`
}

type imageConfigFile struct {
	Architecture string      `json:"architecture"`
	OS           string      `json:"os"`
	Config       ImageConfig `json:"config"`
	RootFS       struct {
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

type manifest struct {
	MediaType string       `json:"mediaType"`
	Config    descriptor   `json:"config"`
	Layers    []descriptor `json:"layers"`
	Manifests []descriptor `json:"manifests"`
}

// imageRef is a parsed image reference.
type imageRef struct {
	host, repo, tag, digest string
}

// parseRef parses "host[:port]/repo[:tag][@digest]"; a reference without a
// registry host is on Docker Hub, as in Kubernetes.
func parseRef(s string) (imageRef, error) {
	var r imageRef
	rest := s
	if i := strings.Index(rest, "@"); i >= 0 {
		rest, r.digest = rest[:i], rest[i+1:]
		if !strings.HasPrefix(r.digest, "sha256:") || len(r.digest) != 71 {
			return r, fmt.Errorf("image %q: digest must be sha256:<64 hex digits>", s)
		}
	}
	if i := strings.LastIndex(rest, ":"); i >= 0 && !strings.Contains(rest[i:], "/") {
		rest, r.tag = rest[:i], rest[i+1:]
	}
	first, after, hasSlash := strings.Cut(rest, "/")
	if hasSlash && (strings.ContainsAny(first, ".:") || first == "localhost") {
		r.host, r.repo = first, after
	} else {
		r.host, r.repo = "docker.io", rest
		if !hasSlash {
			r.repo = "library/" + rest
		}
	}
	if r.repo == "" {
		return r, fmt.Errorf("image %q: no repository", s)
	}
	if r.tag == "" && r.digest == "" {
		r.tag = "latest"
	}
	return r, nil
}

// registryClient fetches from one registry for one pull, remembering the
// bearer token or basic login that worked. With several credentials it
// tries each in turn until the registry accepts one, as a kubelet does.
type registryClient struct {
	r     *Runtime
	http  *http.Client
	ref   imageRef
	base  string
	creds []Credential
	cred  int    // index in creds of the one in use
	basic bool   // the registry asked for basic authentication
	token string // bearer token for the current credential
}

func (r *Runtime) registryClient(ref imageRef, creds []Credential) *registryClient {
	reg := r.cfg.Registries[ref.host]
	host := ref.host
	if host == "docker.io" {
		host = "registry-1.docker.io"
	}
	scheme := "https"
	if reg.PlainHTTP {
		scheme = "http"
	}
	cs := matchCredentials(creds, ref)
	if reg.Username != "" {
		cs = append(cs, Credential{Registry: ref.host, Username: reg.Username, Password: reg.Password})
	}
	return &registryClient{r: r, http: r.httpFor(ref.host), ref: ref, base: scheme + "://" + host + "/v2/" + ref.repo, creds: cs}
}

// current is the credential in use; the zero Credential is anonymous.
func (rc *registryClient) current() Credential {
	if rc.cred < len(rc.creds) {
		return rc.creds[rc.cred]
	}
	return Credential{}
}

// next moves to the next credential; false when none is left.
func (rc *registryClient) next() bool {
	if rc.cred+1 >= len(rc.creds) {
		return false
	}
	rc.cred++
	rc.token, rc.basic = "", false
	return true
}

// get fetches path under the repository (manifests/…, blobs/…),
// authenticating when the registry asks.
func (rc *registryClient) get(ctx context.Context, path string, accept ...string) (*http.Response, error) {
	reauthed := false
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, rc.base+"/"+path, nil)
		if err != nil {
			return nil, err
		}
		for _, a := range accept {
			req.Header.Add("Accept", a)
		}
		if c := rc.current(); rc.token != "" {
			req.Header.Set("Authorization", "Bearer "+rc.token)
		} else if rc.basic && c.Username != "" {
			req.SetBasicAuth(c.Username, c.Password)
		}
		resp, err := rc.http.Do(req)
		if err != nil {
			return nil, fmt.Errorf("registry %s: %w", rc.ref.host, tlsHint(rc.ref.host, err))
		}
		if resp.StatusCode == http.StatusUnauthorized {
			challenge := resp.Header.Get("WWW-Authenticate")
			resp.Body.Close()
			if !reauthed {
				// First refusal on this request (or an expired token):
				// answer the challenge with the current credential.
				reauthed = true
				aerr := rc.authenticate(ctx, challenge)
				if aerr == nil {
					continue
				}
				if !rc.next() {
					return nil, aerr
				}
				reauthed = false
				continue
			}
			if rc.next() {
				reauthed = false
				continue
			}
			return nil, rc.refused()
		}
		if resp.StatusCode != http.StatusOK {
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			err := fmt.Errorf("registry %s: GET %s: %s: %s", rc.ref.host, req.URL.Path, resp.Status, bytes.TrimSpace(msg))
			if resp.StatusCode == http.StatusNotFound {
				err = fmt.Errorf("%w (%w)", err, ErrNotFound)
			}
			return nil, err
		}
		return resp, nil
	}
}

// refused says the registry turned every credential down.
func (rc *registryClient) refused() error {
	if rc.current().Username == "" {
		return fmt.Errorf("registry %s: unauthorized for %s: no credentials match it (add an imagePullSecret, or credentials in containerd.registries)", rc.ref.host, rc.ref.repo)
	}
	return fmt.Errorf("registry %s: unauthorized for %s: it rejected the %d credential(s) tried (check the pull secret)", rc.ref.host, rc.ref.repo, len(rc.creds))
}

// authenticate answers a WWW-Authenticate challenge with the current
// credential: basic needs one, bearer gets a token from the realm
// (anonymously if there is none).
func (rc *registryClient) authenticate(ctx context.Context, challenge string) error {
	cred := rc.current()
	scheme, params, _ := strings.Cut(challenge, " ")
	switch strings.ToLower(scheme) {
	case "basic":
		if cred.Username == "" || rc.basic {
			return rc.refused()
		}
		rc.basic = true
		return nil
	case "bearer":
	default:
		return fmt.Errorf("registry %s: unsupported authentication challenge %q", rc.ref.host, challenge)
	}
	p := map[string]string{}
	for _, kv := range strings.Split(params, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		p[strings.ToLower(k)] = strings.Trim(v, `"`)
	}
	u, err := url.Parse(p["realm"])
	if err != nil || p["realm"] == "" {
		return fmt.Errorf("registry %s: bearer challenge without a usable realm: %q", rc.ref.host, challenge)
	}
	q := u.Query()
	if p["service"] != "" {
		q.Set("service", p["service"])
	}
	scope := p["scope"]
	if scope == "" {
		scope = "repository:" + rc.ref.repo + ":pull"
	}
	q.Set("scope", scope)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	if cred.Username != "" {
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(cred.Username+":"+cred.Password)))
	}
	resp, err := rc.r.httpFor(u.Host).Do(req)
	if err != nil {
		return fmt.Errorf("registry %s: token from %s: %w", rc.ref.host, u.Host, tlsHint(u.Host, err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("registry %s: token from %s: %s (check the pull secret)", rc.ref.host, u.Host, resp.Status)
	}
	var tok struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&tok); err != nil {
		return fmt.Errorf("registry %s: token response: %w", rc.ref.host, err)
	}
	rc.token = tok.Token
	if rc.token == "" {
		rc.token = tok.AccessToken
	}
	return nil
}

// getSmall fetches a manifest or config into memory and checks its digest
// when one is known.
func (rc *registryClient) getSmall(ctx context.Context, path, wantDigest string, accept ...string) ([]byte, string, error) {
	resp, err := rc.get(ctx, path, accept...)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxManifest+1))
	if err != nil {
		return nil, "", fmt.Errorf("registry %s: read %s: %w", rc.ref.host, path, err)
	}
	if len(b) > maxManifest {
		return nil, "", fmt.Errorf("registry %s: %s is larger than %d bytes", rc.ref.host, path, maxManifest)
	}
	sum := sha256.Sum256(b)
	got := "sha256:" + hex.EncodeToString(sum[:])
	if wantDigest != "" && got != wantDigest {
		return nil, "", fmt.Errorf("registry %s: %s has digest %s, want %s", rc.ref.host, path, got, wantDigest)
	}
	return b, resp.Header.Get("Content-Type"), nil
}

// Pull fetches image (a reference such as "127.0.0.1:5000/test/busybox:1")
// for this machine's platform into containerd's content store, unpacks its
// layers into snapshots and records it as a containerd image. Blobs and
// snapshots already present are not fetched again. progress may be nil.
func (r *Runtime) Pull(ctx context.Context, image string, progress func(Progress)) (*Image, error) {
	return r.PullWith(ctx, image, nil, progress)
}

// PullWith is Pull with credentials (a pod's pull secrets): those matching
// the image's registry are tried, most specific first, then the
// registry's configured login.
func (r *Runtime) PullWith(ctx context.Context, image string, creds []Credential, progress func(Progress)) (*Image, error) {
	if progress == nil {
		progress = func(Progress) {}
	}
	ref, err := parseRef(image)
	if err != nil {
		return nil, err
	}
	rc := r.registryClient(ref, creds)
	ctx, done, err := r.lease(ctx, time.Hour)
	if err != nil {
		return nil, err
	}
	defer done()

	accept := []string{mediaOCIIndex, mediaOCIManifest, mediaDockerList, mediaDockerManifest}
	tagOrDigest := ref.digest
	if tagOrDigest == "" {
		tagOrDigest = ref.tag
	}
	mb, mt, err := rc.getSmall(ctx, "manifests/"+tagOrDigest, ref.digest, accept...)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", image, err)
	}
	var m manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return nil, fmt.Errorf("pull %s: manifest: %w", image, err)
	}
	if m.MediaType != "" {
		mt = m.MediaType
	}
	if mt == mediaOCIIndex || mt == mediaDockerList || (len(m.Manifests) > 0 && len(m.Layers) == 0) {
		d, err := pickPlatform(m.Manifests)
		if err != nil {
			return nil, fmt.Errorf("pull %s: %w", image, err)
		}
		mb, mt, err = rc.getSmall(ctx, "manifests/"+d.Digest, d.Digest, accept...)
		if err != nil {
			return nil, fmt.Errorf("pull %s: %w", image, err)
		}
		m = manifest{}
		if err := json.Unmarshal(mb, &m); err != nil {
			return nil, fmt.Errorf("pull %s: manifest: %w", image, err)
		}
		if m.MediaType != "" {
			mt = m.MediaType
		}
	}
	if mt != mediaOCIManifest && mt != mediaDockerManifest {
		return nil, fmt.Errorf("pull %s: unsupported manifest media type %q", image, mt)
	}
	sum := sha256.Sum256(mb)
	manifestDesc := descriptor{MediaType: mt, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(mb))}

	cb, _, err := rc.getSmall(ctx, "blobs/"+m.Config.Digest, m.Config.Digest)
	if err != nil {
		return nil, fmt.Errorf("pull %s: config: %w", image, err)
	}
	var cfg imageConfigFile
	if err := json.Unmarshal(cb, &cfg); err != nil {
		return nil, fmt.Errorf("pull %s: config: %w", image, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("pull %s: config lists %d layers, manifest %d", image, len(cfg.RootFS.DiffIDs), len(m.Layers))
	}
	chain := chainIDs(cfg.RootFS.DiffIDs)
	top := ""
	if len(chain) > 0 {
		top = chain[len(chain)-1]
	}

	for _, l := range m.Layers {
		if err := r.fetchBlob(ctx, rc, image, "layer", l, nil, progress); err != nil {
			return nil, fmt.Errorf("pull %s: layer %s: %w", image, l.Digest, err)
		}
	}
	cfgLabels := map[string]string{}
	if top != "" {
		cfgLabels["containerd.io/gc.ref.snapshot."+Snapshotter] = top
	}
	if err := r.writeBlob(ctx, image, "config", m.Config, bytes.NewReader(cb), cfgLabels, progress); err != nil {
		return nil, fmt.Errorf("pull %s: config: %w", image, err)
	}
	mLabels := map[string]string{"containerd.io/gc.ref.content.config": m.Config.Digest}
	for i, l := range m.Layers {
		mLabels["containerd.io/gc.ref.content.l."+strconv.Itoa(i)] = l.Digest
	}
	if err := r.writeBlob(ctx, image, "manifest", manifestDesc, bytes.NewReader(mb), mLabels, progress); err != nil {
		return nil, fmt.Errorf("pull %s: manifest: %w", image, err)
	}
	for i, l := range m.Layers {
		if err := r.unpack(ctx, l, chain, i); err != nil {
			return nil, fmt.Errorf("pull %s: unpack layer %s: %w", image, l.Digest, err)
		}
		progress(Progress{Image: image, Digest: l.Digest, Kind: "unpack", Done: l.Size, Total: l.Size, Completed: true})
	}
	img := enc(nil).str(imageName, image).msg(imageTarget, manifestDesc.enc())
	if _, err := r.c.unary(ctx, "containerd.services.images.v1.Images/Create", enc(nil).msg(imageField, img)); err != nil {
		if !errors.Is(err, ErrAlreadyExists) {
			return nil, fmt.Errorf("pull %s: record image: %w", image, err)
		}
		if _, err := r.c.unary(ctx, "containerd.services.images.v1.Images/Update", enc(nil).msg(imageField, img)); err != nil {
			return nil, fmt.Errorf("pull %s: update image: %w", image, err)
		}
	}
	r.log.Info("image pulled", "image", image, "digest", manifestDesc.Digest, "layers", len(m.Layers))
	return &Image{Name: image, Digest: manifestDesc.Digest, ChainID: top, Config: cfg.Config}, nil
}

// pickPlatform chooses this machine's linux/GOARCH entry of an index.
func pickPlatform(ds []descriptor) (descriptor, error) {
	var seen []string
	for _, d := range ds {
		if d.Platform == nil {
			continue
		}
		if d.Platform.OS == "linux" && d.Platform.Architecture == runtime.GOARCH {
			return d, nil
		}
		seen = append(seen, d.Platform.OS+"/"+d.Platform.Architecture)
	}
	return descriptor{}, fmt.Errorf("no image for linux/%s in the index (it has %s)", runtime.GOARCH, strings.Join(seen, ", "))
}

// chainIDs computes the snapshot names of an image's layers from their
// uncompressed digests, as the OCI image spec defines ChainID.
func chainIDs(diffIDs []string) []string {
	out := make([]string, len(diffIDs))
	for i, d := range diffIDs {
		if i == 0 {
			out[i] = d
			continue
		}
		sum := sha256.Sum256([]byte(out[i-1] + " " + d))
		out[i] = "sha256:" + hex.EncodeToString(sum[:])
	}
	return out
}

// hasContent reports whether containerd's content store has digest.
func (r *Runtime) hasContent(ctx context.Context, digest string) (bool, error) {
	_, err := r.c.unary(ctx, "containerd.services.content.v1.Content/Info", enc(nil).str(contentDigest, digest))
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// fetchBlob streams a blob from the registry into the content store unless
// it is there already.
func (r *Runtime) fetchBlob(ctx context.Context, rc *registryClient, image, kind string, d descriptor, labels map[string]string, progress func(Progress)) error {
	if ok, err := r.hasContent(ctx, d.Digest); err != nil {
		return err
	} else if ok {
		progress(Progress{Image: image, Digest: d.Digest, Kind: kind, Done: d.Size, Total: d.Size, Completed: true})
		return nil
	}
	resp, err := rc.get(ctx, "blobs/"+d.Digest)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return r.writeBlob(ctx, image, kind, d, resp.Body, labels, progress)
}

// writeBlob writes src into the content store with one Content.Write
// stream: WRITE messages of up to 1 MiB, then COMMIT with the expected
// digest and size, which containerd verifies.
func (r *Runtime) writeBlob(ctx context.Context, image, kind string, d descriptor, src io.Reader, labels map[string]string, progress func(Progress)) error {
	if ok, err := r.hasContent(ctx, d.Digest); err != nil {
		return err
	} else if ok {
		progress(Progress{Image: image, Digest: d.Digest, Kind: kind, Done: d.Size, Total: d.Size, Completed: true})
		return nil
	}
	ref := "outpost-" + randomID() + "-" + strings.TrimPrefix(d.Digest, "sha256:")
	pr, pw := io.Pipe()
	go func() {
		buf := make([]byte, 1<<20)
		var off int64
		for {
			n, err := io.ReadFull(src, buf)
			if n > 0 {
				m := enc(nil).uint(writeContentAction, writeActionWrite).str(writeContentRef, ref).uint(writeContentTotal, uint64(d.Size)).
					str(writeContentExpected, d.Digest).uint(writeContentOffset, uint64(off)).bytes(writeContentData, buf[:n])
				if _, werr := pw.Write(frame(m)); werr != nil {
					return
				}
				off += int64(n)
				progress(Progress{Image: image, Digest: d.Digest, Kind: kind, Done: off, Total: d.Size})
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			if err != nil {
				pw.CloseWithError(err)
				return
			}
			if off > d.Size {
				pw.CloseWithError(fmt.Errorf("blob is larger than the %d bytes its descriptor says", d.Size))
				return
			}
		}
		// COMMIT carries the offset: containerd truncates to a message's
		// offset when it is 0 (an omitted field) and data was written.
		m := enc(nil).uint(writeContentAction, writeActionCommit).str(writeContentRef, ref).uint(writeContentTotal, uint64(d.Size)).
			str(writeContentExpected, d.Digest).uint(writeContentOffset, uint64(off)).labels(writeContentLabels, labels)
		_, _ = pw.Write(frame(m))
		pw.Close()
	}()
	err := r.c.stream(ctx, "containerd.services.content.v1.Content/Write", pr, func([]byte) error { return nil })
	pr.CloseWithError(errors.New("write stream ended"))
	if err != nil {
		if errors.Is(err, ErrAlreadyExists) {
			err = nil
		} else {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_, _ = r.c.unary(actx, "containerd.services.content.v1.Content/Abort", enc(nil).str(abortRef, ref))
			cancel()
			return err
		}
	}
	progress(Progress{Image: image, Digest: d.Digest, Kind: kind, Done: d.Size, Total: d.Size, Completed: true})
	return nil
}

// unpack applies layer i on top of the snapshot of layer i-1 and commits it
// as chain[i], unless that snapshot exists.
func (r *Runtime) unpack(ctx context.Context, layer descriptor, chain []string, i int) error {
	_, err := r.c.unary(ctx, "containerd.services.snapshots.v1.Snapshots/Stat", enc(nil).str(snapshotSnapshotter, Snapshotter).str(snapshotKey, chain[i]))
	if err == nil {
		return nil
	}
	if !errors.Is(err, ErrNotFound) {
		return err
	}
	parent := ""
	if i > 0 {
		parent = chain[i-1]
	}
	key := "outpost-extract-" + randomID() + "-" + chain[i]
	b, err := r.c.unary(ctx, "containerd.services.snapshots.v1.Snapshots/Prepare",
		enc(nil).str(snapshotSnapshotter, Snapshotter).str(snapshotKey, key).str(prepareParent, parent))
	if err != nil {
		return err
	}
	mounts, err := decodeMounts(b, "PrepareSnapshotResponse")
	if err != nil {
		_, _ = r.c.unary(context.WithoutCancel(ctx), "containerd.services.snapshots.v1.Snapshots/Remove", enc(nil).str(snapshotSnapshotter, Snapshotter).str(snapshotKey, key))
		return badReply("containerd.services.snapshots.v1.Snapshots/Prepare", err)
	}
	req := enc(nil).msg(applyDiff, layer.enc())
	for _, m := range mounts {
		req = req.msg(applyMounts, m.enc())
	}
	remove := func() {
		_, _ = r.c.unary(context.WithoutCancel(ctx), "containerd.services.snapshots.v1.Snapshots/Remove", enc(nil).str(snapshotSnapshotter, Snapshotter).str(snapshotKey, key))
	}
	if _, err := r.c.unary(ctx, "containerd.services.diff.v1.Diff/Apply", req); err != nil {
		remove()
		return err
	}
	_, err = r.c.unary(ctx, "containerd.services.snapshots.v1.Snapshots/Commit",
		enc(nil).str(commitSnapshotter, Snapshotter).str(commitName, chain[i]).str(commitKey, key))
	if errors.Is(err, ErrAlreadyExists) { // unpacked meanwhile by another pull
		remove()
		return nil
	}
	return err
}

// imageConfig reads the config of an image recorded in containerd.
func (r *Runtime) imageConfig(ctx context.Context, name string) (*imageConfigFile, string, error) {
	b, err := r.c.unary(ctx, "containerd.services.images.v1.Images/Get", enc(nil).str(getImageName, name))
	if err != nil {
		return nil, "", fmt.Errorf("image %s: %w", name, err)
	}
	desc, err := decodeGetImage(b)
	if err != nil {
		return nil, "", fmt.Errorf("image %s: %w", name, badReply("containerd.services.images.v1.Images/Get", err))
	}
	target := desc.Digest
	mb, err := r.readContent(ctx, target)
	if err != nil {
		return nil, "", fmt.Errorf("image %s: manifest: %w", name, err)
	}
	var m manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return nil, "", fmt.Errorf("image %s: manifest: %w", name, err)
	}
	cb, err := r.readContent(ctx, m.Config.Digest)
	if err != nil {
		return nil, "", fmt.Errorf("image %s: config: %w", name, err)
	}
	var cfg imageConfigFile
	if err := json.Unmarshal(cb, &cfg); err != nil {
		return nil, "", fmt.Errorf("image %s: config: %w", name, err)
	}
	return &cfg, target, nil
}

// decodeGetImage decodes a GetImageResponse: its image's target.
func decodeGetImage(b []byte) (target descriptor, err error) {
	const msg = "containerd.services.images.v1.GetImageResponse"
	found := false
	err = fields(b, msg, func(f field) error {
		if f.num != imageField {
			return nil
		}
		d, err := f.bytes()
		if err != nil {
			return err
		}
		found = true
		return fields(d, "containerd.services.images.v1.Image", func(f field) error {
			if f.num != imageTarget {
				return nil
			}
			d, err := f.bytes()
			if err == nil {
				target, err = decodeDescriptor(d)
			}
			return err
		})
	})
	if err == nil && !found {
		err = errors.New(msg + " without an image")
	}
	return target, err
}

// readContent reads a small blob (manifest, config) from the content
// store; one larger than maxManifest is an error.
func (r *Runtime) readContent(ctx context.Context, digest string) ([]byte, error) {
	const method = "containerd.services.content.v1.Content/Read"
	var out []byte
	err := r.c.stream(ctx, method, bytes.NewReader(frame(enc(nil).str(contentDigest, digest))), func(m []byte) error {
		off, data, err := decodeReadContent(m)
		if err != nil {
			return badReply(method, err)
		}
		if off != int64(len(out)) {
			return badReply(method, fmt.Errorf("%s: data at offset %d, want %d", digest, off, len(out)))
		}
		if len(out)+len(data) > maxManifest {
			return fmt.Errorf("containerd %s: %s is larger than %d bytes, the limit for manifests and image configs", method, digest, maxManifest)
		}
		out = append(out, data...)
		return nil
	})
	return out, err
}

// decodeReadContent decodes a ReadContentResponse.
func decodeReadContent(b []byte) (offset int64, data []byte, err error) {
	err = fields(b, "containerd.services.content.v1.ReadContentResponse", func(f field) error {
		var err error
		switch f.num {
		case readContentOffset:
			var v uint64
			v, err = f.varint()
			offset = int64(v)
		case readContentData:
			data, err = f.bytes()
		}
		return err
	})
	return offset, data, err
}
