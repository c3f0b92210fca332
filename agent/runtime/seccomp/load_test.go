package seccomp

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestCheckName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"audit.json", true},
		{"profiles/audit.json", true},
		{"a..b.json", true},
		{"", false},
		{"/etc/passwd", false},
		{"../x.json", false},
		{"profiles/../../x.json", false},
		{"profiles/..", false},
		{"./x.json", false},
		{"a//b.json", false},
		{"a/", false},
		{"a\x00b", false},
		{strings.Repeat("a", 4097), false},
	} {
		if err := CheckName(tc.name); (err == nil) != tc.ok {
			t.Errorf("CheckName(%q) = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

const good = `{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],"syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW"},{"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]}]}`

func TestLoad(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "seccomp")
	outside := filepath.Join(root, "outside.json")
	write := func(path, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(dir, "good.json"), good)
	write(filepath.Join(dir, "sub", "good.json"), good)
	write(outside, good)
	for name, target := range map[string]string{
		"abs-link.json":      outside,
		"rel-link.json":      "../outside.json",
		"sub/up-link.json":   "../../outside.json",
		"inside-link.json":   "sub/good.json",
		"proc-link.json":     "/proc/self/root" + outside,
		"dangling-link.json": "nothing.json",
	} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.json"), 0o644); err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(dir, "big.json"), `{"defaultAction":"SCMP_ACT_ALLOW"}`+strings.Repeat(" ", MaxProfileSize))
	for name, body := range map[string]string{
		"unknown-field.json": `{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","comment":"x"}]}`,
		"trailing.json":      good + `{}`,
		"listener.json":      `{"defaultAction":"SCMP_ACT_ERRNO","listenerPath":"/run/agent.sock"}`,
		"bad-action.json":    `{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_MAYBE"}]}`,
		"bad-default.json":   `{"defaultAction":"allow"}`,
		"bad-arch.json":      `{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_Z80"]}`,
		"bad-name.json":      `{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read; rm -rf /"],"action":"SCMP_ACT_ALLOW"}]}`,
		"bad-op.json":        `{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"LIKE"}]}]}`,
		"bad-index.json":     `{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}`,
		"no-names.json":      `{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":[],"action":"SCMP_ACT_ALLOW"}]}`,
		"docker.json":        `{"defaultAction":"SCMP_ACT_ERRNO","archMap":[]}`,
		"not-json.json":      `defaultAction: SCMP_ACT_ERRNO`,
	} {
		write(filepath.Join(dir, name), body)
	}

	for _, tc := range []struct {
		name, errHas string
	}{
		{"good.json", ""},
		{"sub/good.json", ""},
		{"inside-link.json", ""},
		{"missing.json", "not found"},
		{"dangling-link.json", "not found"},
		{"abs-link.json", "out of the profile directory"},
		{"rel-link.json", "out of the profile directory"},
		{"sub/up-link.json", "out of the profile directory"},
		{"proc-link.json", "out of the profile directory"},
		{"../outside.json", ".."},
		{outside, "absolute"},
		{"sub", "not a regular file"},
		{"fifo.json", "not a regular file"},
		{"big.json", "larger than"},
		{"unknown-field.json", "unknown field"},
		{"trailing.json", "more than one"},
		{"listener.json", "listenerPath"},
		{"bad-action.json", "SCMP_ACT_MAYBE"},
		{"bad-default.json", "defaultAction"},
		{"bad-arch.json", "SCMP_ARCH_Z80"},
		{"bad-name.json", "not a system call name"},
		{"bad-op.json", "op"},
		{"bad-index.json", "index 6"},
		{"no-names.json", "no names"},
		{"docker.json", "unknown field"},
		{"not-json.json", "not an OCI seccomp profile"},
	} {
		p, err := Load(dir, tc.name)
		switch {
		case tc.errHas == "" && err != nil:
			t.Errorf("Load(%q): %v", tc.name, err)
		case tc.errHas == "" && (p.DefaultAction != "SCMP_ACT_ERRNO" || len(p.Syscalls) != 2 || p.Syscalls[1].Args[0].Value != 8):
			t.Errorf("Load(%q) = %+v", tc.name, p)
		case tc.errHas != "" && (err == nil || !strings.Contains(err.Error(), tc.errHas)):
			t.Errorf("Load(%q) = %v; want an error with %q", tc.name, err, tc.errHas)
		}
	}
	if _, err := Load(filepath.Join(root, "nodir"), "good.json"); err == nil || !strings.Contains(err.Error(), "profile directory") {
		t.Errorf("Load from a missing directory: %v", err)
	}
}
