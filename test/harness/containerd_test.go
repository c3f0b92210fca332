package harness

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestRegistryServesBusyboxImages(t *testing.T) {
	RequireContainerd(t)
	ctx := t.Context()
	reg, err := StartRegistry(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Stop()
	imgs, err := reg.BuildBusyboxImage(ctx, "test/busybox", "1", "2")
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 2 || imgs[0].Digest == imgs[1].Digest {
		t.Fatalf("want two different images, got %+v", imgs)
	}
	// The same version builds the same bytes.
	again, err := reg.BuildBusyboxImage(ctx, "test/other", "1")
	if err != nil {
		t.Fatal(err)
	}
	if again[0].Digest != imgs[0].Digest {
		t.Errorf("image 1 built twice has digests %s and %s; want reproducible", imgs[0].Digest, again[0].Digest)
	}
	if want := reg.Host + "/test/busybox:1"; imgs[0].Ref != want {
		t.Errorf("Ref = %q, want %q", imgs[0].Ref, want)
	}
}

// TestContainerdRunsBusyboxFromRegistry checks the harness end to end with
// Debian's ctr, independent of Outpost's runtime: pull both images from the
// loopback registry over plain HTTP, run one to completion, leave one
// running, and check Stop leaves no shim and no mount behind.
func TestContainerdRunsBusyboxFromRegistry(t *testing.T) {
	RequireContainerd(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	reg, err := StartRegistry(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Stop()
	imgs, err := reg.BuildBusyboxImage(ctx, "test/busybox", "1", "2")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	c, err := StartContainerd(ctx, ContainerdOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			c.Stop()
		}
	}()

	for _, img := range imgs {
		if out, err := c.Ctr(ctx, "-n", "harness", "images", "pull", "--plain-http", img.Ref); err != nil {
			t.Fatalf("pull %s: %v\n%s", img.Ref, err, out)
		}
	}
	out, err := c.Ctr(ctx, "-n", "harness", "run", "--rm", imgs[1].Ref, "once", "sh", "-c", "echo hello; cat /etc/outpost-test-image; echo $OUTPOST_TEST_IMAGE")
	if err != nil {
		t.Fatalf("ctr run: %v\n%s\n%s", err, out, c.LogTail(20))
	}
	if got := strings.Fields(out); strings.Join(got, " ") != "hello 2 2" {
		t.Errorf("container printed %q, want hello, 2, 2", out)
	}
	if _, err := c.Ctr(ctx, "-n", "harness", "run", "-d", imgs[0].Ref, "sleeper", "sleep", "600"); err != nil {
		t.Fatal(err)
	}
	if len(c.Shims()) == 0 {
		t.Error("a task is running but Shims() finds no shim")
	}
	if len(c.Mounts()) == 0 {
		t.Error("a task is running but Mounts() finds no rootfs mount")
	}

	stopped = true
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if s := c.Shims(); len(s) > 0 {
		t.Errorf("shims left after Stop: %v", s)
	}
	if m := c.Mounts(); len(m) > 0 {
		t.Errorf("mounts left after Stop: %v", m)
	}
}
