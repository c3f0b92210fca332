package agentdeb

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"outpost.dev/build/cross"
)

// TestAgentPackage builds the amd64 package, reads it back with Debian's
// tools, unpacks it into a scratch root and runs what it installed.
func TestAgentPackage(t *testing.T) {
	for _, tool := range []string{"dpkg-deb", "systemd-analyze"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: install Debian's dpkg and systemd packages (build/install-deps.sh)", tool)
		}
	}
	root, err := cross.ModuleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tg, _ := cross.Lookup("amd64")
	bin := filepath.Join(dir, "outpost-agent")
	if err := cross.Build(context.Background(), tg, bin, cross.Options{ModuleRoot: root, Version: "v9.8.7-test+abc"}); err != nil {
		t.Fatal(err)
	}
	agent, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	loggerBin := filepath.Join(dir, "outpost-logger")
	if err := cross.Build(context.Background(), tg, loggerBin, cross.Options{ModuleRoot: root, Version: "v9.8.7-test+abc", Package: "./agent/cmd/outpost-logger"}); err != nil {
		t.Fatal(err)
	}
	logger, err := os.ReadFile(loggerBin)
	if err != nil {
		t.Fatal(err)
	}
	bootBin := filepath.Join(dir, "outpost-boot")
	if err := cross.Build(context.Background(), tg, bootBin, cross.Options{ModuleRoot: root, Version: "v9.8.7-test+abc", Package: "./agent/cmd/outpost-boot"}); err != nil {
		t.Fatal(err)
	}
	boot, err := os.ReadFile(bootBin)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Package(agent, logger, boot, "v9.8.7-test+abc", "amd64", time.Unix(1700000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	debPath := filepath.Join(dir, "outpost-agent.deb")
	if err := WriteFile(debPath, p); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), "TZ=UTC")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.String())
		}
		if stderr.Len() > 0 {
			t.Errorf("%s %s complained:\n%s", name, strings.Join(args, " "), stderr.String())
		}
		return string(out)
	}

	for field, want := range map[string]string{
		"Package": "outpost-agent", "Version": "9.8.7~test+abc", "Architecture": "amd64",
		"Section": "admin", "Recommends": "containerd, runc, containernetworking-plugins, iptables",
	} {
		if got := strings.TrimSpace(run("dpkg-deb", "--field", debPath, field)); got != want {
			t.Errorf("control field %s = %q, want %q", field, got, want)
		}
	}
	info := run("dpkg-deb", "--info", debPath)
	for _, want := range []string{" conffiles ", " postinst ", " prerm ", " postrm ", "outpost-agent join --server"} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb --info lacks %q:\n%s", want, info)
		}
	}
	var listed []string
	for _, l := range strings.Split(strings.TrimSpace(run("dpkg-deb", "--contents", debPath)), "\n") {
		f := strings.Fields(l)
		if !strings.HasPrefix(f[0], "d") {
			listed = append(listed, f[0]+" "+f[1]+" "+f[len(f)-1])
		}
	}
	wantFiles := []string{
		"-rw-r--r-- root/root ./etc/outpost/agent.yaml",
		"-rw-r--r-- root/root ./lib/systemd/system/outpost-agent.service",
		"-rwxr-xr-x root/root ./usr/bin/outpost-agent",
		"-rwxr-xr-x root/root ./usr/bin/outpost-boot",
		"-rwxr-xr-x root/root ./usr/bin/outpost-logger",
	}
	if strings.Join(listed, "\n") != strings.Join(wantFiles, "\n") {
		t.Errorf("files:\n%s\nwant:\n%s", strings.Join(listed, "\n"), strings.Join(wantFiles, "\n"))
	}
	ctrl := filepath.Join(dir, "control")
	run("dpkg-deb", "--control", debPath, ctrl)
	if b, _ := os.ReadFile(filepath.Join(ctrl, "conffiles")); string(b) != "/etc/outpost/agent.yaml\n" {
		t.Errorf("conffiles = %q", b)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		run("sh", "-n", filepath.Join(ctrl, s))
	}
	// Script lines are tab-indented; the join instructions it prints are not.
	postinst, _ := os.ReadFile(filepath.Join(ctrl, "postinst"))
	for _, l := range strings.Split(string(postinst), "\n") {
		if strings.HasPrefix(l, "\t") && (strings.Contains(l, "systemctl start") || strings.Contains(l, "--now")) {
			t.Errorf("postinst starts the agent, which must wait for a join: %q", l)
		}
	}
	if !bytes.Contains(postinst, []byte("\n  outpost-agent join --server")) {
		t.Error("postinst does not explain outpost-agent join")
	}

	// Install into a scratch root and run what was installed.
	sysroot := filepath.Join(dir, "root")
	run("dpkg-deb", "-x", debPath, sysroot)
	installed := filepath.Join(sysroot, "usr/bin/outpost-agent")
	if got := run(installed, "version"); !strings.HasPrefix(got, "outpost-agent v9.8.7-test+abc (go") {
		t.Errorf("installed agent's version: %q", got)
	}
	// The default config parses: run gets past it to the join check.
	cmd := exec.Command(installed, "run", "--config", filepath.Join(sysroot, "etc/outpost/agent.yaml"), "--state-dir", filepath.Join(dir, "state"))
	out, err := cmd.CombinedOutput()
	if want := "outpost-agent: not joined: run \"outpost-agent join --server URL --token TOKEN\" first"; err == nil || !strings.HasPrefix(string(out), want) || strings.Count(string(out), "\n") != 1 {
		t.Errorf("run with the default config and no join: %v, %q; want one line starting %q", err, out, want)
	}

	// systemd reads the unit without a complaint (pointing it at the
	// unpacked binary, which is not installed on this machine).
	unit, err := os.ReadFile(filepath.Join(sysroot, "lib/systemd/system/outpost-agent.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ExecStart=/usr/bin/outpost-boot run", "Restart=on-failure", "MemoryAccounting=yes", "MemoryMax=", "StateDirectory=outpost", "ConfigurationDirectory=outpost", "ConditionPathExists=/var/lib/outpost/agent.db"} {
		if !bytes.Contains(unit, []byte("\n"+want)) {
			t.Errorf("unit lacks %s", want)
		}
	}
	check := filepath.Join(dir, "unit", "outpost-agent.service")
	os.MkdirAll(filepath.Dir(check), 0o755)
	if err := os.WriteFile(check, bytes.ReplaceAll(unit, []byte("/usr/bin/outpost-boot"), []byte(filepath.Join(sysroot, "usr/bin/outpost-boot"))), 0o644); err != nil {
		t.Fatal(err)
	}
	run("systemd-analyze", "verify", check)
}

func TestVersionsAndArchitectures(t *testing.T) {
	for _, tg := range cross.Targets {
		p, err := Package([]byte("x"), []byte("y"), []byte("z"), "v1.0.0", tg.Deb, time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		if p.Architecture != tg.Deb || p.Version != "1.0.0" {
			t.Errorf("%s: %s %s", tg.Name(), p.Architecture, p.Version)
		}
	}
}
