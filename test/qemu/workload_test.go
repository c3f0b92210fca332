//go:build qemu

package qemu

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
)

// guestBusybox returns the static busybox of the guest's architecture:
// the busybox-static package the image builder downloaded into its apt
// cache for this image (the host's /bin/busybox is the host's
// architecture, which the guest cannot run).
func guestBusybox(t *testing.T, arch string) []byte {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	debs, _ := filepath.Glob(filepath.Join(cache, "outpost", "apt", "*-"+arch, "debs", "busybox-static_*_"+arch+".deb"))
	if len(debs) == 0 {
		t.Fatalf("no busybox-static %s package in %s/outpost/apt: the image build should have fetched it", arch, cache)
	}
	dir := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-x", debs[len(debs)-1], dir).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x %s: %v\n%s", debs[len(debs)-1], err, out)
	}
	for _, p := range []string{"usr/bin/busybox", "bin/busybox"} {
		if b, err := os.ReadFile(filepath.Join(dir, p)); err == nil {
			return b
		}
	}
	t.Fatalf("%s has no busybox binary", debs[len(debs)-1])
	return nil
}

// pushGuestImage pushes repo:tag to reg: an OCI image for arch holding
// busybox with the applets a pod needs, and returns its reference as the
// guest sees it (10.0.2.2:PORT/repo:tag).
func pushGuestImage(t *testing.T, ctx context.Context, reg *harness.Registry, arch, repoTag string, busybox []byte) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(0, 0)
	for _, d := range []string{"bin", "dev", "etc", "proc", "sys", "tmp"} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: mtime})
	}
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(busybox)), ModTime: mtime})
	tw.Write(busybox)
	for _, a := range []string{"sh", "sleep", "cat", "echo", "date", "true", "mkdir", "wget", "httpd"} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: mtime})
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	if img, err = mutate.AppendLayers(img, layer); err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Created = v1.Time{Time: mtime.UTC()}
	cf.Config.Cmd = []string{"sh"}
	cf.Config.Env = []string{"PATH=/bin"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag(reg.Ref(repoTag), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	_, port, _ := strings.Cut(reg.Host, ":")
	return hostFromGuest + ":" + port + "/" + repoTag
}

// workload is the benchmark's second step: devices Devices on the sim
// board and pods pods of image on the gateway's node.
type workload struct {
	Devices, Pods int
	Image         string
}

// apply creates the Devices and Pods (labelled bench=mem), then waits
// until every pod is Ready and every Device Connected.
func (w workload) apply(t *testing.T, ctx context.Context, g *gateway) {
	t.Helper()
	y := stack.MemWorkload{Node: g.Node, Devices: w.Devices, Pods: w.Pods, Image: w.Image}.YAML()
	f := filepath.Join(t.TempDir(), "workload.yaml")
	if err := os.WriteFile(f, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if out, err := g.St.CP.Kubectl(ctx, "apply", "-f", f); err != nil {
		t.Fatalf("kubectl apply (workload): %v\n%s", err, out)
	}
	// Emulated: pulls, unpacks and ten runc starts take minutes under TCG.
	for _, what := range []struct{ kind, cond string }{{"pod", "Ready"}, {"device", "Connected"}} {
		left := time.Until(deadline(ctx, 12*time.Minute))
		out, err := g.St.CP.Kubectl(ctx, "wait", "--for=condition="+what.cond, what.kind, "-l", "bench=mem",
			"--timeout="+left.Round(time.Second).String())
		if err != nil {
			st, _ := g.St.CP.Kubectl(ctx, "get", what.kind, "-l", "bench=mem", "-o", "wide")
			t.Fatalf("%ss not %s %v after apply: %v\n%s\n%s\nlast console lines:\n%s", what.kind, what.cond,
				time.Since(t0).Round(time.Second), err, out, st, g.Con.Tail(30))
		}
		t.Logf("every %s %s %.0fs after kubectl apply", what.kind, what.cond, time.Since(t0).Seconds())
	}
}

func deadline(ctx context.Context, def time.Duration) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(def)
}
