// Package apt fetches Debian packages of a foreign architecture into a
// cache: apt-get and apt-cache run against a private configuration and
// state under the cache directory, so nothing changes on this machine (no
// root, no "dpkg --add-architecture") and nothing from the packages is
// installed or run. It resolves names to versions (Depends and
// Pre-Depends), finds a meta package's kernel, and downloads .debs once.
package apt

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Archive is one Debian suite and architecture with its private apt state.
type Archive struct {
	dir    string // state, lists and downloaded .debs, per suite and arch
	arch   string
	config string
	log    func(format string, args ...any)
}

// New writes the private apt configuration for suite and arch (Debian's
// names: bookworm, arm64) under cache/apt/SUITE-ARCH, with the suite's
// -updates and, unless securityMirror is empty, -security lists; main and
// non-free-firmware. log receives warnings and what is downloaded.
func New(cache, mirror, securityMirror, suite, arch string, log func(format string, args ...any)) (*Archive, error) {
	dir := filepath.Join(cache, "apt", suite+"-"+arch)
	for _, d := range []string{"lists/partial", "archives/partial", "etc/sources.list.d", "etc/preferences.d", "debs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	keyring := "/usr/share/keyrings/debian-archive-keyring.gpg"
	if _, err := os.Stat(keyring); err != nil {
		return nil, fmt.Errorf("%s is missing: install Debian's debian-archive-keyring package", keyring)
	}
	comps := "main non-free-firmware"
	sources := fmt.Sprintf("deb [signed-by=%[1]s] %[2]s %[3]s %[4]s\ndeb [signed-by=%[1]s] %[2]s %[3]s-updates %[4]s\n", keyring, mirror, suite, comps)
	if securityMirror != "" {
		sources += fmt.Sprintf("deb [signed-by=%s] %s %s-security %s\n", keyring, securityMirror, suite, comps)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc/sources.list"), []byte(sources), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "status"), nil, 0o644); err != nil {
		return nil, err
	}
	user := "root"
	if os.Getuid() != 0 {
		user = "" // apt only drops privileges when it has them
	}
	conf := fmt.Sprintf(`APT::Architecture "%[2]s";
APT::Architectures { "%[2]s"; };
APT::Install-Recommends "false";
Dir::State "%[1]s";
Dir::State::lists "%[1]s/lists";
Dir::State::status "%[1]s/status";
Dir::Cache "%[1]s";
Dir::Cache::archives "%[1]s/archives";
Dir::Etc::SourceList "%[1]s/etc/sources.list";
Dir::Etc::SourceParts "%[1]s/etc/sources.list.d";
Dir::Etc::Preferences "%[1]s/etc/preferences";
Dir::Etc::PreferencesParts "%[1]s/etc/preferences.d";
Acquire::Languages "none";
`, dir, arch)
	if user != "" {
		conf += fmt.Sprintf("APT::Sandbox::User %q;\n", user)
	}
	if err := os.WriteFile(filepath.Join(dir, "apt.conf"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	return &Archive{dir: dir, arch: arch, config: filepath.Join(dir, "apt.conf"), log: log}, nil
}

// Dir is where the state, lists and downloaded .debs are kept.
func (a *Archive) Dir() string { return a.dir }

func (a *Archive) cmd(dir string, name string, args ...string) ([]byte, error) {
	if _, err := exec.LookPath(name); err != nil {
		return nil, fmt.Errorf("%s is missing: install Debian's apt package", name)
	}
	c := exec.Command(name, args...)
	c.Dir = dir
	c.Env = append(os.Environ(), "APT_CONFIG="+a.config, "LC_ALL=C")
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// Update refreshes the package lists (about 13 MB for arm64). A suite's
// -updates or -security list that fails to fetch (a mirror caught mid-sync
// serves a Packages file that does not match its Release) is a warning:
// the release's own packages still resolve. Any other failure is an error.
func (a *Archive) Update() error {
	_, err := a.cmd(a.dir, "apt-get", "-q", "update")
	if err == nil {
		return nil
	}
	var failed []string
	for _, l := range strings.Split(err.Error(), "\n") {
		if !strings.HasPrefix(l, "E: Failed to fetch ") {
			continue
		}
		f := strings.Fields(l)
		if len(f) < 5 || !(strings.Contains(f[4], "-updates/") || strings.Contains(f[4], "-security/")) {
			return err
		}
		failed = append(failed, f[4])
	}
	if len(failed) == 0 {
		return err
	}
	for _, u := range failed {
		a.log("warning: %s did not fetch (mirror mid-sync?): using the release's packages without it", u)
	}
	return nil
}

// Resolve returns the packages and versions that names need, following
// Depends and Pre-Depends; noDeps names are taken alone.
func (a *Archive) Resolve(names, noDeps []string) (map[string]string, error) {
	set := map[string]bool{}
	if len(names) > 0 {
		out, err := a.cmd(a.dir, "apt-cache", append([]string{"depends", "--recurse", "--no-recommends", "--no-suggests",
			"--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances"}, names...)...)
		if err != nil {
			return nil, err
		}
		for _, l := range strings.Split(string(out), "\n") {
			if l != "" && !strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "<") {
				set[strings.TrimSuffix(l, ":"+a.arch)] = true
			}
		}
	}
	for _, n := range noDeps {
		set[n] = true
	}
	pkgs := map[string]string{}
	for n := range set {
		out, err := a.cmd(a.dir, "apt-cache", "policy", n)
		if err != nil {
			return nil, err
		}
		for _, l := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Candidate: "); ok && v != "(none)" {
				pkgs[n] = v
			}
		}
		if pkgs[n] == "" {
			return nil, fmt.Errorf("Debian has no %s package %q in the configured suites", a.arch, n)
		}
	}
	return pkgs, nil
}

// Download fetches each package=version into the cache unless it is
// there already, and returns the .deb paths, sorted.
func (a *Archive) Download(pkgs map[string]string) ([]string, error) {
	debs := filepath.Join(a.dir, "debs")
	var want []string
	var paths []string
	for n, v := range pkgs {
		matches, _ := filepath.Glob(filepath.Join(debs, n+"_*"))
		found := ""
		for _, m := range matches {
			if out, err := exec.Command("dpkg-deb", "--field", m, "Version").Output(); err == nil && strings.TrimSpace(string(out)) == v {
				found = m
			}
		}
		if found != "" {
			paths = append(paths, found)
		} else {
			want = append(want, n+"="+v)
		}
	}
	if len(want) > 0 {
		sort.Strings(want)
		a.log("downloading %d Debian %s packages: %s", len(want), a.arch, strings.Join(want, " "))
		if _, err := a.cmd(debs, "apt-get", append([]string{"-q", "download"}, want...)...); err != nil {
			return nil, err
		}
		return a.Download(pkgs)
	}
	sort.Strings(paths)
	return paths, nil
}

// DependsOn returns the package meta depends on whose name starts with
// prefix: linux-image-arm64 → linux-image-6.1.0-50-arm64.
func (a *Archive) DependsOn(meta, prefix string) (string, error) {
	out, err := a.cmd(a.dir, "apt-cache", "depends", meta)
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], prefix) {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("%s depends on no %s* package:\n%s", meta, prefix, out)
}
