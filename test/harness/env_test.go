package harness

import (
	"fmt"
	"testing"
	"time"
)

// fatalTB records Fatalf instead of ending the test.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Fatalf(format string, args ...any) { f.msg = fmt.Sprintf(format, args...) }

func TestEnvDuration(t *testing.T) {
	for _, tt := range []struct {
		val   string
		want  time.Duration
		fatal string
	}{
		{"", time.Minute, ""},
		{"90s", 90 * time.Second, ""},
		{"90", time.Minute, `OUTPOST_TEST_KNOB="90": `},
	} {
		t.Setenv("OUTPOST_TEST_KNOB", tt.val)
		tb := &fatalTB{TB: t}
		got := EnvDuration(tb, "OUTPOST_TEST_KNOB", time.Minute)
		if tt.fatal != "" {
			if len(tb.msg) < len(tt.fatal) || tb.msg[:len(tt.fatal)] != tt.fatal {
				t.Errorf("%q: failed with %q, want %q…", tt.val, tb.msg, tt.fatal)
			}
			continue
		}
		if got != tt.want || tb.msg != "" {
			t.Errorf("%q: %s (failed %q), want %s", tt.val, got, tb.msg, tt.want)
		}
	}
}
