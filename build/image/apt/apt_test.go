package apt

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNew: the private configuration names the foreign architecture, keeps
// every apt directory under the cache and lists the suite, its -updates
// and, only when a security mirror is given, its -security.
func TestNew(t *testing.T) {
	if _, err := os.Stat("/usr/share/keyrings/debian-archive-keyring.gpg"); err != nil {
		t.Fatal("the Debian archive keyring is missing: install Debian's debian-archive-keyring (build/install-deps.sh image)")
	}
	cache := t.TempDir()
	a, err := New(cache, "http://m/debian", "http://m/debian-security", "trixie", "riscv64", t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(cache, "apt", "trixie-riscv64"); a.Dir() != want {
		t.Errorf("Dir() = %s, want %s", a.Dir(), want)
	}
	conf, _ := os.ReadFile(filepath.Join(a.Dir(), "apt.conf"))
	for _, want := range []string{`APT::Architecture "riscv64";`, `Dir::State "` + a.Dir() + `";`, `Dir::Etc::SourceList "` + a.Dir() + `/etc/sources.list";`} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("apt.conf lacks %s:\n%s", want, conf)
		}
	}
	src, _ := os.ReadFile(filepath.Join(a.Dir(), "etc/sources.list"))
	for _, want := range []string{" http://m/debian trixie main non-free-firmware\n", " http://m/debian trixie-updates main non-free-firmware\n", " http://m/debian-security trixie-security main non-free-firmware\n"} {
		if !strings.Contains(string(src), want) {
			t.Errorf("sources.list lacks %q:\n%s", want, src)
		}
	}
	a, err = New(cache, "http://m/debian", "", "trixie", "riscv64", t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if src, _ := os.ReadFile(filepath.Join(a.Dir(), "etc/sources.list")); strings.Contains(string(src), "security") {
		t.Errorf("no security mirror, yet:\n%s", src)
	}
}
