package deb

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testPackage() *Package {
	return &Package{
		Name: "hello", Version: DebianVersion("v1.0.0-rc1+abc"), Architecture: "amd64",
		Maintainer: "Outpost <outpost@example.com>", Section: "admin", Priority: "optional",
		Description: "says hello\nA longer text.\n\nSecond paragraph.",
		Files: []File{
			{Path: "/usr/bin/hello", Mode: 0o755, Data: []byte("#!/bin/sh\necho hello\n")},
			{Path: "/etc/hello/hello.conf", Mode: 0o644, Data: []byte("# nothing\n"), Conffile: true},
		},
		Scripts: map[string]string{"postinst": "#!/bin/sh\nset -e\n"},
		Time:    time.Unix(1700000000, 0),
	}
}

func TestWriteIsReproducible(t *testing.T) {
	var a, b bytes.Buffer
	if err := testPackage().Write(&a); err != nil {
		t.Fatal(err)
	}
	if err := testPackage().Write(&b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("the same package written twice differs")
	}
}

// TestDpkgReadsIt has Debian's own tools read what Write wrote.
func TestDpkgReadsIt(t *testing.T) {
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Fatal("dpkg-deb is missing: install Debian's dpkg package")
	}
	dir := t.TempDir()
	debPath := filepath.Join(dir, "hello.deb")
	var buf bytes.Buffer
	if err := testPackage().Write(&buf); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(debPath, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "TZ=UTC")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	for field, want := range map[string]string{"Package": "hello", "Version": "1.0.0~rc1+abc", "Architecture": "amd64", "Installed-Size": "6"} {
		if got := strings.TrimSpace(run("dpkg-deb", "--field", debPath, field)); got != want {
			t.Errorf("%s = %q, want %q", field, got, want)
		}
	}
	info := run("dpkg-deb", "--info", debPath)
	for _, want := range []string{" conffiles", " postinst", "  A longer text.\n  .\n  Second paragraph."} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb --info lacks %q:\n%s", want, info)
		}
	}
	contents := run("dpkg-deb", "--contents", debPath)
	for _, want := range []string{"-rwxr-xr-x root/root        21 2023-11-14 22:13 ./usr/bin/hello", "drwxr-xr-x root/root         0 2023-11-14 22:13 ./etc/hello/"} {
		if !strings.Contains(contents, want) {
			t.Errorf("dpkg-deb --contents lacks %q:\n%s", want, contents)
		}
	}
	if got := run("dpkg-deb", "--ctrl-tarfile", debPath); len(got) == 0 {
		t.Error("empty control tar")
	}
	root := filepath.Join(dir, "root")
	run("dpkg-deb", "-x", debPath, root)
	if b, err := os.ReadFile(filepath.Join(root, "etc/hello/hello.conf")); err != nil || string(b) != "# nothing\n" {
		t.Errorf("extracted conffile: %q, %v", b, err)
	}
}

func TestBadPackages(t *testing.T) {
	for name, mutate := range map[string]func(*Package){
		"version without digit": func(p *Package) { p.Version = "v1" },
		"relative path":         func(p *Package) { p.Files[0].Path = "usr/bin/x" },
		"conffile outside etc":  func(p *Package) { p.Files[0].Conffile = true },
		"duplicate":             func(p *Package) { p.Files[1].Path = p.Files[0].Path },
		"unknown script":        func(p *Package) { p.Scripts["config"] = "" },
	} {
		p := testPackage()
		mutate(p)
		if err := p.Write(new(bytes.Buffer)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestDebianVersion(t *testing.T) {
	for in, want := range map[string]string{"v0.1.0-dev+5f3c": "0.1.0~dev+5f3c", "1.2.3": "1.2.3", "dev": "0~dev"} {
		if got := DebianVersion(in); got != want {
			t.Errorf("DebianVersion(%q) = %q, want %q", in, got, want)
		}
	}
}
