package harness

// The registry is go-containerregistry's pkg/registry, run in-process on
// loopback, rather than Debian's docker-registry package. It is a real
// implementation of the OCI distribution API (blobs, chunked uploads,
// manifests, tags, referrers) kept by the same people as crane and ko, and it
// needs no binary on the machine, no configuration file and no port of its
// own beyond the listener it is handed, so every test gets a fresh, empty
// registry in milliseconds and nothing outlives the test process. The agent
// pulls from it over plain HTTP, exactly as it would from any registry
// configured as insecure; StartRegistryWith adds basic authentication and
// HTTPS with a private CA, for the agent's pull secrets and registry CAs. Debian's docker-registry (distribution 2.8) would be
// one more package and one more process for no gain in realism.

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Registry is an OCI registry on 127.0.0.1, started by StartRegistry
// (plain HTTP, anonymous) or StartRegistryWith. Call Stop when done.
type Registry struct {
	// Host is host:port, the registry part of an image reference
	// ("127.0.0.1:41234/test/busybox:1").
	Host string
	// URL is http://Host, or https://Host when serving TLS.
	URL string
	// CACert is the PEM file of the CA that signed the registry's
	// certificate when serving TLS; empty otherwise.
	CACert string

	opts RegistryOptions
	srv  *http.Server
	ln   net.Listener
}

// RegistryOptions change how StartRegistryWith's registry is reached.
// The zero value is StartRegistry's registry.
type RegistryOptions struct {
	// Log receives the registry's requests; nil discards them.
	Log *slog.Logger
	// Username and Password, when set, make the registry demand HTTP
	// basic authentication with exactly these on every request (401 with
	// a Basic challenge otherwise), as a registry with an htpasswd file.
	Username, Password string
	// TLSDir, when set, makes the registry serve HTTPS only, with a
	// certificate for 127.0.0.1 signed by a new CA of its own; both are
	// written there, created if missing (CACert names the CA's file).
	TLSDir string
}

// StartRegistry starts an empty in-memory registry on a free loopback port,
// serving plain HTTP without authentication. Requests are logged to log
// (nil discards them).
func StartRegistry(ctx context.Context, log *slog.Logger) (*Registry, error) {
	return StartRegistryWith(ctx, RegistryOptions{Log: log})
}

// StartRegistryWith starts an empty in-memory registry on a free loopback
// port with authentication or TLS as opts say.
func StartRegistryWith(ctx context.Context, opts RegistryOptions) (*Registry, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("registry: listen on 127.0.0.1: %w", err)
	}
	r := &Registry{
		Host: ln.Addr().String(),
		URL:  "http://" + ln.Addr().String(),
		opts: opts,
		ln:   ln,
	}
	var h http.Handler = registry.New(registry.Logger(slog.NewLogLogger(log.Handler(), slog.LevelDebug)))
	if opts.Username != "" {
		h = basicAuth(opts.Username, opts.Password, h)
	}
	r.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if opts.TLSDir != "" {
		if err := os.MkdirAll(opts.TLSDir, 0o755); err != nil {
			ln.Close()
			return nil, fmt.Errorf("registry: %w", err)
		}
		ca, caKey, caFile, _, err := newCA(opts.TLSDir, "registry-ca", "outpost-test-registry-ca")
		if err != nil {
			ln.Close()
			return nil, err
		}
		certFile, keyFile, err := issue(opts.TLSDir, ca, caKey, "registry", CertSpec{
			CommonName: "outpost-test-registry", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"}, Server: true,
		})
		if err != nil {
			ln.Close()
			return nil, err
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("registry: %w", err)
		}
		r.CACert, r.URL = caFile, "https://"+r.Host
		r.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		// Quiet the handshake failures of clients that do not trust the
		// CA: the tests cause them on purpose.
		r.srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
		go func() { _ = r.srv.ServeTLS(ln, "", "") }()
		return r, nil
	}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

// basicAuth demands HTTP basic authentication as user:pass.
func basicAuth(user, pass string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		u, p, ok := req.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(user)) != 1 || subtle.ConstantTimeCompare([]byte(p), []byte(pass)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="outpost-test-registry"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, req)
	})
}

// remoteOptions are how BuildBusyboxImage pushes: with the registry's
// login and trusting its CA.
func (r *Registry) remoteOptions(ctx context.Context) ([]remote.Option, error) {
	opts := []remote.Option{remote.WithContext(ctx)}
	if r.opts.Username != "" {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: r.opts.Username, Password: r.opts.Password}))
	}
	if r.CACert != "" {
		pem, err := os.ReadFile(r.CACert)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("registry: no certificate in %s", r.CACert)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		opts = append(opts, remote.WithTransport(tr))
	}
	return opts, nil
}

// Stop closes the listener and open connections. The registry's contents
// are gone with it.
func (r *Registry) Stop() error {
	if err := r.srv.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("registry: %w", err)
	}
	return nil
}

// Ref returns the full reference of repo:tag in this registry,
// e.g. Ref("test/busybox:1") is "127.0.0.1:41234/test/busybox:1".
func (r *Registry) Ref(repoTag string) string { return r.Host + "/" + repoTag }

// Busybox is where BuildBusyboxImage takes busybox from: Debian's
// busybox-static package, a static binary that runs in an image with
// nothing else in it.
const Busybox = "/bin/busybox"

