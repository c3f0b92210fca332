package seccomp

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	ctrdseccomp "github.com/containerd/containerd/v2/contrib/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// capSets are bounding sets the profile depends on: none, the default
// set of an unprivileged container, each capability that unlocks system
// calls alone, and all of them.
func capSets() [][]string {
	sets := [][]string{nil, {"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
		"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"}}
	var all []string
	for _, cs := range capSyscalls {
		sets = append(sets, []string{cs.cap})
		all = append(all, cs.cap)
	}
	return append(sets, all, append([]string{"CAP_SYS_ADMIN", "CAP_NET_ADMIN"}, all...))
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The profile on this machine is containerd's, called directly.
func TestDefaultIsContainerds(t *testing.T) {
	for _, caps := range capSets() {
		want := ctrdseccomp.DefaultProfile(&specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: caps}}})
		got := Default(caps)
		if w, g := mustJSON(t, want), mustJSON(t, got); w != g {
			t.Errorf("caps %v on %s:\ncontainerd %s\nagent      %s", caps, runtime.GOARCH, w, g)
		}
	}
	// The comparison is about real content: unshare is allowed only with
	// CAP_SYS_ADMIN.
	if strings.Contains(mustJSON(t, Default(nil)), `"unshare"`) || !strings.Contains(mustJSON(t, Default([]string{"CAP_SYS_ADMIN"})), `"unshare"`) {
		t.Error("unshare must be allowed with CAP_SYS_ADMIN only")
	}
	if n := len(Default(nil).Syscalls[0].Names); n < 300 {
		t.Errorf("the allow-list has %d names; containerd's has over 300", n)
	}
}

// On every architecture the agent ships, the profile is what containerd's
// DefaultProfile gives there. containerd picks the architecture with
// runtime.GOARCH, a constant, so its source file is compiled for this
// machine with runtime.GOARCH replaced by a variable the program sets to
// each architecture in turn (an overlay: nothing is written to the
// module). The kernel check is left as it is: both sides read this
// machine's kernel.
func TestDefaultIsContainerdsOnEveryArch(t *testing.T) {
	if testing.Short() {
		t.Skip("builds containerd's profile code with go run")
	}
	dir, err := exec.Command("go", "list", "-f", "{{.Dir}}", "github.com/containerd/containerd/v2/contrib/seccomp").Output()
	if err != nil {
		t.Fatalf("go list containerd's seccomp package: %v", err)
	}
	src, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(dir)), "seccomp_default.go"))
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(src, []byte("runtime.GOARCH")); n < 2 {
		t.Fatalf("containerd's seccomp_default.go names runtime.GOARCH %d times; this test's rewrite needs updating", n)
	}
	src = bytes.Replace(src, []byte("package seccomp"), []byte("package main"), 1)
	src = bytes.ReplaceAll(src, []byte("runtime.GOARCH"), []byte("goarch"))
	src = append(src, "\nvar goarch = runtime.GOARCH\n"...)

	arches := []string{"amd64", "arm64", "arm", "riscv64"}
	var sets []string
	for _, caps := range capSets() {
		sets = append(sets, strings.Join(caps, ","))
	}
	main := fmt.Sprintf(`package main

import (
	"encoding/json"
	"os"
	"strings"

	"github.com/opencontainers/runtime-spec/specs-go"
)

func main() {
	enc := json.NewEncoder(os.Stdout)
	for _, a := range %#v {
		for _, set := range %#v {
			goarch = a
			var caps []string
			if set != "" {
				caps = strings.Split(set, ",")
			}
			if err := enc.Encode(DefaultProfile(&specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: caps}}})); err != nil {
				panic(err)
			}
		}
	}
}
`, arches, sets)
	tmp := t.TempDir()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	pkg := filepath.Join(wd, "internal", "ctrdprofile") // exists only in the overlay
	overlay := map[string]map[string]string{"Replace": {
		filepath.Join(pkg, "profile.go"): filepath.Join(tmp, "profile.go"),
		filepath.Join(pkg, "main.go"):    filepath.Join(tmp, "main.go"),
	}}
	for name, b := range map[string][]byte{"profile.go": src, "main.go": []byte(main), "overlay.json": []byte(mustJSON(t, overlay))} {
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("go", "run", "-overlay", filepath.Join(tmp, "overlay.json"), "./internal/ctrdprofile")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("running containerd's DefaultProfile: %v\n%s", err, stderr.String())
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	compared := 0
	for _, a := range arches {
		for _, caps := range capSets() {
			if !sc.Scan() {
				t.Fatalf("containerd's program stopped after %d profiles", compared)
			}
			want := strings.TrimSpace(sc.Text())
			if got := mustJSON(t, profile(a, caps, ptraceKernel())); got != want {
				t.Errorf("%s, caps %v:\ncontainerd %s\nagent      %s", a, caps, want, got)
			}
			compared++
		}
	}
	// The architectures do differ: the comparison sees them.
	if mustJSON(t, profile("arm64", nil, true)) == mustJSON(t, profile("riscv64", nil, true)) {
		t.Error("arm64 and riscv64 profiles are the same")
	}
	t.Logf("%d profiles equal to containerd %s's", compared, ContainerdVersion)
}
