package containerd

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestLogFIFOPaths(t *testing.T) {
	r := &Runtime{cfg: Config{LogFIFODir: "/state/logfifo"}}
	for _, tc := range []struct {
		id, out string // out empty: refused
	}{
		{"app-1a2b-0", "/state/logfifo/app-1a2b-0.out"},
		{"A.b_c-9", "/state/logfifo/A.b_c-9.out"},
		{strings.Repeat("a", 76), "/state/logfifo/" + strings.Repeat("a", 76) + ".out"},
		{strings.Repeat("a", 77), ""},
		{"", ""},
		{".", ""},
		{"..", ""},
		{".hidden", ""},
		{"../x", ""},
		{"a/b", ""},
		{"a\x00b", ""},
		{"a b", ""},
		{"ä", ""},
	} {
		out, errp, err := r.logFIFOPaths(tc.id)
		if tc.out == "" {
			if err == nil {
				t.Errorf("%q: took %s", tc.id, out)
			}
			continue
		}
		if err != nil || out != tc.out || errp != strings.TrimSuffix(tc.out, ".out")+".err" || filepath.Dir(out) != "/state/logfifo" {
			t.Errorf("%q: %q %q %v, want %q", tc.id, out, errp, err, tc.out)
		}
	}
	if _, _, err := (&Runtime{cfg: Config{LogFIFODir: "logfifo"}}).logFIFOPaths("app"); err == nil {
		t.Error("a relative LogFIFODir was taken")
	}
}

func TestLogRotation(t *testing.T) {
	for _, tc := range []struct {
		args map[string]string
		want string // empty: refused
	}{
		{nil, "max-files=3&max-size=4194304"},
		{map[string]string{"max-size": "4096"}, "max-files=3&max-size=4096"},
		{map[string]string{"max-size": "4096", "max-files": "2"}, "max-files=2&max-size=4096"},
		{map[string]string{"max-size": "-1"}, ""},
		{map[string]string{"max-size": "4k"}, ""},
		{map[string]string{"max-files": "x"}, ""},
		{map[string]string{"logger": "/tmp/x"}, ""},
		{map[string]string{"other": "1"}, ""},
	} {
		got, err := logRotation(Spec{ID: "c", LogArgs: tc.args})
		if tc.want == "" {
			if err == nil {
				t.Errorf("%v: took %q", tc.args, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%v: %q %v, want %q", tc.args, got, err, tc.want)
		}
	}
}