// BusyboxImage describes one image pushed by BuildBusyboxImage.
type BusyboxImage struct {
	// Ref is the tagged reference, registry host included.
	Ref string
	// Digest is the manifest digest ("sha256:…"), what a pull by digest
	// or an image ID in a pod status names.
	Digest string
	// Version is the value of OUTPOST_TEST_IMAGE in the image's
	// environment and the content of /etc/outpost-test-image; it tells
	// images of different tags apart from inside a container.
	Version string
}

// BuildBusyboxImage builds an OCI image (OCI manifest, config and one gzip
// layer) for the machine's architecture holding Debian's static busybox at
// /bin/busybox with a symlink per applet in /bin (sh, echo, sleep, cat…), a
// default command of sh and PATH set, and pushes it to r as
// repo:tag for every tag given. Each tag gets a different image: its
// version (the tag itself) is in /etc/outpost-test-image and in the
// environment variable OUTPOST_TEST_IMAGE, so "test/busybox", "1", "2"
// gives two images for a rolling update. No Docker is involved.
func (r *Registry) BuildBusyboxImage(ctx context.Context, repo string, tags ...string) ([]BusyboxImage, error) {
	if len(tags) == 0 {
		return nil, errors.New("BuildBusyboxImage: no tags given")
	}
	bin, applets, err := readBusybox(ctx)
	if err != nil {
		return nil, err
	}
	ropts, err := r.remoteOptions(ctx)
	if err != nil {
		return nil, err
	}
	var out []BusyboxImage
	for _, tag := range tags {
		ref, err := name.NewTag(r.Ref(repo+":"+tag), name.Insecure)
		if err != nil {
			return nil, fmt.Errorf("image reference %s:%s: %w", repo, tag, err)
		}
		img, err := busyboxImage(bin, applets, tag)
		if err != nil {
			return nil, err
		}
		if err := remote.Write(ref, img, ropts...); err != nil {
			return nil, fmt.Errorf("push %s: %w", ref, err)
		}
		d, err := img.Digest()
		if err != nil {
			return nil, err
		}
		out = append(out, BusyboxImage{Ref: ref.String(), Digest: d.String(), Version: tag})
	}
	return out, nil
}

// BusyboxMissing returns an error saying what to install if Debian's
// busybox-static is not on this machine, and nil otherwise.
func BusyboxMissing() error {
	if _, err := os.Stat(Busybox); err != nil {
		return fmt.Errorf("%s is missing: install Debian's busybox-static (apt-get install busybox-static): %w", Busybox, err)
	}
	out, err := exec.Command("file", "-L", Busybox).Output()
	if err == nil && !bytes.Contains(out, []byte("statically linked")) && !bytes.Contains(out, []byte("static-pie")) {
		return fmt.Errorf("%s is not statically linked (%s): install Debian's busybox-static, not busybox", Busybox, bytes.TrimSpace(out))
	}
	return nil
}

// readBusybox reads the busybox binary and the names of its applets.
func readBusybox(ctx context.Context) ([]byte, []string, error) {
	if err := BusyboxMissing(); err != nil {
		return nil, nil, err
	}
	bin, err := os.ReadFile(Busybox)
	if err != nil {
		return nil, nil, err
	}
	out, err := exec.CommandContext(ctx, Busybox, "--list").Output()
	if err != nil {
		return nil, nil, fmt.Errorf("%s --list: %w", Busybox, err)
	}
	var applets []string
	for _, a := range strings.Fields(string(out)) {
		if a != "busybox" && !strings.Contains(a, "/") {
			applets = append(applets, a)
		}
	}
	sort.Strings(applets)
	return bin, applets, nil
}

// busyboxImage assembles the image for one version.
func busyboxImage(bin []byte, applets []string, version string) (v1.Image, error) {
	layerTar, err := busyboxLayer(bin, applets, version)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("busybox layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, layer)
	if err != nil {
		return nil, fmt.Errorf("busybox image: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = runtime.GOARCH
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Cmd = []string{"sh"}
	cf.Config.Env = []string{"PATH=/bin", "OUTPOST_TEST_IMAGE=" + version}
	cf.Config.WorkingDir = "/"
	cf.Config.Labels = map[string]string{"dev.outpost.test-image": version}
	return mutate.ConfigFile(img, cf)
}

// busyboxLayer returns an uncompressed tar: /bin/busybox, a symlink per
// applet, /etc/outpost-test-image, and empty /tmp, /proc, /sys, /dev, /etc
// directories the runtime mounts over. Timestamps are fixed so the same
// version always gives the same digest.
func busyboxLayer(bin []byte, applets []string, version string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(0, 0)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: mtime})
	}
	file := func(name string, mode int64, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(b)), ModTime: mtime}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	for _, d := range []string{"bin", "dev", "etc", "proc", "sys", "root"} {
		if err := dir(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := dir("tmp", 0o1777); err != nil {
		return nil, err
	}
	if err := file("bin/busybox", 0o755, bin); err != nil {
		return nil, err
	}
	for _, a := range applets {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: path.Join("bin", a), Linkname: "busybox", Mode: 0o777, ModTime: mtime}); err != nil {
			return nil, err
		}
	}
	if err := file("etc/outpost-test-image", 0o644, []byte(version+"\n")); err != nil {
		return nil, err
	}
	if err := file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")); err != nil {
		return nil, err
	}
	if err := file("etc/group", 0o644, []byte("root:x:0:\nnobody:x:65534:\n")); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
